"""AutoDecay (the Learning Stages paper) as a Keras callback."""

import math

from keras_lrphase.callbacks.controller_callback import ControllerCallback
from keras_lrphase.controllers.auto_decay_controller import DEFAULT_DROP_THRESHOLD
from keras_lrphase.controllers.auto_decay_controller import DEFAULT_TOLERANCE
from keras_lrphase.controllers.auto_decay_controller import DEFAULT_WINDOW
from keras_lrphase.controllers.auto_decay_controller import AutoDecayController
from keras_lrphase.controllers import auto_decay_controller
from keras_lrphase.controllers.controller import LOSS

SMOOTHED_LOSS = "autodecay_smoothed_loss"
STAGE = "autodecay_stage"


class AutoDecay(ControllerCallback):
    """Decays the learning rate at the end of each learning stage; stops when one brings nothing.

    Use it instead of a hand-tuned step schedule: train at a constant
    learning rate until a bias-corrected moving average of the epoch loss
    is stable; if the stage brought a significant drop of the loss, decay
    the learning rate by `decay_factor` and start a new stage, else stop
    training (`model.stop_training`). The rule is
    `keras_lrphase.controllers.AutoDecayController`'s (its docstring states
    it exactly). Pair it with `StageCheckpoint` to keep the model of every
    stage.

    Each epoch it writes to `logs`: `learning_rate` (of the epoch's last
    step), `autodecay_smoothed_loss` (the bias-corrected moving average
    g(t) after this epoch; NaN for an epoch that was not observed) and
    `autodecay_stage` (the index of the stage the epoch was trained in,
    from 0).

    The decay multiplies the learning rate in force (a float in place,
    a schedule inside the train step; see `ControlledLearningRate`), and
    the state resumes like `TwoPhaseLR`'s.

    Args:
        beta: Float in (0, 1). Moving-average coefficient. Defaults to `0.9`.
        window: Int >= 2. Epochs of smoothed loss checked for stability.
            Defaults to `5`.
        tolerance: Float > 0. Largest relative spread of a stable window.
            Defaults to `0.05`.
        drop_threshold: Float in (0, 1). Largest ratio g(t) / g(1) that
            counts as a significant drop. Defaults to `0.85`.
        epsilon: Float > 0. Guards the ratios. Defaults to `1e-8`.
        decay_factor: Float in (0, 1). Defaults to `0.1`.
        warmup_epochs: Int >= 0 or None. Epochs ignored at the start (the
            ramp itself is `GradualWarmup`'s). A value other than the
            `warmup_epochs` of a `GradualWarmup` in the same `fit` is a
            `ValueError`. Defaults to `None`: that `GradualWarmup`'s, else 0.
        stability: `"stage"` or `"paper"`. `"stage"` measures the window's
            spread against the stage's first smoothed value, so a loss that
            falls towards 0 still becomes stable; `"paper"` against the
            window's minimum (the paper's criterion). Defaults to
            `"stage"`.
        monitor: String. The epoch log used as the loss. Defaults to
            `"loss"`.
        min_lr: Float >= 0 or None. Floor on the learning rate for decays.
            Defaults to `None`.
        momentum_correction: Bool. See `ControllerCallback`. Defaults to
            `False`.
        reducer, state_path, verbose: See `ControllerCallback`.

    Example:

    >>> import numpy as np, keras
    >>> from keras_lrphase import AutoDecay
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(64, 4)).astype("float32")
    >>> y = x @ np.ones((4, 1), "float32") + rng.normal(size=(64, 1)).astype(
    ...     "float32")  # noise: the loss flattens at about 1
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(0.05), loss="mse")
    >>> callback = AutoDecay(window=3, tolerance=0.05, drop_threshold=0.5)
    >>> history = model.fit(x, y, batch_size=16, epochs=60, verbose=0,
    ...                     callbacks=[callback])
    >>> callback.decay_epochs, callback.stop_epoch  # epochs from 1
    ([9], 12)
    >>> len(history.history["loss"])  # stopped: stage 2 brought no drop
    12

    References:
        You, Long, Jordan, Wang, "Learning Stages: Phenomenon, Root Cause,
        Mechanism Hypothesis, and Implications", Section 4 and Appendix A.3.
    """

    def __init__(
        self,
        *,
        beta=0.9,
        window=DEFAULT_WINDOW,
        tolerance=DEFAULT_TOLERANCE,
        drop_threshold=DEFAULT_DROP_THRESHOLD,
        epsilon=1e-8,
        decay_factor=0.1,
        warmup_epochs=None,
        stability=auto_decay_controller.STAGE,
        monitor=LOSS,
        reducer=None,
        state_path=None,
        verbose=0,
        min_lr=None,
        momentum_correction=False,
    ):
        controller = AutoDecayController(
            beta=beta, window=window, tolerance=tolerance,
            drop_threshold=drop_threshold, epsilon=epsilon,
            decay_factor=decay_factor,
            warmup_epochs=0 if warmup_epochs is None else warmup_epochs,
            stability=stability,
        )
        super().__init__(
            controller, monitor=monitor, reducer=reducer,
            state_path=state_path, verbose=verbose, min_lr=min_lr,
            momentum_correction=momentum_correction,
        )
        self._warmup_epochs_given = warmup_epochs
        self._stage_trained = 0

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self._stage_trained = self.controller.stage

    @property
    def decay_epochs(self):
        """The epochs (from 1, as Keras prints them) after which the learning
        rate was decayed."""
        return [e + 1 for e in self.controller.decay_epochs]

    @property
    def stop_epoch(self):
        """The epoch (from 1) after which training was stopped, or None."""
        stop = self.controller.stop_epoch
        return None if stop is None else stop + 1

    def summary(self):
        """`decay_epochs` and `stop_epoch`, numbered from 1."""
        return {"decay_epochs": self.decay_epochs, "stop_epoch": self.stop_epoch}

    def _undecided_message(self):
        c = self.controller
        if c.decay_epochs or c.should_stop:
            return None
        return (
            f"the first stage has not become stable: its smoothed loss still "
            f"moved by {c.tolerance:g} or more (relative) within every "
            f"{c.window} epochs. A larger `tolerance` or a smaller `window` "
            "ends stages sooner.")

    def _controller_logs(self, epoch, before, metrics):
        c = self.controller
        observed = (
            before.stop_epoch is None
            and epoch >= c.warmup_epochs
            and math.isfinite(metrics[LOSS])
        )
        return {
            SMOOTHED_LOSS: c.smoothed_loss if observed else math.nan,
            STAGE: self._stage_trained,
        }

    def _describe(self, epoch, before, decision, metrics, applied):
        g = self.controller.smoothed_loss
        if "decay" in decision.events:
            return [
                f"Epoch {epoch + 1}: AutoDecay: stage {before.stage} is stable "
                f"(smoothed loss {g:.4g}, {g / before.first:.3g} of its first "
                f"value {before.first:.4g}); decaying the learning rate by "
                f"{applied:g}."
            ]
        if "stop" in decision.events:
            return [
                f"Epoch {epoch + 1}: AutoDecay: stage {before.stage} is stable "
                f"without a significant drop (smoothed loss {g:.4g}, "
                f"{g / before.first:.3g} of its first value); stopping training."
            ]
        return []
