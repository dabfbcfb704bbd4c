"""The largest Hessian eigenvalue of one layer, on one large batch."""

import dataclasses

import keras
import numpy as np
from keras import ops

from keras_lrphase._validation import check_bool
from keras_lrphase._validation import check_choice
from keras_lrphase._validation import check_integer
from keras_lrphase._validation import check_positive
from keras_lrphase._validation import check_seed
from keras_lrphase.backend import autodiff
from keras_lrphase.backend import keras_compat
from keras_lrphase.hessian.batch import as_arrays
from keras_lrphase.hessian.batch import validate_batch
from keras_lrphase.hessian.eigensolvers import SOLVERS
from keras_lrphase.hessian.restriction import RestrictedLoss

HVP_MODES = ("forward_over_back", "finite_difference", "reverse_over_reverse")
FINITE_DIFFERENCE_STEP = float(np.sqrt(np.finfo(np.float32).eps))


@dataclasses.dataclass(frozen=True)
class HessianEigenvalueResult:
    """The outcome of one eigenvalue estimate.

    Attributes:
        value: Float. The largest Hessian eigenvalue estimate.
        vector: List of NumPy arrays shaped like the layer's trainable
            weights: the unit-norm eigenvector estimate (pass it back as
            `initial_vector` to warm-start the next estimate).
        iterations: Int. Iterations of the eigensolver (one
            Hessian-vector product each).
        converged: Bool. Whether the tolerance was met within
            `max_iterations`.
        layer: Str. Name of the layer (or `"all"`).
        restricted: Bool. Whether the products ran through the layer's head
            only (False when they ran through the whole model).
    """

    value: float
    vector: list
    iterations: int
    converged: bool
    layer: str
    restricted: bool


class HessianEigenvalueEstimator:
    """Reusable estimator of the largest Hessian eigenvalue of one layer.

    Calls with the same model reuse the split of the model and the compiled
    Hessian-vector product, so the per-epoch cost in a callback is one
    forward pass over the batch plus the products on the layer's head.
    `top_hessian_eigenvalue` is the one-shot form; the arguments are the
    same. The Hessian is that of the data loss alone, computed as the
    compiled model computes it: regularisation terms (`model.losses`, such
    as L2 kernel regularisers) are not part of it. For a
    `keras.distillation.Distiller` it is the Hessian of its student, in the
    student's layer, under the objective the Distiller trains on (or under
    `loss` on the labels, when given); see
    `keras_lrphase.hessian.distillation`.

    Args:
        layer: A layer, a layer name, `None` (the last layer with trainable
            weights) or `"all"` (every trainable weight; slower).
        loss: A Keras loss (object, name or callable); `None` uses the
            model's compiled loss.
        method: `"power"` (power iteration, as the paper) or `"lanczos"`.
        max_iterations: Int >= 1. Most Hessian-vector products per estimate.
        tolerance: Float > 0. Power iteration stops when the relative change
            of the estimate falls below it; Lanczos when the Ritz residual
            is below `tolerance * value`.
        hvp: `"forward_over_back"`, `"finite_difference"` or
            `"reverse_over_reverse"`. The finite difference is the paper's
            equation 8, Hv = (grad(W + eps v) - grad(W)) / eps with unit v
            and eps = sqrt(float32 machine epsilon) * max(1, ||W||).
        training: Bool. Run BatchNormalization/Dropout in training mode.
        seed: Int or None. Seed of the random initial vector.

    Example:

    >>> import numpy as np, keras
    >>> from keras_lrphase.hessian.estimator import HessianEigenvalueEstimator
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> model.compile(loss="mse")
    >>> estimator = HessianEigenvalueEstimator(seed=0)
    >>> x = np.eye(3, dtype="float32"); y = np.zeros((3, 2), "float32")
    >>> round(estimator(model, x, y).value, 3)  # 2/(3*2) * eig(X^T X + bias)
    1.333

    References:
        "Achieving Small-Batch Accuracy with Large-Batch Scalability via
        Adaptive Learning Rate Adjustment" (ICLR 2022 submission),
        Section 3.2 (largest eigenvalue of the output-side layer
        by power iteration on one large batch).
    """

    def __init__(
        self,
        layer=None,
        loss=None,
        method="power",
        max_iterations=20,
        tolerance=1e-3,
        hvp="forward_over_back",
        training=False,
        seed=None,
    ):
        self.method = check_choice("method", method, sorted(SOLVERS))
        self.hvp = check_choice("hvp", hvp, HVP_MODES)
        self.max_iterations = check_integer("max_iterations", max_iterations, 1)
        self.tolerance = check_positive("tolerance", tolerance)
        self.training = check_bool("training", training)
        self.seed = check_seed("seed", seed)
        self.layer = layer
        self.loss = loss
        self._model = None
        self._signature = None

    def _prepare(self, model, x, y):
        signature = _batch_signature(x, y)
        if model is self._model and signature == self._signature:
            return
        key = (
            identity_key(self.layer),
            identity_key(self.loss),
            # A recompiled model has a new compiled loss: new products.
            compiled_loss_key(model) if self.loss is None else None,
            self.hvp,
            self.training,
            model_uses_xla(model),
        )
        restricted, compiled = cached_product(model, key, lambda: (
            RestrictedLoss(model, layer=self.layer, loss=self.loss,
                           training=self.training),
            {},
        ))
        # One trace per kind of batch: another rank, dtype or non-batch
        # shape of the inputs or targets traces anew (TensorFlow's
        # `reduce_retracing` would generalise `(N, 1)` and `(N,)` targets to
        # a shape of unknown rank, which Keras' losses cannot handle); a new
        # batch size reuses the trace, generalised.
        if signature not in compiled:
            compiled[signature] = self._compile(model, restricted)
            _evict_oldest(compiled)
        self._restricted = restricted
        self._prefix, self._loss_fn, self._product = compiled[signature]
        self._model, self._signature = model, signature

    def _compile(self, model, restricted):
        backend = autodiff()
        # The prefix forward pass is the bulk of the cost: compile it with
        # XLA whenever Keras does so for the model's own fit/predict.
        prefix = (
            backend.compile(
                restricted.prefix_function(),
                jit_compile=model_uses_xla(model),
            )
            if restricted.prefix is not None
            else None
        )
        # Only TensorFlow scales losses by the number of replicas of a
        # distribution strategy; its module takes the scaling back out.
        loss_fn = getattr(backend, "whole_batch_loss", _identity)(
            restricted.loss_fn
        )
        if self.hvp == "finite_difference":
            product = backend.gradient(loss_fn)
        else:
            product = backend.hessian_vector_product(loss_fn, self.hvp)
        return prefix, loss_fn, product

    def check(self, model, x, y, argument="data"):
        """Evaluates the restricted loss once on `(x, y)`, or raises.

        Catches before training what would otherwise fail at the first
        estimate: a layer that is not part of `model`, inputs or labels that
        do not fit the model or its loss.

        Raises:
            ValueError: naming `argument` and the model, with the cause.
        """
        if not _all_tensors((x, y)):
            x, y = as_arrays(x), as_arrays(y)
            validate_batch(x, y)
        self._prepare(model, x, y)
        try:
            inputs, data, params = self._inputs(x, y)
            value = float(ops.convert_to_numpy(self._loss_fn(params, data)))
        except Exception as error:  # noqa: BLE001 - re-raised with context
            raise ValueError(
                f"Argument `{argument}` cannot be used to estimate the Hessian "
                f"of model {model.name!r}: evaluating its loss on the batch "
                f"failed with {type(error).__name__}: "
                f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}"
            ) from error
        return value

    def _inputs(self, x, y):
        restricted = self._restricted
        inputs = to_tensors(x)
        if self._prefix is not None:
            inputs = self._prefix(*restricted.prefix_values(), inputs)
        others, non_trainable = restricted.fixed_values()
        y = restricted.loss_targets(x, y)  # a Distiller's: with the teacher's
        data = (inputs, to_tensors(y), others, non_trainable)
        return inputs, data, restricted.target_values()

    def __call__(self, model, x, y, initial_vector=None):
        """Estimates the largest eigenvalue on the batch `(x, y)`.

        Args:
            model: A built `keras.Model`.
            x: Inputs of one batch (array or nest of arrays), or the
                backend's tensors of a batch checked before (used as they
                are, on their device: `HessianEigenvalueProvider` copies
                its batch there once rather than at every estimate).
            y: Targets of that batch.
            initial_vector: None, or a list of arrays shaped like the layer's
                trainable weights (e.g. the previous result's `vector`).

        Returns:
            A `HessianEigenvalueResult`.
        """
        if not _all_tensors((x, y)):
            x, y = as_arrays(x), as_arrays(y)
            validate_batch(x, y)
        self._prepare(model, x, y)
        restricted = self._restricted
        shapes = [tuple(v.shape) for v in restricted.targets]
        dtypes = [v.dtype for v in restricted.targets]
        sizes = [int(np.prod(s)) for s in shapes]

        def unflatten(flat):
            parts = np.split(flat, np.cumsum(sizes)[:-1])
            return [
                ops.convert_to_tensor(p.reshape(s).astype(d))
                for p, s, d in zip(parts, shapes, dtypes)
            ]

        def flatten(tensors):
            return np.concatenate(
                [np.ravel(ops.convert_to_numpy(t)).astype(np.float64) for t in tensors]
            )

        _, data, params = self._inputs(x, y)

        if self.hvp == "finite_difference":
            weights = flatten(params)
            base_gradient = flatten(self._product(params, data))
            step = FINITE_DIFFERENCE_STEP * max(1.0, float(np.linalg.norm(weights)))

            def matvec(v):
                shifted = unflatten(weights + step * v)
                return (flatten(self._product(shifted, data)) - base_gradient) / step

        else:

            def matvec(v):
                return flatten(self._product(params, unflatten(v), data))

        start = self._initial_vector(initial_vector, shapes, sum(sizes))
        solution = SOLVERS[self.method](
            matvec, start, self.max_iterations, self.tolerance
        )
        vector = [
            p.reshape(s).astype(np.float32)
            for p, s in zip(np.split(solution.vector, np.cumsum(sizes)[:-1]), shapes)
        ]
        return HessianEigenvalueResult(
            value=float(solution.value),
            vector=vector,
            iterations=solution.iterations,
            converged=solution.converged,
            layer=restricted.layer_name,
            restricted=restricted.restricted,
        )

    def _initial_vector(self, initial_vector, shapes, size):
        if initial_vector is None:
            return np.random.default_rng(self.seed).standard_normal(size)
        parts = list(initial_vector)
        got = [tuple(np.shape(p)) for p in parts]
        if got != shapes:
            raise ValueError(
                "Argument `initial_vector` must match the shapes of the "
                f"layer's trainable weights {shapes}. Received shapes: {got}"
            )
        return np.concatenate([np.ravel(p).astype(np.float64) for p in parts])


# Compiled products kept per model, for the most recent configurations
# (layer, loss, product mode, training flag) and, in each, the most recent
# kinds of batch (see `_batch_signature`): repeated estimates on one model,
# by one estimator or by `top_hessian_eigenvalue` in a loop, trace their
# functions once (then once more for a new batch size, which
# `reduce_retracing` generalises).
CACHED_CONFIGURATIONS = 8
_CACHE_ATTRIBUTE = "_keras_lrphase_hessian_products"


def _evict_oldest(cache):
    while len(cache) > CACHED_CONFIGURATIONS:
        cache.pop(next(iter(cache)))


def cached_product(model, key, build):
    """The model's compiled product for `key`, made by `build()` if absent
    (the oldest of more than `CACHED_CONFIGURATIONS` is then dropped)."""
    cache = compiled_products(model)
    if key not in cache:
        cache[key] = build()
        _evict_oldest(cache)
    return cache[key]


def _batch_signature(x, y):
    """What of a batch `(x, y)` changes a trace of the products.

    The nesting, and each array's dtype and shape past the batch dimension
    (its rank included); not the batch size.
    """
    leaves = keras.tree.flatten((x, y))
    structure = keras.tree.map_structure(lambda _: None, (x, y))
    # Read from the arrays' metadata: a backend tensor on a device is not
    # copied back to the host for it.
    return repr(structure), tuple(
        (tuple(a.shape)[1:] if ops.is_tensor(a) else np.shape(a)[1:],
         keras.backend.standardize_dtype(
             a.dtype if ops.is_tensor(a) else np.asarray(a).dtype))
        for a in leaves
    )


def compiled_products(model):
    """The model's cache of compiled products (created on first use).

    It is kept on the model itself, outside Keras' attribute tracking (not
    saved, not a weight), so that it lives and dies with the model: a
    module-level table keyed by model would keep every model alive through
    the closures it holds.
    """
    cache = model.__dict__.get(_CACHE_ATTRIBUTE)
    if cache is None:
        cache = {}
        object.__setattr__(model, _CACHE_ATTRIBUTE, cache)
    return cache


def compiled_loss_key(model):
    """What the products of `loss=None` depend on: the compiled loss.

    A Distiller's objective is made of its student loss (replaced by each
    `compile`), its distillation losses and their weights.
    """
    if keras_compat.is_distiller(model):
        return (
            id(keras_compat.distiller_student_loss(model)),
            float(model.student_loss_weight),
            tuple(id(loss) for loss in model.distillation_losses),
            tuple(float(w) for w in model.distillation_loss_weights),
        )
    return id(keras_compat.compiled_loss(model))


def identity_key(value):
    """A cache key for a layer or loss: its value when a name, else its id."""
    if value is None or isinstance(value, str):
        return value
    return ("object", id(value))


def model_uses_xla(model):
    """Whether Keras compiles this model's train/predict steps with XLA."""
    try:
        return model.jit_compile is True
    except (AttributeError, ValueError):
        return False


def _identity(loss_fn):
    return loss_fn


def to_tensors(nest):
    return keras.tree.map_structure(ops.convert_to_tensor, nest)


def _all_tensors(nest):
    """Whether every array of `nest` is already a backend tensor."""
    leaves = keras.tree.flatten(nest)
    return bool(leaves) and all(ops.is_tensor(leaf) for leaf in leaves)


def top_hessian_eigenvalue(
    model,
    x,
    y,
    *,
    layer=None,
    loss=None,
    method="power",
    max_iterations=20,
    tolerance=1e-3,
    hvp="forward_over_back",
    training=False,
    initial_vector=None,
    seed=None,
):
    """The largest Hessian eigenvalue of one layer's weights, on one batch.

    Restricting the Hessian to the output-side layer is the diagonal-block
    approximation of the two-phase paper: the model runs once up to the layer's input,
    and each Hessian-vector product runs through the layer and what follows
    it only. See `HessianEigenvalueEstimator` for the arguments; use that
    class to reuse compiled products across calls (as the callbacks do).

    Example:

    >>> import numpy as np, keras
    >>> from keras_lrphase import top_hessian_eigenvalue
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> x = np.eye(3, dtype="float32"); y = np.zeros((3, 2), "float32")
    >>> result = top_hessian_eigenvalue(model, x, y, loss="mse",
    ...                                 method="lanczos", seed=0)
    >>> round(result.value, 3), result.converged
    (1.333, True)

    Returns:
        A `HessianEigenvalueResult` with `.value`, `.vector`,
        `.iterations` and `.converged`.

    Raises:
        ValueError: if the estimate is not finite (an overflowing batch,
            non-finite weights). `HessianEigenvalueEstimator` returns NaN
            instead, which the callbacks treat as "no decision this epoch".

    References:
        "Achieving Small-Batch Accuracy with Large-Batch Scalability via
        Adaptive Learning Rate Adjustment" (ICLR 2022 submission),
        Section 3.2 and equations 8-10.
    """
    estimator = HessianEigenvalueEstimator(
        layer=layer,
        loss=loss,
        method=method,
        max_iterations=max_iterations,
        tolerance=tolerance,
        hvp=hvp,
        training=training,
        seed=seed,
    )
    result = estimator(model, x, y, initial_vector=initial_vector)
    if not np.isfinite(result.value):
        raise ValueError(
            f"The Hessian eigenvalue of model {model.name!r} is not finite "
            f"({result.value}): the loss or its derivatives overflow on this "
            "batch (check the inputs' scale) or the weights are not finite."
        )
    return result
