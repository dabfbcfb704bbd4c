"""Canonical correlation analysis (CCA) and SVCCA of two activation matrices.

The similarity measure of Section 2.2 of Gotmare et al. (2019), taken from
Raghu et al. (2017): two layers are compared through their activations on
the same inputs, a matrix of shape `(samples, neurons)` each. CCA finds the
pairs of directions (linear combinations of the neurons of each layer) whose
projections are most correlated; SVCCA first keeps only the top singular
directions of each layer (99% of the variance) and reports the mean
canonical correlation.

The computation is the QR/SVD form of CCA (Bjorck & Golub, 1973): centre each
matrix, take an orthonormal basis `U` of its column space from a thin SVD in
float64, and read the canonical correlations as the singular values of
`U_a^H U_b` (the cosines of the principal angles between the two column
spaces). No covariance matrix is inverted, so nearly collinear neurons do not
blow up the result.

Rank deficiency: a direction whose singular value is below `epsilon` times the
Frobenius norm of the (uncentred) matrix is dropped before the CCA step, so
duplicated, constant or dead neurons reduce the number of correlations
instead of producing NaNs. `epsilon` defaults to `max(samples, neurons)`
times the machine epsilon of the input's float type (NumPy's `matrix_rank`
rule), so float32 activations lose the directions that float32 cannot
resolve.

Sample count: both matrices must have more samples (rows) than neurons
(columns); otherwise a `ValueError` is raised. With `samples - 1` smaller than
`rank_a + rank_b` the two centred column spaces must intersect and that many
correlations equal 1 whatever the data, and with fewer than about ten
samples per neuron the correlations of unrelated data are visibly above 0
(the expected sum of the squared correlations of independent Gaussian data is
`p * q / (samples - 1)`); pool or sub-sample neurons, or use more inputs.
"""

import numpy as np

from keras_lrphase import _warnings
from keras_lrphase._validation import fail


def _as_matrix(name, value):
    matrix = np.asarray(value)
    if matrix.ndim != 2:
        fail(name, f"<array of shape {matrix.shape}>",
             "must be a 2D array of shape (samples, neurons)")
    if not (np.issubdtype(matrix.dtype, np.number)
            and not np.issubdtype(matrix.dtype, np.bool_)):
        fail(name, f"<array of dtype {matrix.dtype}>", "must hold numbers")
    if not np.all(np.isfinite(matrix)):
        fail(name, "<array with NaN or inf>", "must hold finite values")
    return matrix


def check_pair(activations_a, activations_b):
    """Validates two activation matrices for CCA and returns them as arrays.

    Args:
        activations_a: Array-like of shape `(samples, neurons_a)`.
        activations_b: Array-like of shape `(samples, neurons_b)`.

    Returns:
        The two matrices as NumPy arrays (dtype unchanged).

    Raises:
        ValueError: If either is not a finite 2D numeric array, the sample
            counts differ, or a matrix has no more samples than neurons.
    """
    a = _as_matrix("activations_a", activations_a)
    b = _as_matrix("activations_b", activations_b)
    if a.shape[0] != b.shape[0]:
        fail("activations_b", f"<array of shape {b.shape}>",
             f"must have as many samples (rows) as `activations_a` "
             f"({a.shape[0]})")
    for name, matrix in (("activations_a", a), ("activations_b", b)):
        if matrix.shape[0] <= max(matrix.shape[1], 1):
            fail(name, f"<array of shape {matrix.shape}>",
                 "must have more samples (rows) than neurons (columns)")
    return a, b


def default_epsilon(matrix):
    """`max(samples, neurons)` times the machine epsilon of `matrix`'s type."""
    dtype = matrix.dtype if np.issubdtype(matrix.dtype, np.inexact) else np.float64
    return max(matrix.shape) * float(np.finfo(dtype).eps)


def singular_directions(matrix, epsilon=None):
    """Orthonormal basis of the centred column space, and its singular values.

    The matrix is converted to float64 (complex128 for complex input) and
    centred over the samples; directions whose singular value is at most
    `epsilon * ||matrix||_F` (uncentred) are dropped.

    Args:
        matrix: Array of shape `(samples, neurons)`.
        epsilon: Float or None. Relative threshold. Defaults to
            `default_epsilon(matrix)`.

    Returns:
        `(u, s)`: `u` of shape `(samples, rank)` with orthonormal columns and
        `s` the `rank` singular values, in descending order.
    """
    if epsilon is None:
        epsilon = default_epsilon(matrix)
    wide = np.complex128 if np.iscomplexobj(matrix) else np.float64
    x = np.asarray(matrix, dtype=wide)
    scale = np.linalg.norm(x)
    x = x - x.mean(axis=0, keepdims=True)
    if scale == 0.0 or x.shape[1] == 0:
        return np.zeros((x.shape[0], 0), wide), np.zeros(0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    rank = int(np.count_nonzero(s > epsilon * scale))
    return u[:, :rank], s[:rank]


def variance_rank(singular_values, keep_variance):
    """The fewest top directions holding at least `keep_variance` of the variance.

    Args:
        singular_values: 1D array, in descending order.
        keep_variance: Float in (0, 1].

    Returns:
        Int, between 1 and `len(singular_values)` (0 for an empty array).

    Example:

    >>> variance_rank(np.array([3.0, 2.0, 1.0]), 0.9)  # 9/14, 13/14, 14/14
    2
    """
    if len(singular_values) == 0:
        return 0
    cumulative = np.cumsum(np.asarray(singular_values, np.float64) ** 2)
    fractions = cumulative / cumulative[-1]
    fractions[-1] = 1.0
    return int(np.searchsorted(fractions, keep_variance, side="left")) + 1


def basis_correlations(basis_a, basis_b):
    """Canonical correlations of two orthonormal bases, in descending order.

    The singular values of `basis_a^H basis_b`, clipped to [0, 1]; there are
    `min(basis_a.shape[1], basis_b.shape[1])` of them.
    """
    if basis_a.shape[1] == 0 or basis_b.shape[1] == 0:
        return np.zeros(0)
    product = basis_a.conj().T @ basis_b
    return np.clip(np.linalg.svd(product, compute_uv=False), 0.0, 1.0)


def check_keep_variance(keep_variance):
    """Returns `keep_variance` as a float in (0, 1], or raises `ValueError`."""
    if (isinstance(keep_variance, bool)
            or not isinstance(keep_variance, (int, float, np.number))
            or not 0.0 < float(keep_variance) <= 1.0):
        fail("keep_variance", keep_variance, "must be a number in (0, 1]")
    return float(keep_variance)


def cca(activations_a, activations_b, *, epsilon=None):
    """Canonical correlations of two activation matrices, in descending order.

    Use it to compare two layers (of one network or of two) through their
    activations on the same inputs: a correlation of 1 means that some linear
    combination of the neurons of one layer reproduces a linear combination
    of the other's exactly, up to an offset. The result does not change when
    the neurons of either layer are permuted, rescaled, sign-flipped or
    mixed by any invertible linear map. See the module docstring for the
    numerical method, rank deficiency and the sample count.

    Args:
        activations_a: Array-like of shape `(samples, neurons_a)`. Real or
            complex.
        activations_b: Array-like of shape `(samples, neurons_b)`, the same
            samples in the same order.
        epsilon: Float or None. Relative threshold below which singular
            directions are dropped (see the module docstring). Defaults to
            `max(samples, neurons)` times the machine epsilon of the input.

    Returns:
        A float64 NumPy array of the `min(rank_a, rank_b)` canonical
        correlations, in [0, 1], sorted in descending order.

    Raises:
        ValueError: If an input is not a finite 2D array, the sample counts
            differ, or a matrix has no more samples than neurons.

    Example:

    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(100, 3))
    >>> mix = np.array([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, -3.0]])
    >>> np.round(cca(a, a @ mix + 5.0), 6)
    array([1., 1., 1.])

    References:
        Hotelling, "Relations between two sets of variates", Biometrika 1936.
        Raghu et al., "SVCCA: Singular Vector Canonical Correlation Analysis
        for Deep Learning Dynamics and Interpretability", NeurIPS 2017.
        Gotmare et al., "A Closer Look at Deep Learning Heuristics: Learning
        Rate Restarts, Warmup and Distillation", ICLR 2019, Section 2.2.
    """
    a, b = check_pair(activations_a, activations_b)
    basis_a, _ = singular_directions(
        a, None if epsilon is None else _check_epsilon(epsilon))
    basis_b, _ = singular_directions(
        b, None if epsilon is None else _check_epsilon(epsilon))
    return basis_correlations(basis_a, basis_b)


def svcca(activations_a, activations_b, keep_variance=0.99, *, epsilon=None):
    """SVCCA similarity of two activation matrices: the mean canonical correlation.

    Each centred matrix is reduced by SVD to its fewest top singular
    directions whose squared singular values hold at least `keep_variance`
    of the total; the mean of the canonical correlations of the two reduced
    matrices is the similarity (1: same representation up to a linear map;
    near 0: unrelated). This is the layer similarity of Gotmare et al.
    (2019), Figures 5, 6 and 14, with their 99% of the variance. Dropping
    the low-variance directions keeps noise neurons from lowering the mean.

    Args:
        activations_a: Array-like of shape `(samples, neurons_a)`.
        activations_b: Array-like of shape `(samples, neurons_b)`, the same
            samples in the same order.
        keep_variance: Float in (0, 1]. Fraction of the variance kept by the
            SVD step; `1.0` keeps every direction above the rank threshold
            (plain CCA). Defaults to `0.99`.
        epsilon: Float or None. Rank threshold, as in `cca`.

    Returns:
        Float in [0, 1], or NaN, with a warning, when a matrix has
        no variance at all.

    Raises:
        ValueError: As `cca`, or if `keep_variance` is not in (0, 1].

    Example:

    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(1000, 10))
    >>> round(svcca(a, 3.0 * a[:, ::-1]), 6)  # rescaled, neurons reversed
    1.0
    >>> svcca(a, rng.normal(size=(1000, 10))) < 0.2  # unrelated layers
    True

    References:
        Raghu et al., "SVCCA: Singular Vector Canonical Correlation Analysis
        for Deep Learning Dynamics and Interpretability", NeurIPS 2017.
        Gotmare et al., "A Closer Look at Deep Learning Heuristics", ICLR
        2019, Section 2.2.
    """
    keep_variance = check_keep_variance(keep_variance)
    a, b = check_pair(activations_a, activations_b)
    if epsilon is not None:
        epsilon = _check_epsilon(epsilon)
    bases = [reduced_basis(m, keep_variance, epsilon) for m in (a, b)]
    correlations = basis_correlations(*bases)
    if correlations.size:
        return float(np.mean(correlations))
    flat = [name for name, basis in zip(("activations_a", "activations_b"), bases)
            if basis.shape[1] == 0]
    _warnings.warn(
        f"svcca: {' and '.join(f'`{name}`' for name in flat)} "
        f"{'has' if len(flat) == 1 else 'have'} no variance (every neuron is "
        "constant over the samples, such as a dead ReLU layer): the "
        "similarity is undefined and NaN is returned.")
    return float("nan")


def svcca_correlations(activations_a, activations_b, keep_variance=0.99, *,
                       epsilon=None):
    """The canonical correlations of the SVD-reduced matrices (see `svcca`).

    Returns:
        A float64 array of the correlations, in descending order.
    """
    keep_variance = check_keep_variance(keep_variance)
    a, b = check_pair(activations_a, activations_b)
    if epsilon is not None:
        epsilon = _check_epsilon(epsilon)
    return basis_correlations(reduced_basis(a, keep_variance, epsilon),
                              reduced_basis(b, keep_variance, epsilon))


def reduced_basis(matrix, keep_variance, epsilon=None):
    """The top singular directions of the centred `matrix` (SVCCA's SVD step)."""
    basis, singular_values = singular_directions(matrix, epsilon)
    return basis[:, :variance_rank(singular_values, keep_variance)]


def _check_epsilon(epsilon):
    if (isinstance(epsilon, bool) or not isinstance(epsilon, (int, float, np.number))
            or not 0.0 <= float(epsilon) < 1.0):
        fail("epsilon", epsilon, "must be a number in [0, 1)")
    return float(epsilon)
