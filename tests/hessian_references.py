"""Exact Hessians of small heads, in closed form (NumPy, float64)."""

import numpy as np


def augmented(features):
    """Features with a constant 1 appended (the bias input)."""
    return np.concatenate([features, np.ones((features.shape[0], 1))], axis=1)


def mse_dense_hessian(features, units):
    """Hessian of mean((h W + b - y)^2) over samples and units w.r.t. (W, b).

    Each output unit has the same block 2/(N*units) * sum_n a_n a_n^T with
    a_n = [h_n; 1]; the Hessian is block diagonal over units.
    """
    a = augmented(np.asarray(features, np.float64))
    block = 2.0 * a.T @ a / (a.shape[0] * units)
    return np.kron(np.eye(units), block)


def softmax_cross_entropy_dense_hessian(features, probabilities):
    """Hessian of the mean softmax cross-entropy w.r.t. (W, b) of the logits.

    H = mean_n (diag(p_n) - p_n p_n^T) kron (a_n a_n^T), a_n = [h_n; 1]
    (ordered by class, then input: a permutation of Keras' ordering, which
    leaves the eigenvalues unchanged).
    """
    a = augmented(np.asarray(features, np.float64))
    p = np.asarray(probabilities, np.float64)
    n, c = p.shape
    d = a.shape[1]
    hessian = np.zeros((c * d, c * d))
    for i in range(n):
        curvature = np.diag(p[i]) - np.outer(p[i], p[i])
        hessian += np.kron(curvature, np.outer(a[i], a[i]))
    return hessian / n


def softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def top_eigenvalue(hessian):
    return float(np.linalg.eigvalsh(hessian)[-1])


def sigmoid_cross_entropy_dense_hessian(features, probabilities):
    """Hessian of the mean binary cross-entropy of sigmoid(h w + b) w.r.t. (w, b).

    H = mean_n p_n (1 - p_n) a_n a_n^T, a_n = [h_n; 1].
    """
    a = augmented(np.asarray(features, np.float64))
    p = np.asarray(probabilities, np.float64).reshape(-1)
    return (a * (p * (1 - p))[:, None]).T @ a / a.shape[0]
