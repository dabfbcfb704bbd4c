"""Largest-eigenvalue solvers for a symmetric operator given as a mat-vec.

Both solvers work on flat float64 NumPy vectors on the host; the operator
(`matvec`) is where the model's Hessian-vector products run. The vectors are
the size of the restricted layer (or of the model for `layer="all"`), so the
host-side linear algebra is negligible next to one product.
"""

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class EigenSolution:
    """What a solver found.

    Attributes:
        value: The estimate of the largest eigenvalue.
        vector: Its unit-norm eigenvector estimate (flat float64 array).
        iterations: Iterations run (one matrix-vector product each).
        converged: Whether the stopping criterion was met before
            `max_iterations` ran out.
    """

    value: float
    vector: np.ndarray
    iterations: int
    converged: bool


def power_iteration(matvec, initial_vector, max_iterations, tolerance):
    """Power iteration with Rayleigh-quotient estimates.

    Iterates v <- Hv / ||Hv|| and estimates the eigenvalue as v^T H v
    (v unit-norm). Stops when the relative change of the estimate between
    two iterations is below `tolerance`, or after `max_iterations` products.
    It finds the eigenvalue of largest magnitude, which is the largest one
    for the positive semi-definite Hessians of convex heads (softmax
    cross-entropy or MSE on the output layer).

    References:
        LeCun, Simard, Pearlmutter (1992), "Automatic learning rate
        maximization by on-line estimation of the Hessian's eigenvectors".
    """
    v = _unit(initial_vector)
    estimate = None
    for iteration in range(1, max_iterations + 1):
        w = matvec(v)
        value = float(np.dot(v, w))
        norm = float(np.linalg.norm(w))
        if norm == 0.0:
            return EigenSolution(0.0, v, iteration, True)
        converged = estimate is not None and abs(value - estimate) <= (
            tolerance * abs(value)
        )
        if converged:
            return EigenSolution(value, v, iteration, True)
        estimate = value
        v = w / norm
    return EigenSolution(estimate, v, max_iterations, False)


def lanczos(matvec, initial_vector, max_iterations, tolerance):
    """Lanczos iteration with full reorthogonalisation.

    Builds a Krylov basis of H and returns the largest Ritz value. Stops when
    the Ritz residual ||H y - theta y|| = |beta_k s_k| (which bounds the
    distance from theta to an eigenvalue of H) is at most
    `tolerance * |theta|`, when the Krylov space becomes invariant (exact
    answer), or after `max_iterations` products. Reorthogonalising against
    every stored basis vector keeps the Ritz values free of the spurious
    copies plain Lanczos produces in floating point.

    References:
        Golub and Van Loan, "Matrix Computations", 4th ed., Section 10.1.
    """
    q = _unit(initial_vector)
    basis = [q]
    alphas, betas = [], []
    theta, ritz = 0.0, np.array([1.0])
    for iteration in range(1, max_iterations + 1):
        w = matvec(q)
        alpha = float(np.dot(q, w))
        alphas.append(alpha)
        w = w - alpha * q
        if betas:
            w = w - betas[-1] * basis[-2]
        stacked = np.stack(basis)
        for _ in range(2):
            w = w - stacked.T @ (stacked @ w)
        beta = float(np.linalg.norm(w))
        values, vectors = _tridiagonal_eigh(alphas, betas)
        theta, ritz = float(values[-1]), vectors[:, -1]
        residual = abs(beta * ritz[-1])
        scale = max(abs(theta), np.finfo(np.float64).tiny)
        if beta <= 1e-12 * scale or residual <= tolerance * scale:
            return EigenSolution(
                theta, _unit(stacked.T @ ritz), iteration, True
            )
        betas.append(beta)
        q = w / beta
        basis.append(q)
    stacked = np.stack(basis[: len(alphas)])
    return EigenSolution(theta, _unit(stacked.T @ ritz), max_iterations, False)


def _tridiagonal_eigh(alphas, betas):
    k = len(alphas)
    matrix = np.diag(alphas)
    if k > 1:
        off = np.asarray(betas[: k - 1])
        matrix += np.diag(off, 1) + np.diag(off, -1)
    return np.linalg.eigh(matrix)


def _unit(vector):
    vector = np.asarray(vector, dtype=np.float64)
    norm = float(np.linalg.norm(vector))
    if norm == 0.0 or not np.isfinite(norm):
        raise ValueError(
            "The initial vector must be finite and non-zero. "
            f"Received a vector of norm {norm}."
        )
    return vector / norm


SOLVERS = {"power": power_iteration, "lanczos": lanczos}
