"""The two-phase LR framework of the two-phase paper as a Keras callback."""

import base64
import json
import math
import numbers
import os
import tempfile
import warnings

import keras
import numpy as np

from keras_lrphase.callbacks._learning_rate import install_on_model
from keras_lrphase.callbacks._learning_rate import last_step_learning_rate
from keras_lrphase.controllers.two_phase_controller import CONVERGENCE
from keras_lrphase.controllers.two_phase_controller import TwoPhaseController
from keras_lrphase.distributed.reduction import LocalReducer
from keras_lrphase.distributed.reduction import MetricReducer
from keras_lrphase.hessian.batch import first_batch
from keras_lrphase.hessian.batch import validate_batch
from keras_lrphase.hessian.estimator import HessianEigenvalueEstimator

FACTOR_NAME = "two_phase_lr"
STATE_FILE_VERSION = 1


class TwoPhaseLR(keras.callbacks.Callback):
    """Decays the learning rate when loss and Hessian sharpness rise together.

    Use it to train with a large batch and still reach small-batch accuracy:
    the learning rate stays high while the training loss still falls
    (exploration), keeps it for some extra epochs after the loss plateaus,
    then (convergence) halves it at each epoch end where both the largest
    Hessian eigenvalue of the output-side layer and the training loss rose
    since the previous epoch run at the same learning rate. The decision
    logic is `keras_lrphase.controllers.TwoPhaseController` (its docstring
    states the algorithm exactly); this callback feeds it the epoch loss
    (`logs[monitor]`) and, from the switch epoch on only, the eigenvalue
    estimated on one fixed batch (`hessian_data`), warm-started from the
    previous epoch's eigenvector.

    A decay multiplies whatever learning rate is in force: a float, any
    `keras.optimizers.schedules.LearningRateSchedule` (e.g.
    `CosineDecayRestarts`), the ramp of `GradualWarmup`, through the
    package's `ControlledLearningRate` (factor `"two_phase_lr"`), installed
    in `set_model`. The callback has no per-batch hooks.

    Each epoch it writes to `logs` (so History, CSVLogger and TensorBoard
    record them): `learning_rate` (the learning rate of the epoch's last
    step, before this epoch's decision), `lrphase_phase` (0 exploration, 1
    convergence: the phase after this epoch's decision, so 1 from the
    switch epoch on) and, when computed, `hessian_max_eigenvalue` and
    `hessian_iterations`.

    Resuming: with `state_path`, the controller's state and the last
    eigenvector are written there (JSON, atomically) at each epoch end and
    read back at the start of training. Together with
    `keras.callbacks.BackupAndRestore` (weights, optimizer state, epoch), an
    interrupted run then makes the same decisions as an uninterrupted one.
    Training must start at the epoch the saved state expects next (an error
    otherwise, e.g. a stale `state_path` from another run). Without
    `state_path`, a later `fit` call on the same callback continues the
    controller if it starts at the next epoch (`initial_epoch`) and starts a
    new run if it starts at epoch 0.

    Args:
        hessian_data: Tuple `(x, y)` of arrays or a `tf.data.Dataset` of
            `(x, y)` batches, whose first batch is the one batch every
            eigenvalue is estimated on (read once, at the start of the
            first training; use a fixed, unshuffled batch for reproducible
            decisions).
        epochs: Int >= 1. The epoch budget (sets the default patience).
        warmup_epochs: Int >= 0. Epochs ignored by plateau detection (the
            warmup itself is `GradualWarmup`'s). Defaults to `0`.
        plateau_patience: Int >= 1 or None. Defaults to `None`:
            `max(1, round(0.05 * epochs))`.
        min_delta: Float >= 0. Least loss decrease that counts as an
            improvement. Defaults to `0.0`.
        extra_epochs_fraction: Float >= 0. alpha / n: extra epochs after a
            plateau detected with n epochs completed. Defaults to `1/3`.
        decay_factor: Float in (0, 1). The paper's beta. Defaults to `0.5`.
        monitor: Str. The epoch-level log entry used as the training loss.
            Defaults to `"loss"`.
        layer: Layer, layer name or None: the layer whose Hessian block is
            used, passed to the default estimator. Defaults to `None` (the
            last layer with trainable weights).
        eigen_kwargs: Dict or None. Further arguments of the default
            estimator `keras_lrphase.hessian.estimator.
            HessianEigenvalueEstimator` (`method`, `max_iterations`,
            `tolerance`, `hvp`, `training`, `loss`, `seed`; `seed` defaults
            to `0` here so that a resumed run draws the same first vector).
            Defaults to `None`.
        state_path: Str, path-like or None. JSON file holding the resume
            state. Defaults to `None` (no file).
        verbose: Int 0 or 1. With 1, prints one line per phase change and
            per decay. Defaults to `0`.
        estimator: Callable or None. A hook replacing the default estimator:
            called as `estimator(model, x, y, initial_vector=None)` (with
            `initial_vector` the previous result's `vector`, or None) and
            returning an object with `.value` (float, the largest
            eigenvalue), `.vector` (list of arrays, reused as the next warm
            start and saved in `state_path`) and `.iterations` (int). Used
            to plug in another method or, in tests, scripted eigenvalues.
            Excludes `layer` and `eigen_kwargs`. Defaults to `None`.
        reducer: `keras_lrphase.distributed.reduction.MetricReducer` or
            None. Averages the loss and eigenvalue across workers before
            each decision, so every worker decides alike. Defaults to
            `None`: `LocalReducer()` (a single process).

    Example:

    >>> import numpy as np, keras
    >>> from keras_lrphase.callbacks import TwoPhaseLR
    >>> x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    >>> y = x @ np.ones((4, 1), "float32")
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(0.05), loss="mse")
    >>> callback = TwoPhaseLR((x, y), epochs=6, plateau_patience=1)
    >>> history = model.fit(x, y, batch_size=8, epochs=6, verbose=0,
    ...                     callbacks=[callback])
    >>> sorted(k for k in history.history if k != "loss")
    ['learning_rate', 'lrphase_phase']

    References:
        "Achieving Small-Batch Accuracy with Large-Batch Scalability via
        Adaptive Learning Rate Adjustment" (ICLR 2022 submission),
        Section 3 and Algorithm 1 (two-phase adaptive learning
        rate adjustment), Section 3.2 (Hessian-aware decay).
    """

    def __init__(
        self,
        hessian_data,
        epochs,
        *,
        warmup_epochs=0,
        plateau_patience=None,
        min_delta=0.0,
        extra_epochs_fraction=1 / 3,
        decay_factor=0.5,
        monitor="loss",
        layer=None,
        eigen_kwargs=None,
        state_path=None,
        verbose=0,
        estimator=None,
        reducer=None,
    ):
        super().__init__()
        self.controller = TwoPhaseController(
            epochs,
            warmup_epochs=warmup_epochs,
            plateau_patience=plateau_patience,
            min_delta=min_delta,
            extra_epochs_fraction=extra_epochs_fraction,
            decay_factor=decay_factor,
        )
        batch = first_batch(hessian_data, name="hessian_data")
        validate_batch(*batch)
        if not isinstance(monitor, str) or not monitor:
            raise ValueError(
                "Argument `monitor` must be a non-empty string. "
                f"Received: monitor={monitor!r}"
            )
        if isinstance(verbose, bool) or verbose not in (0, 1):
            raise ValueError(
                f"Argument `verbose` must be 0 or 1. Received: verbose={verbose!r}"
            )
        if eigen_kwargs is not None and not isinstance(eigen_kwargs, dict):
            raise ValueError(
                "Argument `eigen_kwargs` must be a dict or None. "
                f"Received: eigen_kwargs={eigen_kwargs!r}"
            )
        if eigen_kwargs and "layer" in eigen_kwargs:
            raise ValueError(
                "Pass the layer as the `layer` argument, not in "
                f"`eigen_kwargs`. Received: eigen_kwargs={eigen_kwargs!r}"
            )
        if estimator is not None:
            if not callable(estimator):
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
        if reducer is None:
            reducer = LocalReducer()
        if not isinstance(reducer, MetricReducer):
            raise ValueError(
                "Argument `reducer` must be a "
                "keras_lrphase.distributed.reduction.MetricReducer. "
                f"Received: reducer={reducer!r}"
            )
        if state_path is not None and not isinstance(state_path, (str, os.PathLike)):
            raise ValueError(
                "Argument `state_path` must be a path or None. "
                f"Received: state_path={state_path!r}"
            )
        self.hessian_data = hessian_data
        self.monitor = monitor
        self.layer = layer
        self.eigen_kwargs = dict(eigen_kwargs or {})
        self.state_path = None if state_path is None else os.fspath(state_path)
        self.verbose = verbose
        self.estimator = estimator
        self.reducer = reducer
        # Built now so that bad eigenvalue arguments fail at construction.
        self._estimator = (
            estimator if estimator is not None else self._default_estimator()
        )
        self._controlled = None
        self._batch = batch
        self._vector = None
        self._restored = False
        self._started = False

    # -- Keras hooks -----------------------------------------------------------
    def set_model(self, model):
        super().set_model(model)
        self._controlled = install_on_model(model, "TwoPhaseLR")

    def on_train_begin(self, logs=None):
        self._started = False
        self._restored = False
        if self.state_path is not None and os.path.exists(self.state_path):
            self._load_state()
            self._restored = True

    def on_epoch_begin(self, epoch, logs=None):
        if not self._started:
            self._start(epoch)
        # A decay decided at the last epoch end reaches the train step here.
        self._controlled.refresh(self.model)

    def _start(self, epoch):
        self._started = True
        expected = self.controller.next_epoch
        if epoch != expected:
            if epoch == 0 and not self._restored:
                self.controller.reset()
                self._vector = None
            elif self._restored:
                raise ValueError(
                    f"TwoPhaseLR: training starts at epoch {epoch}, but the "
                    f"state in state_path={self.state_path!r} expects epoch "
                    f"{expected} next. Resume at that epoch (with "
                    "`keras.callbacks.BackupAndRestore` or `initial_epoch`), "
                    "or remove the stale state file to start a new run."
                )
            else:
                raise ValueError(
                    f"TwoPhaseLR: training starts at epoch {epoch}, but the "
                    f"controller has seen {expected} epochs and has no state "
                    "for the ones in between. To resume an interrupted run, "
                    "pass the same `state_path` as in the interrupted run."
                )
        # The factor is re-applied here, after every callback's
        # on_train_begin, so that it wins over a restored checkpoint.
        self._controlled.set_factor(FACTOR_NAME, self.controller.lr_factor)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        controller = self.controller
        loss = logs.get(self.monitor)
        if loss is None:
            warnings.warn(
                f"TwoPhaseLR: the monitored value `{self.monitor}` is not in "
                f"the epoch logs (available: {sorted(logs)}); no decision "
                f"at epoch {epoch}.",
                stacklevel=2,
            )
            loss = math.nan
        learning_rate = last_step_learning_rate(
            self._controlled, self.model.optimizer
        )

        values = {"loss": float(loss)}
        result = None
        if controller.wants_eigenvalue(epoch):
            x, y = self._batch
            result = self._estimator(
                self.model, x, y, initial_vector=self._vector
            )
            self._vector = _as_vector(result.vector)
            values["hessian_max_eigenvalue"] = float(result.value)
        values = self.reducer.reduce_mean(values)
        eigenvalue = values.get("hessian_max_eigenvalue")

        before = controller.state
        factor = controller.step(epoch, values["loss"], eigenvalue)
        after = controller.state
        if factor != 1.0:
            self._controlled.set_factor(FACTOR_NAME, controller.lr_factor)

        logs["learning_rate"] = learning_rate
        logs["lrphase_phase"] = 1 if after.phase == CONVERGENCE else 0
        if result is not None:
            logs["hessian_max_eigenvalue"] = eigenvalue
            logs["hessian_iterations"] = int(result.iterations)

        if self.verbose:
            self._report(epoch, before, after, factor, values)
        if self.state_path is not None:
            self._save_state()

    # -- helpers -------------------------------------------------------------------
    def _default_estimator(self):
        kwargs = dict(self.eigen_kwargs)
        kwargs.setdefault("seed", 0)
        return HessianEigenvalueEstimator(layer=self.layer, **kwargs)

    def _report(self, epoch, before, after, factor, values):
        from keras.src.utils.io_utils import print_msg

        if after.phase != before.phase:
            print_msg(
                f"\nEpoch {epoch + 1}: TwoPhaseLR switching to the convergence "
                f"phase (loss plateau at epoch {after.plateau_epoch + 1}, "
                f"{after.switch_epoch - after.plateau_epoch} extra epochs); "
                f"h0={_fmt(after.h0)}, f0={_fmt(after.f0)}."
            )
        if factor != 1.0:
            print_msg(
                f"\nEpoch {epoch + 1}: TwoPhaseLR decaying the learning rate "
                f"by {factor:g} (total factor {after.lr_factor:g}) "
                f"(h={_fmt(values['hessian_max_eigenvalue'])} > "
                f"h0={_fmt(before.h0)}, f={_fmt(values['loss'])} > "
                f"f0={_fmt(before.f0)})."
            )

    def _save_state(self):
        payload = {
            "version": STATE_FILE_VERSION,
            "controller": self.controller.get_state(),
            "eigenvector": (
                None
                if self._vector is None
                else [_encode_array(a) for a in self._vector]
            ),
        }
        text = json.dumps(payload, allow_nan=False)
        directory = os.path.dirname(os.path.abspath(self.state_path))
        os.makedirs(directory, exist_ok=True)
        fd, temp_path = tempfile.mkstemp(
            dir=directory, prefix=".two_phase_lr.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp_path, self.state_path)
        except BaseException:
            if os.path.exists(temp_path):
                os.remove(temp_path)
            raise

    def _load_state(self):
        with open(self.state_path) as f:
            payload = json.load(f)
        if not isinstance(payload, dict) or payload.get("version") != (
            STATE_FILE_VERSION
        ):
            raise ValueError(
                f"The file state_path={self.state_path!r} is not a TwoPhaseLR "
                f"state file (version {STATE_FILE_VERSION})."
            )
        self.controller.set_state(payload["controller"])
        vector = payload.get("eigenvector")
        self._vector = (
            None if vector is None else [_decode_array(a) for a in vector]
        )


def _as_vector(vector):
    return [np.array(keras.ops.convert_to_numpy(v)) for v in vector]


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


def _fmt(value):
    if value is None:
        return "None"
    if isinstance(value, numbers.Real):
        return f"{value:.4g}"
    return str(value)
