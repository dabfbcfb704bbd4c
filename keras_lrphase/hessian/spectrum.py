"""The Hessian spectrum of a Keras model: top eigenvalues, trace, density.

Three estimators on the curvature of a model's loss over a dataset
(`HessianOperator`: the Hessian or the Gauss-Newton matrix, in every
weight, one layer or a list of layers, on any backend):

* `top_hessian_eigenvalues`: the k largest (or smallest) eigenvalues and
  their eigenvectors, by Lanczos with full reorthogonalisation;
* `hessian_trace`: the trace, by Hutch++ (or Hutchinson), with its standard
  error;
* `hessian_density`: the spectral density, by stochastic Lanczos quadrature
  (SLQ): the nodes and weights of each probe's Gauss quadrature, and their
  Gaussian-smoothed density on a grid.

`hessian_spectrum` runs all three on one operator (the data read once).
Each takes either a model and its data or a `HessianOperator`. The dense
linear algebra on the small tridiagonal matrices is SciPy's
(`scipy.linalg.eigh_tridiagonal`); the operator's products are the only
costly part, and every result says how many it ran.
"""

import dataclasses
import math

import numpy as np

from keras_lrphase._validation import check_choice
from keras_lrphase._validation import check_integer
from keras_lrphase._validation import check_positive
from keras_lrphase._validation import check_seed
from keras_lrphase._validation import fail
from keras_lrphase.hessian.eigensolvers import WHICH
from keras_lrphase.hessian.eigensolvers import lanczos_eigenpairs
from keras_lrphase.hessian.eigensolvers import lanczos_tridiagonal
from keras_lrphase.hessian.eigensolvers import tridiagonal_eigh
from keras_lrphase.hessian.operator import HessianOperator

TRACE_METHODS = ("hutch++", "hutchinson")


# == results ===================================================================
@dataclasses.dataclass(frozen=True)
class HessianEigenvaluesResult:
    """The top eigenvalues of the curvature, with their eigenvectors.

    Attributes:
        values: Float64 array (k,): the eigenvalues, largest first
            (`which="smallest"`: smallest first; `"magnitude"`: largest
            magnitude first).
        vectors: List of k eigenvectors, each a list of float32 arrays
            shaped like the measured weights (unit norm over all of them).
        flat_vectors: Float64 array (k, size): the same, flat, in the
            order of the measured weights.
        residuals: Float64 array (k,): ||H y - lambda y|| of each pair, a
            bound on its eigenvalue's error.
        iterations: Int. Hessian-vector products run.
        converged: Bool. Whether every residual met the tolerance.
        layer: Str. The measured weights (`"all"`, a layer name, or names
            joined by `+`).
        curvature: Str. `"hessian"` or `"gauss_newton"`.
        size: Int. Number of measured weights.
        samples: Int. Samples the curvature is averaged over (this
            worker's).
    """

    values: np.ndarray
    vectors: list
    flat_vectors: np.ndarray
    residuals: np.ndarray
    iterations: int
    converged: bool
    layer: str
    curvature: str
    size: int
    samples: int


@dataclasses.dataclass(frozen=True)
class HessianTraceResult:
    """The trace of the curvature, estimated from random probes.

    Attributes:
        value: Float. The trace estimate.
        standard_error: Float. Its standard error: the standard deviation
            of the random probes' values over the square root of their
            number (0 where the estimate is exact: Hutch++ whose sketch
            spans the whole space).
        probes: Int. Hessian-vector products run.
        method: Str. `"hutch++"` or `"hutchinson"`.
        layer, curvature, size, samples: As in `HessianEigenvaluesResult`.
    """

    value: float
    standard_error: float
    probes: int
    method: str
    layer: str
    curvature: str
    size: int
    samples: int


@dataclasses.dataclass(frozen=True)
class HessianDensityResult:
    """The spectral density of the curvature by stochastic Lanczos quadrature.

    Each probe v (unit norm) gives a Gauss quadrature of the spectral
    measure sum_i (v . u_i)^2 delta(t - lambda_i): its nodes (the Ritz
    values of `steps` Lanczos steps from v) and weights (the squared first
    components of their eigenvectors, summing to 1), exact for polynomials
    of degree below 2 * steps. Averaged over probes, it estimates the
    density of eigenvalues (1/size) sum_i delta(t - lambda_i).

    Attributes:
        grid: Float64 array (points,): where the density is evaluated.
        density: Float64 array (points,): the average over probes of
            sum_j weight_j N(t; node_j, sigma^2), which integrates to 1.
        nodes: Tuple of float64 arrays, one per probe (at most `steps`
            entries; fewer where the probe's Krylov space was exhausted).
        weights: Tuple of float64 arrays, matching `nodes`.
        sigma: Float. Width of the Gaussian kernel.
        steps: Int. Lanczos steps per probe asked for.
        probes: Int. Number of probes.
        products: Int. Hessian-vector products run.
        layer, curvature, size, samples: As in `HessianEigenvaluesResult`.
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: tuple
    weights: tuple
    sigma: float
    steps: int
    probes: int
    products: int
    layer: str
    curvature: str
    size: int
    samples: int

    def moment(self, order):
        """The estimate of tr(H^order) / size: the quadrature's moment.

        Exact per probe (v^T H^order v) for `order < 2 * steps`.
        """
        order = check_integer("order", order, 0)
        return float(np.mean([
            np.sum(w * n.astype(np.float64) ** order)
            for n, w in zip(self.nodes, self.weights)
        ]))


@dataclasses.dataclass(frozen=True)
class HessianSpectrumResult:
    """What `hessian_spectrum` computed on one operator.

    Attributes:
        eigenvalues: `HessianEigenvaluesResult` or None.
        trace: `HessianTraceResult` or None.
        density: `HessianDensityResult` or None.
    """

    eigenvalues: object
    trace: object
    density: object


# == estimators on any symmetric operator ======================================
def hutchpp_trace(matvec, size, probes, rng, method="hutch++"):
    """The trace of a symmetric operator from `probes` products.

    Hutch++ spends a third of the products on a sketch S (Rademacher), a
    third on A Q (Q an orthonormal basis of A S), whose part tr(Q^T A Q) is
    exact, and the rest on Hutchinson's estimate of the remainder
    tr((I - QQ^T) A (I - QQ^T)) with Rademacher probes g_i; the standard
    error is that of the remainder's mean. `method="hutchinson"` spends all
    products on Rademacher probes of A.

    Returns:
        `(value, standard_error, products)`.

    References:
        Meyer, Musco, Musco, Woodruff, "Hutch++: Optimal Stochastic Trace
        Estimation", SOSA 2021, Algorithm 1. Hutchinson, "A stochastic
        estimator of the trace of the influence matrix for Laplacian
        smoothing splines", 1990.
    """

    def rademacher(count):
        return rng.choice(np.array([-1.0, 1.0]), size=(count, size))

    if method == "hutchinson":
        values = np.array([g @ matvec(g) for g in rademacher(probes)])
        return float(values.mean()), _standard_error(values), probes
    sketch_count = min(probes // 3, size)
    sketch = np.stack([matvec(s) for s in rademacher(sketch_count)], axis=1)
    basis, _ = np.linalg.qr(sketch)
    exact_part = float(sum(q @ matvec(q) for q in basis.T))
    used = 2 * sketch_count
    if sketch_count == size:
        return exact_part, 0.0, used
    values = []
    for g in rademacher(probes - used):
        g = g - basis @ (basis.T @ g)
        w = matvec(g)
        values.append(g @ (w - basis @ (basis.T @ w)))
    values = np.asarray(values)
    return exact_part + float(values.mean()), _standard_error(values), probes


def _standard_error(values):
    if len(values) < 2:
        return math.nan
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def lanczos_quadrature(matvec, probes, steps, reorthogonalize=True):
    """Gauss quadrature nodes and weights of each probe (SLQ).

    Args:
        matvec: Callable: flat float64 vector -> H times it.
        probes: Array (count, n) of non-zero probe vectors (normalised
            here).
        steps: Int. Lanczos steps per probe.
        reorthogonalize: Bool. Full reorthogonalisation (stores `steps`
            vectors of size n).

    Returns:
        `(nodes, weights, products)`: tuples of arrays per probe.

    References:
        Golub and Meurant, "Matrices, Moments and Quadrature with
        Applications", 2010, Chapter 6. Ubaru, Chen, Saad, "Fast
        Estimation of tr(f(A)) via Stochastic Lanczos Quadrature", SIAM
        J. Matrix Anal. Appl. 2017. Ghorbani, Krishnan, Xiao, "An
        Investigation into Neural Net Optimization via Hessian Eigenvalue
        Density", ICML 2019, Section 2.
    """
    nodes, weights, products = [], [], 0
    for probe in probes:
        run = lanczos_tridiagonal(
            matvec, probe, steps, reorthogonalize=reorthogonalize
        )
        values, vectors = tridiagonal_eigh(run.alphas, run.betas)
        nodes.append(values)
        weights.append(vectors[0] ** 2)
        products += run.steps
    return tuple(nodes), tuple(weights), products


def smoothed_density(nodes, weights, grid, sigma):
    """The average over probes of sum_j w_j N(t; node_j, sigma^2) on `grid`."""
    grid = np.asarray(grid, dtype=np.float64)
    total = np.zeros_like(grid)
    for n, w in zip(nodes, weights):
        z = (grid[:, None] - n[None, :]) / sigma
        total += np.exp(-0.5 * z * z) @ w
    return total / (len(nodes) * sigma * math.sqrt(2.0 * math.pi))


# == the Keras functions =========================================================
def _operator(model, data, options):
    if isinstance(model, HessianOperator):
        if data is not None or options:
            given = (["data"] if data is not None else []) + sorted(options)
            fail("model", model,
                 "is a HessianOperator, which fixes its data and settings: "
                 f"do not pass {given} with it")
        return model
    if data is None:
        fail("data", data, "must be `(x, y)` arrays, a tf.data.Dataset, a "
             "keras.utils.PyDataset or an iterable of `(x, y)` batches")
    return HessianOperator(model, data, **options)


def _rng(operator, seed):
    seed = check_seed("seed", seed)
    if seed is None and operator.world_size > 1:
        fail("seed", seed, f"must be an integer in a run of "
             f"{operator.world_size} workers, so that every worker draws "
             "the same random vectors")
    return np.random.default_rng(seed)


def _eigenvalues(operator, k, which, max_iterations, tolerance, rng):
    k = check_integer("k", k, 1, operator.size)
    which = check_choice("which", which, WHICH)
    max_iterations = check_integer("max_iterations", max_iterations, 1)
    tolerance = check_positive("tolerance", tolerance)
    pairs = lanczos_eigenpairs(
        operator.matvec, rng.standard_normal(operator.size), k, which=which,
        max_iterations=max_iterations, tolerance=tolerance, rng=rng,
    )
    return HessianEigenvaluesResult(
        values=pairs.values,
        vectors=[
            [a.astype(np.float32) for a in operator.unflatten(v)]
            for v in pairs.vectors
        ],
        flat_vectors=pairs.vectors,
        residuals=pairs.residuals,
        iterations=pairs.iterations,
        converged=pairs.converged,
        **_about(operator),
    )


def _trace(operator, probes, method, rng):
    method = check_choice("method", method, TRACE_METHODS)
    probes = check_integer("probes", probes, 6 if method == "hutch++" else 2)
    value, error, used = hutchpp_trace(
        operator.matvec, operator.size, probes, rng, method
    )
    return HessianTraceResult(
        value=value, standard_error=error, probes=used, method=method,
        **_about(operator),
    )


def _density(operator, steps, probes, grid, sigma, reorthogonalize, rng):
    steps = check_integer("steps", steps, 1)
    if isinstance(probes, (int, np.integer)) and not isinstance(probes, bool):
        count = check_integer("probes", probes, 1)
        vectors = rng.choice(np.array([-1.0, 1.0]), size=(count, operator.size))
    else:
        vectors = np.asarray(probes, dtype=np.float64)
        if (vectors.ndim != 2 or vectors.shape[1] != operator.size
                or not len(vectors) or not np.all(np.isfinite(vectors))
                or np.any(np.linalg.norm(vectors, axis=1) == 0)):
            fail("probes", f"<array of shape {np.shape(probes)}>",
                 "must be an integer >= 1 or a (count, size) array of "
                 f"finite, non-zero vectors, size={operator.size}")
    nodes, weights, products = lanczos_quadrature(
        operator.matvec, vectors, steps, reorthogonalize=reorthogonalize
    )
    every = np.concatenate(nodes)
    low, high = float(every.min()), float(every.max())
    span = high - low if high > low else max(abs(high), 1.0)
    if sigma is None:
        sigma = span / 200.0
    sigma = check_positive("sigma", sigma)
    if isinstance(grid, (int, np.integer)) and not isinstance(grid, bool):
        points = check_integer("grid", grid, 2)
        grid = np.linspace(low - 4 * sigma, high + 4 * sigma, points)
    else:
        grid = np.asarray(grid, dtype=np.float64)
        if grid.ndim != 1 or grid.size < 2 or not np.all(np.isfinite(grid)):
            fail("grid", f"<array of shape {np.shape(grid)}>",
                 "must be an integer >= 2 or a 1-D array of finite points")
    return HessianDensityResult(
        grid=grid, density=smoothed_density(nodes, weights, grid, sigma),
        nodes=nodes, weights=weights, sigma=float(sigma), steps=steps,
        probes=len(vectors), products=products, **_about(operator),
    )


def _about(operator):
    return {"layer": operator.layer, "curvature": operator.curvature,
            "size": operator.size, "samples": operator.samples}


def top_hessian_eigenvalues(
    model, data=None, k=5, *, which="largest", max_iterations=100,
    tolerance=1e-3, seed=None, **operator_options,
):
    """The k largest eigenvalues of the loss Hessian, with eigenvectors.

    Lanczos with full reorthogonalisation on the Hessian (or Gauss-Newton
    matrix) of the model's mean loss over `data`, in every weight, one
    layer or a list of layers. It stops once each of the k Ritz pairs has
    a residual ||H y - lambda y|| below `tolerance * |lambda|` (the
    eigenvalue's error is at most that, and usually far less). A handful of
    products more than k usually suffice, where power iteration with
    deflation takes tens per eigenvalue. Exactly repeated eigenvalues are
    found with their multiplicity.

    Args:
        model: A built `keras.Model`, or a `HessianOperator` (then pass
            neither `data` nor operator options).
        data: `(x, y)` arrays, a `tf.data.Dataset`, a `keras.utils.PyDataset`
            or an iterable of `(x, y)` batches (see `HessianOperator`).
        k: Int in [1, size]. Number of eigenvalues. Defaults to `5`.
        which: `"largest"`, `"smallest"` or `"magnitude"`. Defaults to
            `"largest"`.
        max_iterations: Int >= 1. Most products. Defaults to `100`.
        tolerance: Float > 0. Relative residual of each pair. Defaults to
            `1e-3`.
        seed: Int >= 0 or None. Seed of the start vector (required in a
            multi-worker run). Defaults to `None`.
        **operator_options: Arguments of `HessianOperator`: `layer`
            (defaults to `"all"`), `loss`, `curvature`, `training`,
            `batch_size`, `steps`, `reducer`, `hvp`.

    Returns:
        A `HessianEigenvaluesResult`.

    Example:

    >>> import numpy as np, keras
    >>> from keras_lrphase.hessian import top_hessian_eigenvalues
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> x = np.array([[1, 0], [0, 2]], "float32"); y = np.zeros((2, 1), "float32")
    >>> result = top_hessian_eigenvalues(model, (x, y), k=2, loss="mse", seed=0)
    >>> np.round(result.values, 4).tolist()  # eig of (2/2) [[1,0,1],[0,4,2],[1,2,2]]
    [5.3028, 1.6972]

    References:
        Lanczos, "An iteration method for the solution of the eigenvalue
        problem of linear differential and integral operators", 1950.
        Golub and Van Loan, "Matrix Computations", 4th ed., Chapter 10.
    """
    operator = _operator(model, data, operator_options)
    return _eigenvalues(operator, k, which, max_iterations, tolerance,
                        _rng(operator, seed))


def hessian_trace(
    model, data=None, *, probes=99, method="hutch++", seed=None,
    **operator_options,
):
    """The trace of the loss Hessian, with its standard error.

    Hutch++ (the default) finds the dominant eigenspace with a third of the
    products, takes its part of the trace exactly, and estimates the rest
    by Hutchinson's method; on Hessians with a few large eigenvalues it
    needs far fewer products than Hutchinson for the same error.
    The standard error is that of the random part; with `probes / 3`
    at least the number of weights the estimate is exact (error 0).

    Args:
        model: A built `keras.Model`, or a `HessianOperator`.
        data: The data (see `top_hessian_eigenvalues`).
        probes: Int. Hessian-vector products: >= 6 for Hutch++ (a third
            each for the sketch, its basis and the remainder), >= 2 for
            Hutchinson. Defaults to `99`.
        method: `"hutch++"` or `"hutchinson"`. Defaults to `"hutch++"`.
        seed: Int >= 0 or None. Seed of the Rademacher probes. Defaults to
            `None`.
        **operator_options: Arguments of `HessianOperator`.

    Returns:
        A `HessianTraceResult`.

    Example:

    >>> import numpy as np, keras
    >>> from keras_lrphase.hessian import hessian_trace
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> x = np.array([[1, 0], [0, 2]], "float32"); y = np.zeros((2, 1), "float32")
    >>> result = hessian_trace(model, (x, y), probes=9, loss="mse", seed=0)
    >>> round(result.value, 4), result.standard_error  # (1 + 4 + 2) exactly
    (7.0, 0.0)

    References:
        Meyer, Musco, Musco, Woodruff, "Hutch++: Optimal Stochastic Trace
        Estimation", SOSA 2021.
    """
    operator = _operator(model, data, operator_options)
    return _trace(operator, probes, method, _rng(operator, seed))


def hessian_density(
    model, data=None, *, steps=80, probes=1, grid=1000, sigma=None,
    reorthogonalize=True, seed=None, **operator_options,
):
    """The spectral density of the loss Hessian, by stochastic Lanczos quadrature.

    For each random probe, `steps` Lanczos steps give the nodes and
    weights of a Gauss quadrature of the spectrum seen from that probe;
    their average, smoothed by a Gaussian of width `sigma`, estimates the
    density of eigenvalues (it integrates to 1). The extreme nodes converge
    to the extreme eigenvalues; the bulk is resolved to about the node
    spacing. Plot it on a logarithmic axis: a network's Hessian has a few
    outliers far from a bulk near 0.

    Args:
        model: A built `keras.Model`, or a `HessianOperator`.
        data: The data (see `top_hessian_eigenvalues`).
        steps: Int >= 1. Lanczos steps (products) per probe. Defaults to
            `80`.
        probes: Int >= 1 (Rademacher probes), or an array (count, size) of
            probe vectors (e.g. the same ones for several models, to
            compare their spectra with common random numbers). Defaults
            to `1`.
        grid: Int >= 2 (points spanning the nodes, 4 sigma beyond them) or
            a 1-D array of points. Defaults to `1000`.
        sigma: Float > 0 or None. Width of the Gaussian kernel. Defaults to
            `None`: 1/200 of the span of the nodes.
        reorthogonalize: Bool. Full reorthogonalisation of the Lanczos
            vectors (memory: `steps` vectors of the size of the measured
            weights); without it, spurious copies of the outliers appear.
            Defaults to `True`.
        seed: Int >= 0 or None. Seed of the probes. Defaults to `None`.
        **operator_options: Arguments of `HessianOperator`.

    Returns:
        A `HessianDensityResult`.

    Example:

    >>> import numpy as np, keras
    >>> from keras_lrphase.hessian import hessian_density
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> x = np.array([[1, 0], [0, 2]], "float32"); y = np.zeros((2, 1), "float32")
    >>> result = hessian_density(model, (x, y), steps=3, loss="mse", seed=0)
    >>> np.round(result.nodes[0][1:], 4).tolist()  # 3 steps: exact eigenvalues
    [1.6972, 5.3028]
    >>> # The basis vectors as probes: the moments of the exact spectrum.
    >>> exact = hessian_density(model, (x, y), steps=3, probes=np.eye(3),
    ...                         loss="mse")
    >>> round(exact.moment(1) * exact.size, 4)  # the trace, 1 + 4 + 2
    7.0

    References:
        Ghorbani, Krishnan, Xiao, "An Investigation into Neural Net
        Optimization via Hessian Eigenvalue Density", ICML 2019. Ubaru,
        Chen, Saad, "Fast Estimation of tr(f(A)) via Stochastic Lanczos
        Quadrature", SIAM J. Matrix Anal. Appl. 2017.
    """
    if not isinstance(reorthogonalize, bool):
        fail("reorthogonalize", reorthogonalize, "must be True or False")
    operator = _operator(model, data, operator_options)
    return _density(operator, steps, probes, grid, sigma, reorthogonalize,
                    _rng(operator, seed))


def hessian_spectrum(
    model, data=None, *, k=5, trace_probes=99, density_steps=80,
    density_probes=1, max_iterations=100, tolerance=1e-3, seed=None,
    **operator_options,
):
    """Top eigenvalues, trace and density of the loss Hessian, on one operator.

    The data are read (and the model's prefix run) once for the three
    estimates; each estimate draws its random vectors from its own stream
    of `seed`, so each equals the one its own function gives with that
    seed. Pass 0 to `k`, `trace_probes` or `density_steps` to skip one.

    Args:
        model: A built `keras.Model`, or a `HessianOperator`.
        data: The data (see `top_hessian_eigenvalues`).
        k: Int >= 0. Top eigenvalues. Defaults to `5`.
        trace_probes: Int, 0 or >= 6. Products of Hutch++. Defaults to
            `99`.
        density_steps: Int >= 0. Lanczos steps per density probe.
            Defaults to `80`.
        density_probes: Int >= 1. Probes of the density. Defaults to `1`.
        max_iterations: Int. Most products of the eigenvalues. Defaults to
            `100`.
        tolerance: Float. Relative residual of the eigenvalues. Defaults
            to `1e-3`.
        seed: Int >= 0 or None. Defaults to `None`.
        **operator_options: Arguments of `HessianOperator`.

    Returns:
        A `HessianSpectrumResult`.
    """
    operator = _operator(model, data, operator_options)
    seed = check_seed("seed", seed)
    _rng(operator, seed)
    k = check_integer("k", k, 0, operator.size)
    trace_probes = check_integer("trace_probes", trace_probes, 0)
    density_steps = check_integer("density_steps", density_steps, 0)
    return HessianSpectrumResult(
        eigenvalues=_eigenvalues(
            operator, k, "largest", max_iterations, tolerance,
            np.random.default_rng(seed)) if k else None,
        trace=_trace(operator, trace_probes, "hutch++",
                     np.random.default_rng(seed)) if trace_probes else None,
        density=_density(operator, density_steps, density_probes, 1000, None,
                         True, np.random.default_rng(seed))
        if density_steps else None,
    )
