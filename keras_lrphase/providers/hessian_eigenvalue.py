"""The largest Hessian eigenvalue as a metric that callbacks share.

`TwoPhaseLR` needs the eigenvalue from its switch epoch on, `HessianMonitor`
every few epochs. Both get it from a `HessianEigenvalueProvider`: one per
model, batch and estimator configuration, which computes it at most once per
optimizer step and keeps the warm-start vector (the previous eigenvector)
for the next estimate. A non-finite estimate (NaN weights, an overflowing
batch) is reported as NaN and its vector is dropped, so the next estimate
starts from the seeded random vector instead of failing.

In a data-parallel run each worker's provider estimates on the batch that
worker was given: in a multi-process run (JAX `DataParallel`, Horovod) its
own shard, so the estimates differ and the callbacks' reducer averages them
(`keras_lrphase.distributed`), as the paper's 8 workers x 1024 samples
setting implies. Under `tf.distribute.MirroredStrategy` (one process) the
whole batch is evaluated on one device, in the strategy's cross-replica
context, and the estimate equals the single-device one.
"""

import base64
import hashlib
import inspect
import math
import time
import weakref

import keras
import numpy as np

from keras_lrphase.backend import keras_compat
from keras_lrphase.controllers.controller import HESSIAN_EIGENVALUE
from keras_lrphase.hessian.batch import first_batch
from keras_lrphase.hessian.batch import validate_batch
from keras_lrphase.hessian.estimator import HessianEigenvalueEstimator

ITERATIONS = "hessian_iterations"
SECONDS = "hessian_time"


class HessianEigenvalueProvider:
    """Largest Hessian eigenvalue of one layer on one fixed batch.

    Args:
        data: `(x, y)` arrays or a `tf.data.Dataset` whose first batch is
            used (read once, here).
        layer: Layer, layer name, None (the last layer with trainable
            weights) or `"all"`. Defaults to `None`.
        eigen_kwargs: Dict or None. Arguments of
            `HessianEigenvalueEstimator` (`method`, `max_iterations`,
            `tolerance`, `hvp`, `training`, `loss`, `seed`; `seed` defaults
            to 0, so a resumed run draws the same first vector).
        estimator: Callable or None. Replaces the built-in estimator:
            `estimator(model, x, y, initial_vector=None)` returning an object
            with `.value`, `.vector` and `.iterations`. Excludes `layer` and
            `eigen_kwargs`.
        argument: String. The caller's argument name for `data`, used in
            error messages. Defaults to `"data"`.

    Example:

    >>> import numpy as np, keras
    >>> from keras_lrphase.providers import HessianEigenvalueProvider
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> model.compile("sgd", "mse")
    >>> x = np.eye(3, dtype="float32"); y = np.zeros((3, 2), "float32")
    >>> provider = HessianEigenvalueProvider((x, y))
    >>> round(provider.compute(model).value, 3)
    1.333

    References:
        "Achieving Small-Batch Accuracy with Large-Batch Scalability via
        Adaptive Learning Rate Adjustment" (ICLR 2022 submission),
        Section 3.2.
    """

    metric = HESSIAN_EIGENVALUE

    def __init__(self, data, *, layer=None, eigen_kwargs=None, estimator=None,
                 argument="data"):
        if eigen_kwargs is not None and not isinstance(eigen_kwargs, dict):
            raise ValueError(
                "Argument `eigen_kwargs` must be a dict or None. "
                f"Received: eigen_kwargs={eigen_kwargs!r}"
            )
        eigen_kwargs = dict(eigen_kwargs or {})
        if "layer" in eigen_kwargs:
            raise ValueError(
                "Pass the layer as the `layer` argument, not in "
                f"`eigen_kwargs`. Received: eigen_kwargs={eigen_kwargs!r}"
            )
        if estimator is not None:
            if not callable(estimator) or not _accepts_initial_vector(estimator):
                raise ValueError(
                    "Argument `estimator` must be callable as "
                    "`estimator(model, x, y, initial_vector=None)`. "
                    f"Received: estimator={estimator!r}"
                )
            if layer is not None or eigen_kwargs:
                raise ValueError(
                    "Arguments `layer` and `eigen_kwargs` configure the "
                    "default estimator and cannot be combined with "
                    f"`estimator`. Received: layer={layer!r}, "
                    f"eigen_kwargs={eigen_kwargs!r}"
                )
        self.x, self.y = first_batch(data, name=argument)
        validate_batch(self.x, self.y)
        self.argument = argument
        if estimator is None:
            eigen_kwargs.setdefault("seed", 0)
            estimator = HessianEigenvalueEstimator(layer=layer, **eigen_kwargs)
            self.key = ("default", _layer_key(layer),
                        tuple(sorted((k, repr(v)) for k, v in eigen_kwargs.items())),
                        _fingerprint(self.x, self.y))
        else:
            self.key = ("custom", id(estimator), _fingerprint(self.x, self.y))
        self.estimator = estimator
        self.vector = None
        self.last_result = None
        self.last_seconds = None
        self._computed_at = None
        self._tensors = None
        self._checked = None  # (model, compiled loss) the check passed for

    def check(self, model):
        """Checks, before training, that the estimate can run on `model`.

        Builds the estimator's restriction of `model` (the layer must exist
        and be part of it) and evaluates the loss once on the batch (shapes
        and labels must fit the model's loss). Once per model and compiled
        loss: the `fit` calls after the first (a program that calls `fit`
        once per round) do not evaluate it again.
        """
        if not isinstance(self.estimator, HessianEigenvalueEstimator):
            return
        loss = keras_compat.compiled_loss(model)
        checked = self._checked
        if checked is not None and checked[0]() is model and (
            checked[1] is None if loss is None else checked[1]() is loss
        ):
            return
        self.estimator.check(model, *self._device_batch(),
                             argument=self.argument)
        self._checked = (weakref.ref(model),
                         None if loss is None else weakref.ref(loss))

    def _device_batch(self):
        """The batch as the backend's tensors, copied to the device once
        (the batch was checked at construction), not at every estimate."""
        if self._tensors is None:
            self._tensors = keras.tree.map_structure(
                keras.ops.convert_to_tensor, (self.x, self.y))
        return self._tensors

    def compute(self, model):
        """The estimate at the model's current step (computed once per step).

        Returns:
            The estimator's result; its `value` is NaN when not finite.
        """
        step = (id(model), keras_compat.raw_step(model.optimizer)
                if getattr(model, "optimizer", None) is not None else None)
        if self._computed_at == step and self.last_result is not None:
            return self.last_result
        start = time.perf_counter()
        x, y = self.x, self.y
        if isinstance(self.estimator, HessianEigenvalueEstimator):
            x, y = self._device_batch()
        result = self.estimator(model, x, y, initial_vector=self.vector)
        vector = [np.array(keras.ops.convert_to_numpy(v)) for v in result.vector]
        finite = math.isfinite(float(result.value)) and all(
            np.all(np.isfinite(v)) for v in vector
        )
        self.vector = vector if finite else None
        self.last_result = result
        self.last_seconds = time.perf_counter() - start
        self._computed_at = step
        return result

    def logs(self, result):
        """The log entries of a result (NaN for an epoch without one):
        the eigenvalue, the solver's iterations and the seconds the
        estimate took (`hessian_time`)."""
        if result is None:
            return {HESSIAN_EIGENVALUE: math.nan, ITERATIONS: math.nan,
                    SECONDS: math.nan}
        seconds = self.last_seconds if result is self.last_result else None
        return {
            HESSIAN_EIGENVALUE: float(result.value),
            ITERATIONS: int(result.iterations),
            SECONDS: math.nan if seconds is None else float(seconds),
        }

    # -- state ----------------------------------------------------------------------
    def get_state(self):
        """The warm-start vector, JSON-serialisable."""
        if self.vector is None:
            return {"vector": None}
        return {"vector": [_encode_array(a) for a in self.vector]}

    def set_state(self, state):
        """Restores `get_state()`'s output."""
        vector = state.get("vector") if isinstance(state, dict) else None
        self.vector = None if vector is None else [_decode_array(a) for a in vector]
        self._computed_at = None
        self.last_result = None
        self.last_seconds = None

    def reset(self):
        """Forgets the warm start (a new run)."""
        self.vector = None
        self._computed_at = None
        self.last_result = None
        self.last_seconds = None


def _accepts_initial_vector(estimator):
    try:
        parameters = inspect.signature(estimator).parameters
    except (TypeError, ValueError):  # a builtin: let the call tell
        return True
    return "initial_vector" in parameters or any(
        p.kind is p.VAR_KEYWORD for p in parameters.values())


def _layer_key(layer):
    if layer is None or isinstance(layer, str):
        return layer
    return ("layer", id(layer))


def _fingerprint(x, y):
    digest = hashlib.blake2b(digest_size=16)
    for array in keras.tree.flatten((x, y)):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _encode_array(array):
    array = np.ascontiguousarray(array)
    return {
        "dtype": array.dtype.str,
        "shape": list(array.shape),
        "data": base64.b64encode(array.tobytes()).decode("ascii"),
    }


def _decode_array(entry):
    data = base64.b64decode(entry["data"])
    return np.frombuffer(data, dtype=np.dtype(entry["dtype"])).reshape(
        entry["shape"]
    ).copy()
