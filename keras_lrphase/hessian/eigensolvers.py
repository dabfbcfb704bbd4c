"""Largest-eigenvalue solvers for a symmetric operator given as a mat-vec.

Both solvers work on flat float64 NumPy vectors on the host; the operator
(`matvec`) is where the model's Hessian-vector products run. The vectors are
the size of the restricted layer (or of the model for `layer="all"`), so the
host-side linear algebra is negligible next to one product.
"""

import dataclasses

import numpy as np
import scipy.linalg


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
    A product that is not finite (an overflowing batch) stops it with a NaN
    estimate.
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
        if not np.all(np.isfinite(w)):
            return _not_finite(v, iteration)
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
    copies plain Lanczos produces in floating point. A product that is not
    finite (an overflowing batch) stops it with a NaN estimate.

    References:
        Golub and Van Loan, "Matrix Computations", 4th ed., Section 10.1.
    """
    products = [0]

    def finite_matvec(vector):
        w = np.asarray(matvec(vector), dtype=np.float64)
        products[0] += 1
        if not np.all(np.isfinite(w)):
            raise _NotFinite(vector)
        return w

    def stop(alphas, betas, beta):
        values, vectors = tridiagonal_eigh(alphas, betas)
        theta, residual = values[-1], abs(beta * vectors[-1, -1])
        scale = max(abs(theta), np.finfo(np.float64).tiny)
        return beta <= 1e-12 * scale or residual <= tolerance * scale

    try:
        run = lanczos_tridiagonal(
            finite_matvec, initial_vector, max_iterations, stop=stop)
    except _NotFinite as error:
        return _not_finite(error.args[0], products[0])
    values, vectors = tridiagonal_eigh(run.alphas, run.betas)
    return EigenSolution(
        float(values[-1]), _unit(run.basis.T @ vectors[:, -1]),
        run.steps, run.converged,
    )


@dataclasses.dataclass(frozen=True)
class LanczosRun:
    """A Lanczos tridiagonalisation Q H Q^T = T of a symmetric operator H.

    Attributes:
        alphas: Float64 array (m,). The diagonal of T.
        betas: Float64 array (m - 1,). Its off-diagonal; a zero marks a
            restart after an invariant subspace was found.
        residual: Float. The norm beta_m of the next, unnormalised Lanczos
            vector: the Ritz pair (theta_i, Q^T s_i) has residual
            ||H Q^T s_i - theta_i Q^T s_i|| = |beta_m s_i[m - 1]|.
        basis: Float64 array (m, n) of orthonormal rows Q, or None when
            the basis was not kept.
        converged: Bool. Whether `stop` said so, or the run found the
            Krylov space invariant (then T is exact).
    """

    alphas: np.ndarray
    betas: np.ndarray
    residual: float
    basis: np.ndarray
    converged: bool

    @property
    def steps(self):
        """Products of the operator the run took (m)."""
        return len(self.alphas)


def lanczos_tridiagonal(
    matvec, initial_vector, max_steps, stop=None, reorthogonalize=True,
    restart=None,
):
    """Runs the Lanczos recurrence from `initial_vector` for a symmetric `matvec`.

    The building block of the eigensolvers and of stochastic Lanczos
    quadrature. With `reorthogonalize=True` every new vector is
    orthogonalised (twice, classical Gram-Schmidt) against the whole basis,
    which keeps it orthonormal in floating point (no spurious copies of
    converged Ritz values) at the cost of storing m vectors of the
    operator's size. With `reorthogonalize=False` only the three-term
    recurrence runs and only two vectors are kept.

    Args:
        matvec: Callable mapping a flat float64 vector to H times it.
        initial_vector: Flat array, finite and non-zero.
        max_steps: Int >= 1. Most products (at most the dimension n).
        stop: Optional callable `stop(alphas, betas, beta) -> bool` called
            after each step with the lists so far and the new residual
            norm; True ends the run as converged.
        reorthogonalize: Bool. Full reorthogonalisation (and the basis
            kept). Defaults to `True`.
        restart: Optional callable returning a new random vector. When the
            Krylov space becomes invariant before `max_steps` (an exactly
            repeated eigenvalue, or a start with no component along some
            eigenvectors), the run continues from it, orthogonalised
            against the basis (needs `reorthogonalize=True`); without it
            the run ends there, converged.

    Returns:
        A `LanczosRun`.

    References:
        Golub and Van Loan, "Matrix Computations", 4th ed., Sections
        10.1 and 10.3.
    """
    q = _unit(initial_vector)
    size = q.size
    max_steps = min(int(max_steps), size)
    basis = np.empty((max_steps, size)) if reorthogonalize else None
    alphas, betas = [], []
    previous, beta_previous, scale = None, 0.0, 0.0
    converged = False
    for step in range(max_steps):
        if basis is not None:
            basis[step] = q
        w = np.asarray(matvec(q), dtype=np.float64)
        alpha = float(np.dot(q, w))
        alphas.append(alpha)
        w = w - alpha * q
        if previous is not None:
            w = w - beta_previous * previous
        if basis is not None:
            done = basis[: step + 1]
            for _ in range(2):
                w = w - done.T @ (done @ w)
        beta = float(np.linalg.norm(w))
        scale = max(scale, abs(alpha), beta)
        invariant = beta <= 1e-12 * max(scale, np.finfo(np.float64).tiny)
        restarts = invariant and restart is not None and step + 1 < max_steps
        # After an invariant subspace the wanted pairs may lie outside it
        # (an exactly repeated eigenvalue): restart before judging them.
        if not restarts and stop is not None and stop(alphas, betas, beta):
            converged = True
            break
        if step + 1 == max_steps:
            converged = invariant
            break
        if invariant:
            if restart is None:
                converged = True
                break
            if basis is None:
                raise ValueError("A restart needs `reorthogonalize=True`.")
            w = np.asarray(restart(), dtype=np.float64)
            done = basis[: step + 1]
            for _ in range(2):
                w = w - done.T @ (done @ w)
            beta_previous = 0.0
            betas.append(0.0)
            previous = None
            q = _unit(w)
            continue
        betas.append(beta)
        previous, beta_previous = q, beta
        q = w / beta
    steps = len(alphas)
    return LanczosRun(
        alphas=np.asarray(alphas),
        betas=np.asarray(betas[: steps - 1]),
        residual=beta,
        basis=None if basis is None else basis[:steps],
        converged=converged,
    )


WHICH = ("largest", "smallest", "magnitude")


@dataclasses.dataclass(frozen=True)
class EigenPairs:
    """What `lanczos_eigenpairs` found.

    Attributes:
        values: Float64 array (k,): the eigenvalue estimates, largest first
            (smallest first for `which="smallest"`, largest magnitude first
            for `"magnitude"`).
        vectors: Float64 array (k, n): their unit-norm Ritz vectors.
        residuals: Float64 array (k,): ||H y_i - theta_i y_i|| of each pair,
            a bound on the distance from `values[i]` to an eigenvalue of H.
        iterations: Int. Products of H run.
        converged: Bool. Whether every residual met the tolerance (or the
            Krylov space was exhausted, where the pairs are exact).
    """

    values: np.ndarray
    vectors: np.ndarray
    residuals: np.ndarray
    iterations: int
    converged: bool


def lanczos_eigenpairs(
    matvec, initial_vector, k, which="largest", max_iterations=100,
    tolerance=1e-3, rng=None,
):
    """The k extreme eigenpairs of a symmetric operator, by Lanczos.

    Lanczos with full reorthogonalisation (`lanczos_tridiagonal`), stopped
    when each of the k wanted Ritz pairs has a residual
    |beta_m s_i[m - 1]| <= `tolerance` * |theta_i|, or after
    `max_iterations` products. When the Krylov space of the start becomes
    invariant, the run continues from a new random vector orthogonal to
    it. An eigenvalue repeated exactly (a symmetry of the model: the
    Hessian of a linear output layer under mean squared error repeats its
    block once per unit) shows once in a Krylov space until the space is
    exhausted or rounding brings in the other copies, as in every
    single-vector Krylov method (ARPACK's `eigsh` included): with such a
    symmetry, ask for a tight `tolerance` (1e-10 finds them in tests) or
    compare with a second run from another start.

    Args:
        matvec: Callable: flat float64 vector -> H times it.
        initial_vector: Flat array of the operator's size, non-zero.
        k: Int in [1, n]. Number of eigenpairs.
        which: `"largest"` (algebraic), `"smallest"` or `"magnitude"`.
        max_iterations: Int >= k. Most products.
        tolerance: Float > 0. Relative residual of every wanted pair.
        rng: `numpy.random.Generator` of the restart vectors.

    Returns:
        An `EigenPairs`.

    References:
        Golub and Van Loan, "Matrix Computations", 4th ed., Sections
        10.1.4-10.1.5 (Ritz pairs, error bounds) and 10.3.1 (complete
        reorthogonalisation).
    """
    size = np.size(initial_vector)
    rng = rng if rng is not None else np.random.default_rng()

    def wanted(values):
        if which == "largest":
            return np.argsort(values)[::-1][:k]
        if which == "smallest":
            return np.argsort(values)[:k]
        return np.argsort(np.abs(values))[::-1][:k]

    def stop(alphas, betas, beta):
        if len(alphas) < k:
            return False
        values, vectors = tridiagonal_eigh(alphas, betas)
        chosen = wanted(values)
        residuals = np.abs(beta * vectors[-1, chosen])
        scale = np.maximum(np.abs(values[chosen]), np.finfo(np.float64).tiny)
        return bool(np.all(residuals <= tolerance * scale))

    run = lanczos_tridiagonal(
        matvec, initial_vector, max(max_iterations, k), stop=stop,
        restart=lambda: rng.standard_normal(size),
    )
    values, vectors = tridiagonal_eigh(run.alphas, run.betas)
    chosen = wanted(values)
    ritz = run.basis.T @ vectors[:, chosen]
    ritz /= np.linalg.norm(ritz, axis=0, keepdims=True)
    residuals = np.abs(run.residual * vectors[-1, chosen])
    if run.steps == size:
        residuals = np.zeros_like(residuals)
    return EigenPairs(
        values=values[chosen], vectors=ritz.T, residuals=residuals,
        iterations=run.steps,
        converged=bool(run.converged or run.steps == size),
    )


class _NotFinite(Exception):
    """A Hessian-vector product held an infinity or a NaN."""


def _not_finite(vector, iteration):
    # NaN rather than arithmetic on infinities (NumPy's RuntimeWarning): the
    # callers turn it into their error (top_hessian_eigenvalue) or "no
    # decision this epoch".
    return EigenSolution(float("nan"), vector, iteration, False)


def tridiagonal_eigh(alphas, betas):
    """Eigenvalues (ascending) and eigenvectors of the symmetric tridiagonal
    matrix with diagonal `alphas` and off-diagonal `betas`."""
    alphas = np.asarray(alphas, dtype=np.float64)
    betas = np.asarray(betas, dtype=np.float64)[: max(len(alphas) - 1, 0)]
    return scipy.linalg.eigh_tridiagonal(alphas, betas)


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
