"""The two-phase LR framework of the two-phase paper as a Keras callback."""

import math
import numbers

from keras_lrphase.callbacks.controller_callback import ControllerCallback
from keras_lrphase.controllers.controller import HESSIAN_EIGENVALUE
from keras_lrphase.controllers.controller import LOSS
from keras_lrphase.controllers import two_phase_controller
from keras_lrphase.controllers.two_phase_controller import TwoPhaseController
from keras_lrphase.providers.hessian_eigenvalue import HessianEigenvalueProvider

PHASE = "lrphase_phase"


class TwoPhaseLR(ControllerCallback):
    """Decays the learning rate when loss and Hessian sharpness rise together.

    Use it to train with a large batch and still reach small-batch accuracy:
    the learning rate stays high while the training loss still falls
    (exploration), keeps it for some extra epochs after the loss plateaus,
    then (convergence) decays it at each epoch end where both the largest
    Hessian eigenvalue of the output-side layer and the training loss rose
    since the previous epoch run at the same learning rate. The decision
    logic is `keras_lrphase.controllers.TwoPhaseController` (its docstring
    states the algorithm exactly); this callback feeds it the epoch loss
    (`logs[monitor]`) and, from the switch epoch on only, the eigenvalue
    estimated on one fixed batch (`hessian_data`), warm-started from the
    previous estimate. A `HessianMonitor` on the same batch shares the
    estimate: it is computed once per epoch.

    A decay multiplies the learning rate in force (see
    `ControlledLearningRate`): a float learning rate is decayed in place, as
    `ReduceLROnPlateau` does, so it composes with Keras' LR callbacks and
    stays a settable float after `fit`; a `LearningRateSchedule` (e.g.
    `CosineDecayRestarts`) and the ramp of `GradualWarmup` are scaled inside
    the train step. The callback has no per-batch hooks.

    Each epoch it writes to `logs` (so History, CSVLogger and TensorBoard
    record them): `learning_rate` (the learning rate of the epoch's last
    step), `lrphase_phase` (the phase the epoch was trained in: 0
    exploration, up to and including the switch epoch, then 1 convergence),
    `hessian_max_eigenvalue`, `hessian_iterations` and `hessian_time` (the
    estimate's seconds; NaN in the epochs without an estimate).

    Resuming: the state (controller, eigenvector, learning-rate records)
    is saved inside the model's weight checkpoints, so
    `keras.callbacks.BackupAndRestore` placed after this callback resumes a
    run killed at any instant to exactly the uninterrupted result (see
    `ResumableCallback`). A later `fit` continues the controller if it
    starts at the epoch it expects, and starts a new run at epoch 0.

    Args:
        hessian_data: Tuple `(x, y)` of arrays or a `tf.data.Dataset` of
            `(x, y)` batches, whose first batch is the one batch every
            eigenvalue is estimated on (read once, at construction; use a
            fixed, unshuffled batch for reproducible decisions).
        epochs: Int >= 1 or None. The epoch budget (sets the default
            patience). Defaults to `None`: `fit`'s `epochs`.
        warmup_epochs: Int >= 0 or None. Epochs ignored by plateau
            detection (the warmup itself is `GradualWarmup`'s). A value
            other than the `warmup_epochs` of a `GradualWarmup` in the same
            `fit` is a `ValueError`. Defaults to `None`: that
            `GradualWarmup`'s, else 0.
        plateau_patience: Int >= 1 or None. Defaults to `None`:
            `max(1, round(0.05 * epochs))`.
        min_delta: Float >= 0. Least loss decrease that counts as an
            improvement. Defaults to `0.0`.
        extra_epochs_fraction: Float >= 0. alpha / n: extra epochs after a
            plateau detected with n epochs completed. Defaults to `1/3`.
        decay_factor: Float in (0, 1). The paper's beta. Defaults to `0.5`.
        plateau_rule: `"flat"` or `"paper"`. `"flat"` does not count an
            epoch whose loss is more than `excursion_threshold` above its
            best towards a plateau (an unstable start is not a plateau);
            `"paper"` is Algorithm 1 as printed. Defaults to `"flat"`.
        excursion_threshold: Float > 0. Rule `"flat"`: the rise above the
            best loss that makes an excursion, relative to the larger of
            the best loss and the drop from the first epochs' loss to it.
            Defaults to `0.1`.
        decay_rule: `"paper"` or `"significant"`. `"paper"` decays when
            both the loss and the eigenvalue rose; `"significant"` only
            when they rose by more than `decay_threshold` times their
            typical epoch-to-epoch change at the learning rate in force.
            Defaults to `"paper"`.
        decay_threshold: Float >= 0. Rule `"significant"`. Defaults to
            `1.0`.
        noise_window: Int >= 2. Rule `"significant"`: the epoch-to-epoch
            changes the typical change is the median of. Defaults to `5`.
        min_factor: Float in [0, 1]. The decays stop at this fraction of
            the undecayed learning rate; `0` for none (the paper's).
            Defaults to `0.01`, the total of step decay's two x0.1 cuts.
            (`TwoPhaseController` states the rules exactly.)
        monitor: Str. The epoch-level log entry used as the training loss.
            Defaults to `"loss"`.
        layer: Layer, layer name or None: the layer whose Hessian block is
            used. Defaults to `None` (the last layer with trainable weights).
        eigen_kwargs: Dict or None. Further arguments of
            `keras_lrphase.hessian.estimator.HessianEigenvalueEstimator`
            (`method`, `max_iterations`, `tolerance`, `hvp`, `training`,
            `loss`, `seed`; `seed` defaults to `0` here so that a resumed
            run draws the same first vector). Defaults to `None`.
        state_path: Str, path-like or None. A JSON copy of the state at each
            epoch end (see `ResumableCallback`). Defaults to `None`.
        verbose: Int 0 or 1. With 1, prints one line per phase change and
            per decay. Defaults to `0`.
        estimator: Callable or None. A hook replacing the default estimator:
            called as `estimator(model, x, y, initial_vector=None)` and
            returning an object with `.value`, `.vector` (list of arrays,
            reused as the next warm start) and `.iterations`. Excludes
            `layer` and `eigen_kwargs`. Defaults to `None`.
        reducer: `keras_lrphase.distributed.reduction.MetricReducer` or
            None. Averages the loss and eigenvalue across workers before
            each decision, so every worker decides alike (each worker
            estimates on its own `hessian_data`). Defaults to `None`:
            `keras_lrphase.distributed.default_reducer()` (`JaxProcessReducer`
            in a multi-process JAX run, else `LocalReducer()`).
        min_lr: Float >= 0 or None. Floor on the learning rate for decays.
            Defaults to `None`.
        momentum_correction: Bool. Rescale the SGD/LARS velocity by
            lr_new / lr_old when the learning rate changes at an epoch start
            (see `ControlledLearningRate`). Defaults to `False`.

    Example:

    >>> import numpy as np, keras
    >>> from keras_lrphase.callbacks import TwoPhaseLR
    >>> x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    >>> y = x @ np.ones((4, 1), "float32")
    >>> # Zero weights and no shuffling: the same run on every backend.
    >>> model = keras.Sequential([keras.Input((4,)),
    ...                           keras.layers.Dense(1, kernel_initializer="zeros")])
    >>> model.compile(keras.optimizers.SGD(0.05), loss="mse")
    >>> # The loss halves every epoch (2.97, 1.25, 0.57, 0.28, ...): its
    >>> # first fall under 0.5, after epoch 4, is the plateau; one extra
    >>> # epoch (4 / 3, rounded) and the convergence phase starts.
    >>> callback = TwoPhaseLR((x, y), plateau_patience=1, min_delta=0.5)
    >>> history = model.fit(x, y, batch_size=8, epochs=8, verbose=0,
    ...                     shuffle=False, callbacks=[callback])
    >>> history.history["lrphase_phase"]
    [0, 0, 0, 0, 0, 1, 1, 1]
    >>> sorted(k for k in history.history if k != "loss")  # doctest: +NORMALIZE_WHITESPACE
    ['hessian_iterations', 'hessian_max_eigenvalue', 'hessian_time',
     'learning_rate', 'lrphase_phase']

    References:
        "Achieving Small-Batch Accuracy with Large-Batch Scalability via
        Adaptive Learning Rate Adjustment" (ICLR 2022 submission),
        Section 3 and Algorithm 1 (two-phase adaptive learning
        rate adjustment), Section 3.2 (Hessian-aware decay).
    """

    def __init__(
        self,
        hessian_data,
        epochs=None,
        *,
        warmup_epochs=None,
        plateau_patience=None,
        min_delta=0.0,
        extra_epochs_fraction=1 / 3,
        decay_factor=0.5,
        plateau_rule=two_phase_controller.FLAT,
        excursion_threshold=two_phase_controller.DEFAULT_EXCURSION_THRESHOLD,
        decay_rule=two_phase_controller.PAPER,
        decay_threshold=two_phase_controller.DEFAULT_DECAY_THRESHOLD,
        noise_window=two_phase_controller.DEFAULT_NOISE_WINDOW,
        min_factor=two_phase_controller.DEFAULT_MIN_FACTOR,
        monitor=LOSS,
        layer=None,
        eigen_kwargs=None,
        state_path=None,
        verbose=0,
        estimator=None,
        reducer=None,
        min_lr=None,
        momentum_correction=False,
    ):
        controller = TwoPhaseController(
            epochs,
            warmup_epochs=0 if warmup_epochs is None else warmup_epochs,
            plateau_patience=plateau_patience,
            min_delta=min_delta,
            extra_epochs_fraction=extra_epochs_fraction,
            decay_factor=decay_factor,
            plateau_rule=plateau_rule,
            excursion_threshold=excursion_threshold,
            decay_rule=decay_rule,
            decay_threshold=decay_threshold,
            noise_window=noise_window,
            min_factor=min_factor,
        )
        provider = HessianEigenvalueProvider(
            hessian_data, layer=layer, eigen_kwargs=eigen_kwargs,
            estimator=estimator, argument="hessian_data",
        )
        super().__init__(
            controller, monitor=monitor, providers=[provider],
            reducer=reducer, state_path=state_path, verbose=verbose,
            min_lr=min_lr, momentum_correction=momentum_correction,
        )
        self._warmup_epochs_given = warmup_epochs

    @property
    def plateau_epoch(self):
        """The epoch (from 1, as Keras prints it) at whose end the loss
        plateau was detected, or None."""
        return _number(self.controller.plateau_epoch)

    @property
    def switch_epoch(self):
        """The epoch (from 1) at whose end the phase switches (known from the
        plateau on; the convergence phase starts with the next epoch), or
        None."""
        return _number(self.controller.switch_epoch)

    @property
    def decay_epochs(self):
        """The epochs (from 1) after which the learning rate was decayed."""
        return [e + 1 for e in self.controller.decay_epochs]

    def summary(self):
        """`decay_epochs`, `plateau_epoch` and `exploration_epochs` (the
        switch epoch, when training reached it), numbered from 1."""
        state = self.controller.state
        switched = (state.switch_epoch is not None
                    and state.switch_epoch < state.next_epoch)
        return {"decay_epochs": self.decay_epochs,
                "plateau_epoch": self.plateau_epoch,
                "exploration_epochs": self.switch_epoch if switched else None}

    def _undecided_message(self):
        c = self.controller
        if c.plateau_epoch is not None:
            return None
        return (
            "no loss plateau has been detected: the loss still fell by more "
            f"than min_delta={c.min_delta:g} within every "
            f"{c.plateau_patience} epochs (or rose well above its best, "
            "plateau_rule='flat'). The convergence phase, where the learning "
            "rate decays, may not start within the budget; a larger "
            "`min_delta` detects an earlier plateau.")

    def _controller_logs(self, epoch, before, metrics):
        return {PHASE: self.controller.phase_during(epoch)}

    def _describe(self, epoch, before, decision, metrics, applied):
        after = self.controller.state
        lines = []
        if "switch" in decision.events:
            lines.append(
                f"Epoch {epoch + 1}: TwoPhaseLR switching to the convergence "
                f"phase (loss plateau at epoch {after.plateau_epoch + 1}, "
                f"{after.switch_epoch - after.plateau_epoch} extra epochs); "
                f"h0={_fmt(after.h0)}, f0={_fmt(after.f0)}."
            )
        if "decay" in decision.events:
            clamped = (
                f", clamped to {applied:g} by min_lr={self.min_lr:g}"
                if applied != decision.factor else ""
            )
            lines.append(
                f"Epoch {epoch + 1}: TwoPhaseLR decaying the learning rate "
                f"by {decision.factor:g} (total factor {after.lr_factor:g}"
                f"{clamped}) (h={_fmt(metrics[HESSIAN_EIGENVALUE])} > "
                f"h0={_fmt(before.h0)}, f={_fmt(metrics[LOSS])} > "
                f"f0={_fmt(before.f0)})."
            )
        return lines


def _number(index):
    """Keras' 0-based epoch index as the 1-based epoch number users read."""
    return None if index is None else index + 1


def _fmt(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "None"
    if isinstance(value, numbers.Real):
        return f"{value:.4g}"
    return str(value)
