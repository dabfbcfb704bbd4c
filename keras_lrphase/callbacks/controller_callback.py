"""The one Keras adapter for every learning-rate controller of the package.

`ControllerCallback` drives any `keras_lrphase.controllers.controller.
Controller` from `model.fit`: at each epoch end it gathers the metrics the
controller asks for (the monitored epoch log, and e.g. the Hessian
eigenvalue from a shared provider), averages them across workers with the
reducer, lets the controller decide, applies the decision to the learning
rate through `ControlledLearningRate` (clamped at `min_lr`), writes its
`logs` entries (every key at every epoch, NaN when not computed), prints the
decisions with `verbose=1`, stops training on a stop decision, and keeps
its state resumable (`ResumableCallback`). `TwoPhaseLR`, `AutoDecay` and
`HessianMonitor` are thin classes on top of it.
"""

import math
import sys

from keras_lrphase import _warnings
from keras_lrphase._validation import check_bool
from keras_lrphase._validation import check_name
from keras_lrphase._validation import check_number
from keras_lrphase._validation import check_verbose
from keras_lrphase._validation import fail
from keras_lrphase.backend import keras_compat
from keras_lrphase.callbacks.momentum_correction import check_momentum
from keras_lrphase.callbacks.resumable_callback import ResumableCallback
from keras_lrphase.controllers.controller import LOSS
from keras_lrphase.distributed.reduction import MetricReducer
from keras_lrphase.distributed.reducer_selection import default_reducer
from keras_lrphase.distributed.tf_distribute import check_fit_strategy
from keras_lrphase.schedules.controlled_learning_rate import ControlledLearningRate
from keras_lrphase.schedules.controlled_learning_rate import (
    supports_momentum_correction,
)

LEARNING_RATE = "learning_rate"
# `_warmup_epochs_given` of a controller without `warmup_epochs`.
_NO_WARMUP_ARGUMENT = object()


class ControllerCallback(ResumableCallback):
    """Runs a learning-rate controller inside `model.fit`.

    Use it to plug a controller of your own into Keras; the package's
    controllers have their own callbacks (`TwoPhaseLR`, `AutoDecay`).

    The decision at the end of epoch `e` reaches the train step from epoch
    `e + 1` on. Each epoch it writes `logs["learning_rate"]`: the learning
    rate of the epoch's last step (before the epoch-end decisions), so
    `History`, `CSVLogger` and `TensorBoard` placed after it record it.

    Args:
        controller: A `keras_lrphase.controllers.controller.Controller`.
        monitor: String. The epoch log the controller's `"loss"` metric is
            read from. Defaults to `"loss"`.
        providers: Sequence of metric providers (objects with `metric`,
            `key`, `check(model)`, `compute(model)`, `logs(result)`,
            `get_state()`, `set_state()`, `reset()`), shared with the other
            callbacks of the model that ask for the same. Defaults to `()`.
        reducer: `keras_lrphase.distributed.reduction.MetricReducer` or
            None. Averages the metrics across workers before each decision.
            Defaults to `None`: `keras_lrphase.distributed.default_reducer()`
            (`JaxProcessReducer` in a multi-process JAX run,
            `HorovodReducer` in a Horovod job of several ranks,
            `TfDistributeReducer` inside the `scope()` of a multi-worker
            `tf.distribute.MultiWorkerMirroredStrategy`, else
            `LocalReducer`, one process).
        state_path: Path or None. See `ResumableCallback`.
        verbose: 0 or 1. With 1, prints one line per decision event.
            Defaults to `0`.
        min_lr: Float >= 0 or None. Floor on the learning rate: a decay
            that would take it below `min_lr` is clamped to it. Defaults
            to `None`.
        momentum_correction: Bool. Rescale SGD/LARS velocities by
            lr_new / lr_old at every epoch start where the learning rate in
            force changed (Goyal et al. 2017). Defaults to `False`: Keras'
            own update rule, since its measured effect on the final
            accuracy was not consistent (docs/results/index.md,
            `cifar10-momentum-cpu`).

    Example:

    >>> import numpy as np, keras
    >>> from keras_lrphase import AutoDecayController, ControllerCallback
    >>> x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    >>> y = x @ np.ones((4, 1), "float32")
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(0.05), loss="mse")
    >>> callback = ControllerCallback(AutoDecayController(window=3))
    >>> history = model.fit(x, y, batch_size=8, epochs=4, verbose=0,
    ...                     callbacks=[callback])
    >>> len(history.history["learning_rate"])
    4
    """

    def __init__(
        self,
        controller,
        *,
        monitor=LOSS,
        providers=(),
        reducer=None,
        state_path=None,
        verbose=0,
        min_lr=None,
        momentum_correction=False,
    ):
        super().__init__(state_path=state_path)
        from keras_lrphase.controllers.controller import Controller

        if not isinstance(controller, Controller):
            fail("controller", controller,
                 "must be a keras_lrphase.controllers.controller.Controller")
        if reducer is None:
            reducer = default_reducer()
        if not isinstance(reducer, MetricReducer):
            fail("reducer", reducer,
                 "must be a keras_lrphase.distributed.reduction.MetricReducer")
        self.controller = controller
        self.monitor = check_name("monitor", monitor)
        self.providers = list(providers)
        self.reducer = reducer
        self.verbose = check_verbose(verbose)
        self.min_lr = (
            None if min_lr is None else check_number("min_lr", min_lr, minimum=0.0)
        )
        self.momentum_correction = check_bool(
            "momentum_correction", momentum_correction
        )
        self.state_name = controller.name
        self._control = None
        self._warmup_epochs_given = _NO_WARMUP_ARGUMENT
        self._seen_monitor = False
        self._warned_two_estimates = False

    @property
    def controls_learning_rate(self):
        """Whether the controller changes the learning rate."""
        return getattr(self.controller, "controls_learning_rate", True)

    # -- Keras hooks -----------------------------------------------------------
    def set_model(self, model):
        super().set_model(model)
        self.providers = [self._store.shared_provider(p) for p in self.providers]
        if not self.controls_learning_rate:
            return
        if getattr(model, "optimizer", None) is None:
            raise ValueError(
                f"{type(self).__name__} needs a compiled model with an "
                f"optimizer. Received a model without an optimizer: {model!r}. "
                "Call `model.compile(optimizer=...)` before `fit`."
            )
        if self.momentum_correction and not supports_momentum_correction(
            model.optimizer
        ):
            fail(
                "momentum_correction", True,
                "applies to keras.optimizers.SGD, keras_lrphase.LARS and "
                "optimizers that define `learning_rate_slots()` (their "
                "velocity holds the learning rate); the optimizer is "
                f"{type(model.optimizer).__name__}",
            )
        if self.momentum_correction:
            check_momentum("momentum_correction", True, model.optimizer)
        self._control = ControlledLearningRate.install(model.optimizer)
        self._control.acquire(model)

    def on_train_begin(self, logs=None):
        check_fit_strategy(self.model, type(self).__name__)
        super().on_train_begin(logs)
        self._seen_monitor = False
        self._take_warmup_epochs()
        epochs = (self.params or {}).get("epochs")
        bind = getattr(self.controller, "set_epochs", None)
        if bind is not None and epochs is not None:
            if self.controller.epochs is None:
                bind(epochs)
            elif self.controller.epochs != epochs:
                _warnings.warn(
                    f"{type(self).__name__}: its epoch budget is "
                    f"epochs={self.controller.epochs}, but `fit` runs "
                    f"epochs={epochs}. Pass the same budget, or leave `epochs` "
                    "unset to use fit's.")
        for provider in self.providers:
            provider.check(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        if self._control is None:
            return
        step = keras_compat.raw_step(self.model.optimizer)
        self._control.enter_epoch(step)
        if self.momentum_correction:
            self._control.correct_momentum(step)
        self._control.refresh(self.model)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        controller = self.controller
        learning_rate = (
            self._control.last_step_value() if self._control is not None else None
        )
        required = controller.required_metrics(epoch)
        metrics, results = {}, {}
        for name in required:
            if name == LOSS:
                metrics[LOSS] = self._monitored(epoch, logs)
                continue
            provider = self._provider_for(name)
            results[name] = provider.compute(self.model)
            metrics[name] = float(results[name].value)
        reduced = self.reducer.reduce_mean(metrics)
        if not isinstance(reduced, dict) or set(reduced) != set(metrics):
            fail("reducer", self.reducer,
                 f"must return a dict with the keys it was given {sorted(metrics)}; "
                 f"it returned {reduced!r}")
        metrics = reduced

        before = controller.state
        decision = controller.decide(epoch, metrics)
        applied = 1.0
        if decision.factor != 1.0 and self._control is not None:
            applied = self._control.scale_by(
                controller.name, decision.factor, self.min_lr
            )
        if decision.stop:
            self.model.stop_training = True
        self._store.publish(epoch, controller.name, decision.events)

        if learning_rate is not None:
            logs[LEARNING_RATE] = learning_rate
        for provider in self.providers:
            result = results.get(provider.metric)
            entries = provider.logs(result)
            if result is None:
                # Another callback of the same fit may have logged its
                # estimate this epoch: never overwrite it with NaN.
                for key, value in entries.items():
                    logs.setdefault(key, value)
                continue
            entries[provider.metric] = metrics[provider.metric]
            self._check_one_estimate(epoch, logs, provider.metric,
                                     entries[provider.metric])
            logs.update(entries)
        logs.update(self._controller_logs(epoch, before, metrics))
        if self.verbose:
            opening = "\n" if self._line_may_be_open() else ""
            for line in self._describe(epoch, before, decision, metrics, applied):
                keras_compat.print_msg(opening + line)
                opening = ""
        self._note_half_budget(epoch)
        self._end_epoch(epoch)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        if self._control is not None:
            self._control.release(self.model)

    def summary(self):
        """What the controller decided so far, for a run's summary.

        Epochs are numbered as Keras prints them, from 1: "decay after
        epoch 44" is the decision at the end of the 44th epoch (Keras'
        `on_epoch_end(43, ...)`).

        Returns:
            A dict with `"decay_epochs"`, the epochs after which the
            controller decayed the learning rate; subclasses add their own
            fields.
        """
        return {"decay_epochs": [e + 1 for e in
                                 getattr(self.controller, "decay_epochs", ())]}

    # -- helpers -------------------------------------------------------------------
    def _take_warmup_epochs(self):
        """Sets the controller's `warmup_epochs` for this `fit`.

        Given as None, it is the `warmup_epochs` of the `GradualWarmup` in
        the same `fit` (0 without one); given, it must equal that one's.
        """
        given = self._warmup_epochs_given
        if given is _NO_WARMUP_ARGUMENT or self._control is None:
            return
        ramp = self._control.warmup_epochs_in_fit(self)
        if given is not None and ramp is not None and given != ramp:
            raise ValueError(
                f"Argument `warmup_epochs` of {type(self).__name__} must equal "
                "the `warmup_epochs` of the GradualWarmup in the same `fit` "
                f"({ramp}), or be left unset to take it. Received: "
                f"warmup_epochs={given!r}")
        if given is None:
            self.controller.warmup_epochs = ramp if ramp is not None else 0
            check = getattr(self.controller, "_check_budget", None)
            if check is not None:
                check()

    def _monitored(self, epoch, logs):
        value = logs.get(self.monitor)
        if value is not None:
            self._seen_monitor = True
            return float(value)
        message = (
            f"{type(self).__name__}: the monitored value `{self.monitor}` is "
            f"not in the epoch logs (available: {sorted(logs)})"
        )
        if not self._seen_monitor:
            raise ValueError(
                f"{message}. Argument `monitor` must name an epoch log. "
                f"Received: monitor={self.monitor!r}"
            )
        _warnings.warn(f"{message}; no decision at epoch {epoch + 1}.")
        return math.nan

    def _note_half_budget(self, epoch):
        """Says once when half of fit's epochs passed without a decision."""
        epochs = (self.params or {}).get("epochs")
        if not epochs or epoch + 1 != (epochs + 1) // 2 or epochs < 4:
            return
        message = self._undecided_message()
        if message is not None:
            _warnings.warn(
                f"{type(self).__name__}: half of the {epochs} epochs have run "
                f"(epoch {epoch + 1}) and {message}")

    def _undecided_message(self):
        """The end of the half-budget note when nothing was decided yet, or
        None when the controller has decided something."""
        return None

    def _check_one_estimate(self, epoch, logs, key, value):
        """Warns once when this epoch's log already holds another estimate."""
        logged = logs.get(key)
        if (logged is None or not math.isfinite(float(logged))
                or float(logged) == value):
            return
        if not self._warned_two_estimates:
            self._warned_two_estimates = True
            _warnings.warn(
                f"{type(self).__name__}: at epoch {epoch + 1} another callback "
                f"of this fit logged `{key}`={float(logged):.6g}, estimated on "
                f"another batch or with other settings; this callback's "
                f"estimate {value:.6g} replaces it in the logs. Give the "
                "callbacks the same batch and estimator arguments to share "
                "one estimate per epoch.")

    def _provider_for(self, metric):
        for provider in self.providers:
            if provider.metric == metric:
                return provider
        raise ValueError(
            f"{type(self).__name__}: the controller asks for `{metric}`, which "
            "no metric provider of this callback supplies."
        )

    def _line_may_be_open(self):
        """Whether an epoch's decisions may print in the middle of a line.

        Keras' progress bar (`fit(verbose=1)`) leaves the epoch's line open
        until after the callbacks, and so does a progress line rewritten in
        place on a terminal (`keras-lrphase compare`, `fit(verbose=0)`):
        the decisions then start on a new line. One line per epoch
        (`verbose=2`) or output to a file needs no blank line before them.
        """
        verbose = (self.params or {}).get("verbose")
        return verbose == 1 or (verbose == 0 and sys.stdout.isatty())

    def _controller_logs(self, epoch, before, metrics):
        """The controller's own log entries (every key at every epoch)."""
        return {}

    def _describe(self, epoch, before, decision, metrics, applied):
        """Lines printed with `verbose=1` for this epoch's decision."""
        name = type(self).__name__
        lines = []
        if decision.factor != 1.0:
            lines.append(
                f"Epoch {epoch + 1}: {name} decaying the learning rate by "
                f"{applied:g}."
            )
        if decision.stop:
            lines.append(f"Epoch {epoch + 1}: {name} stopping training.")
        return lines

    # -- state -----------------------------------------------------------------------
    def _next_epoch(self):
        return self.controller.next_epoch

    def _payload(self):
        payload = {
            "controller": self.controller.get_state(),
            "providers": {p.metric: p.get_state() for p in self.providers},
        }
        if self._control is not None:
            payload["learning_rate"] = self._control.get_state()
        return payload

    def _restore(self, payload):
        self.controller.set_state(payload["controller"])
        for provider in self.providers:
            saved = payload.get("providers", {}).get(provider.metric)
            if saved is not None:
                provider.set_state(saved)
        if self._control is not None and "learning_rate" in payload:
            self._control.set_state(payload["learning_rate"])

    def _start_new_run(self):
        self.controller.reset()
        for provider in self.providers:
            provider.reset()
        if self._control is not None:
            self._control.forget_factor(self.controller.name)

    def _is_chief(self):
        return self.reducer.is_chief

    def _world_size(self):
        return self.reducer.world_size
