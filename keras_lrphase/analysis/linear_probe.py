"""A linear classifier on fixed features: L2-regularised softmax regression.

The "fix" transfer of the Learning Stages paper (Section 5, Table 2) uses a
trained network only as a fixed feature extractor and trains a linear
classifier on its features. Trained by SGD, the classifier's accuracy
depends on the seed, the batch order and when training stops, noise that
can be as large as the gains between stages. Here it is the unique
minimiser of a strictly convex objective, found to a tight tolerance with
NumPy in float64, so a model's transfer accuracy is a property of its
features alone:

    minimise over W, b:  mean_n CE(softmax(z_n W + b), y_n) + l2 / 2 ||W||^2

where `z_n` are the features standardised with the training set's
per-feature mean and standard deviation (features of zero spread are only
centred) and the bias `b` is not penalised. The solver is Newton's method
with the Newton system solved by conjugate gradients on Hessian-vector
products (no Hessian is formed: the cost per product is one pass over the
features, `O(samples x features x classes)`), and a backtracking line
search; it stops when the largest gradient entry is below `tolerance`.
This is the objective of scikit-learn's `LogisticRegression` with
`C = 1 / (l2 * samples)` (the tests compare the two).
"""

import dataclasses

import numpy as np

from keras_lrphase._validation import check_integer
from keras_lrphase._validation import check_number
from keras_lrphase._validation import fail


@dataclasses.dataclass(frozen=True)
class LinearProbe:
    """A fitted softmax-regression classifier on standardised features.

    Attributes:
        kernel: Float64 array `(features, classes)`, on standardised features.
        bias: Float64 array `(classes,)` (defined up to a common shift; the
            solver's has mean 0).
        mean: Float64 array `(features,)`, the training features' mean.
        scale: Float64 array `(features,)`, their standard deviation (1
            where it is 0).
        l2: Float. The penalty the probe was fitted with.
        iterations: Int. Newton steps taken.
        gradient_norm: Float. Largest gradient entry at the solution.
    """

    kernel: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    l2: float
    iterations: int
    gradient_norm: float

    def logits(self, features):
        """Class scores `(samples, classes)` of raw (unstandardised) features."""
        z = (_as_matrix("features", features) - self.mean) / self.scale
        return z @ self.kernel + self.bias

    def predict(self, features):
        """Predicted class indices `(samples,)`."""
        return np.argmax(self.logits(features), axis=1)

    def accuracy(self, features, labels):
        """Fraction of samples whose predicted class is their label."""
        labels = np.asarray(labels).reshape(-1)
        return float(np.mean(self.predict(features) == labels))


def _as_matrix(name, features):
    features = np.asarray(features, dtype=np.float64)
    if features.ndim < 2 or features.shape[0] < 1:
        fail(name, f"<array of shape {features.shape}>",
             "must be an array `(samples, ...)` with at least one sample")
    features = features.reshape(len(features), -1)
    if not np.all(np.isfinite(features)):
        fail(name, "<array with non-finite values>", "must be finite")
    return features


def _softmax(scores):
    scores = scores - scores.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(scores).sum(axis=1, keepdims=True))
    return scores - log_norm


class _Objective:
    """Loss, gradient and Hessian-vector products in one `(d + 1, C)` array
    (the kernel's rows, then the bias)."""

    def __init__(self, z, labels, classes, l2):
        self.z = np.hstack([z, np.ones((len(z), 1))])
        self.onehot = np.eye(classes)[labels]
        self.l2 = l2
        self.n = len(z)
        self.probabilities = None

    def _penalised(self, params):
        masked = params.copy()
        masked[-1] = 0.0
        return masked

    def value(self, params):
        log_p = _softmax(self.z @ params)
        kernel = params[:-1]
        return (-np.sum(self.onehot * log_p) / self.n
                + 0.5 * self.l2 * np.sum(kernel * kernel))

    def gradient(self, params):
        self.probabilities = np.exp(_softmax(self.z @ params))
        return (self.z.T @ (self.probabilities - self.onehot) / self.n
                + self.l2 * self._penalised(params))

    def hessian_product(self, direction):
        # d^2 CE / dscores^2 is diag(p) - p p^T per sample.
        p = self.probabilities
        scores = self.z @ direction
        r = p * (scores - np.sum(p * scores, axis=1, keepdims=True))
        return self.z.T @ r / self.n + self.l2 * self._penalised(direction)


def _conjugate_gradient(product, rhs, tolerance, max_steps):
    x = np.zeros_like(rhs)
    residual = rhs.copy()
    direction = residual.copy()
    squared = np.sum(residual * residual)
    for _ in range(max_steps):
        if np.sqrt(squared) <= tolerance:
            break
        hd = product(direction)
        curvature = np.sum(direction * hd)
        if curvature <= 0:
            break
        step = squared / curvature
        x += step * direction
        residual -= step * hd
        new_squared = np.sum(residual * residual)
        direction = residual + (new_squared / squared) * direction
        squared = new_squared
    return x


def fit_linear_probe(features, labels, num_classes=None, *, l2=1e-3,
                     tolerance=1e-8, max_iterations=100):
    """Fits an L2-regularised softmax regression to fixed features.

    Use it to measure how linearly separable a model's features make a
    task (the "fix" transfer of `transfer_probe`): the result depends only
    on the features, the labels and `l2`, not on a seed or a batch order.

    Args:
        features: Array `(samples, ...)` (flattened per sample).
        labels: Integer class indices `(samples,)`.
        num_classes: Int or None (`max(labels) + 1`). Defaults to `None`.
        l2: Float > 0. Penalty on the kernel (on standardised features).
            Defaults to `1e-3`.
        tolerance: Float > 0. Stop when the largest gradient entry is below
            it. Defaults to `1e-8`.
        max_iterations: Int. Most Newton steps. Defaults to `100`.

    Returns:
        A `LinearProbe`.

    Raises:
        ValueError: For malformed features or labels, or bad settings.

    Example:

    >>> x = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> probe = fit_linear_probe(x, [0, 0, 1, 1], l2=0.1)
    >>> probe.predict(x).tolist(), probe.accuracy(x, [0, 0, 1, 1])
    ([0, 0, 1, 1], 1.0)
    >>> bool(probe.gradient_norm < 1e-8), round(float(probe.mean[0]), 2)
    (True, 1.5)

    References:
        You, Long, Jordan, Wang, "Learning Stages: Phenomenon, Root Cause,
        Mechanism Hypothesis, and Implications", Section 5 (the "fix"
        transfer).
    """
    features = _as_matrix("features", features)
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape != (len(features),) or not (
            np.issubdtype(labels.dtype, np.integer)
            or np.all(labels == np.round(labels))):
        fail("labels", f"<array of shape {labels.shape}>",
             f"must hold {len(features)} integer class indices")
    labels = labels.astype(np.int64)
    if labels.min() < 0:
        fail("labels", int(labels.min()), "must be class indices >= 0")
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    num_classes = check_integer("num_classes", num_classes, 2)
    if labels.max() >= num_classes:
        fail("labels", int(labels.max()),
             f"must be class indices below num_classes={num_classes}")
    l2 = check_number("l2", l2, minimum=0.0, exclusive_minimum=True)
    tolerance = check_number("tolerance", tolerance, minimum=0.0,
                             exclusive_minimum=True)
    max_iterations = check_integer("max_iterations", max_iterations, 1)

    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    objective = _Objective((features - mean) / scale, labels, num_classes, l2)
    params = np.zeros((features.shape[1] + 1, num_classes))
    value = objective.value(params)
    gradient = objective.gradient(params)
    iterations = 0
    while np.max(np.abs(gradient)) > tolerance and iterations < max_iterations:
        norm = np.sqrt(np.sum(gradient * gradient))
        step = _conjugate_gradient(objective.hessian_product, -gradient,
                                   min(0.5, np.sqrt(norm)) * norm,
                                   max_steps=params.size)
        slope = np.sum(gradient * step)
        if not slope < 0:
            break
        size = 1.0
        for _ in range(60):
            candidate = params + size * step
            new_value = objective.value(candidate)
            if new_value <= value + 1e-4 * size * slope:
                break
            size *= 0.5
        else:
            break
        params, value = candidate, new_value
        gradient = objective.gradient(params)
        iterations += 1
    bias = params[-1] - params[-1].mean()
    return LinearProbe(params[:-1].copy(), bias, mean, scale, l2, iterations,
                       float(np.max(np.abs(gradient))))
