"""Records the largest Hessian eigenvalue of one layer at epoch ends."""

import dataclasses

from keras_lrphase._validation import check_integer
from keras_lrphase.callbacks.controller_callback import ControllerCallback
from keras_lrphase.controllers.controller import HESSIAN_EIGENVALUE
from keras_lrphase.controllers.controller import Controller
from keras_lrphase.controllers.controller import Decision
from keras_lrphase.providers.hessian_eigenvalue import HessianEigenvalueProvider


@dataclasses.dataclass(frozen=True)
class _MonitorState:
    next_epoch: int = 0
    lr_factor: float = 1.0


class _EveryFewEpochs(Controller):
    """Asks for the eigenvalue every `frequency` epochs; decides nothing."""

    name = "hessian_monitor"
    state_class = _MonitorState
    FIELDS = {"next_epoch": "count", "lr_factor": "positive"}
    controls_learning_rate = False

    def __init__(self, frequency):
        super().__init__()
        self.frequency = check_integer("frequency", frequency, 1)

    def required_metrics(self, epoch):
        return (HESSIAN_EIGENVALUE,) if (epoch + 1) % self.frequency == 0 else ()

    def _transition(self, state, epoch, metrics):
        return dataclasses.replace(state, next_epoch=epoch + 1), Decision()

    def get_config(self):
        return {"frequency": self.frequency}


class HessianMonitor(ControllerCallback):
    """Logs the largest Hessian eigenvalue of one layer every few epochs.

    At the end of every `frequency`-th epoch it estimates the largest
    eigenvalue of the loss Hessian restricted to `layer` (by default the
    output layer) on one fixed batch, warm-starting from the previous
    estimate, and writes `logs["hessian_max_eigenvalue"]`,
    `logs["hessian_iterations"]` and `logs["hessian_time"]` (the seconds
    the estimate took; NaN in the other epochs, so that
    `CSVLogger`, which fixes its columns at the first epoch, records them),
    so `History`, `CSVLogger` and `TensorBoard` placed after it record
    them. Nothing runs per batch. With `TwoPhaseLR` on the same batch in
    the same `fit`, the estimate is computed once per epoch and shared.
    On a `keras.distillation.Distiller` the layer is the student's and the
    loss the distillation objective the student trains on
    (`keras_lrphase.hessian.distillation`).

    Args:
        data: `(x, y)` arrays, or a `tf.data.Dataset` of which the first
            batch is used. One large batch (the paper uses 8192 samples).
        frequency: Int >= 1. Estimate every `frequency` epochs. Defaults
            to `1`.
        layer: A layer, layer name, `None` (the last layer with trainable
            weights) or `"all"`. Defaults to `None`.
        estimator: Optional callable `estimator(model, x, y,
            initial_vector=None)` returning an object with `.value`,
            `.vector` and `.iterations`; it replaces the built-in estimator
            (a hook for tests and custom curvature measures). Defaults to
            `None`.
        reducer: `MetricReducer` or None. Averages the estimate across
            workers (each worker estimates on its own `data`). Defaults to
            `None`: `keras_lrphase.distributed.default_reducer()`.
        state_path: Path or None. See `ResumableCallback`.
        **eigen_kwargs: Arguments of `HessianEigenvalueEstimator`
            (`method`, `max_iterations`, `tolerance`, `hvp`, `training`,
            `loss`, `seed`).

    Example:

    >>> import numpy as np, keras
    >>> from keras_lrphase import HessianMonitor
    >>> x = np.random.rand(64, 4).astype("float32")
    >>> y = np.random.randint(0, 3, 64)
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True))
    >>> history = model.fit(x, y, epochs=2, verbose=0,
    ...                     callbacks=[HessianMonitor((x, y), seed=0)])
    >>> len(history.history["hessian_max_eigenvalue"])
    2

    References:
        "Achieving Small-Batch Accuracy with Large-Batch Scalability via
        Adaptive Learning Rate Adjustment" (ICLR 2022 submission),
        Section 3.2.
    """

    def __init__(self, data, *, frequency=1, layer=None, estimator=None,
                 reducer=None, state_path=None, **eigen_kwargs):
        if estimator is not None and eigen_kwargs:
            raise ValueError(
                "Pass either `estimator` or eigenvalue arguments, not both. "
                f"Received: eigen_kwargs={sorted(eigen_kwargs)}"
            )
        provider = HessianEigenvalueProvider(
            data, layer=layer, eigen_kwargs=eigen_kwargs or None,
            estimator=estimator,
        )
        super().__init__(
            _EveryFewEpochs(frequency), providers=[provider], reducer=reducer,
            state_path=state_path,
        )
        self.frequency = self.controller.frequency

    @property
    def last_result(self):
        """The provider's latest estimate (shared with other callbacks)."""
        return self.providers[0].last_result

    @property
    def x(self):
        return self.providers[0].x

    @property
    def y(self):
        return self.providers[0].y
