"""AutoDecay (the Learning Stages paper, Section 4), without Keras.

Training at a constant learning rate goes through a learning stage: the
loss falls, then flattens. AutoDecay watches a bias-corrected moving
average of the epoch loss; once it is stable, the stage is over. A stage
that brought a significant drop of the loss is followed by a new one at a
decayed learning rate; a stage that brought none means that decaying again
is not worth it, and training stops.
"""

import dataclasses
import math

from keras_lrphase._validation import check_choice
from keras_lrphase._validation import check_fraction
from keras_lrphase._validation import check_integer
from keras_lrphase._validation import check_number
from keras_lrphase._validation import check_positive
from keras_lrphase.controllers.controller import LOSS
from keras_lrphase.controllers.controller import Controller
from keras_lrphase.controllers.controller import Decision

# Defaults chosen by the study reported in the package's notes (the
# `cifar10-autodecay-cpu` setting): see `AutoDecayController`.
DEFAULT_WINDOW = 5
DEFAULT_TOLERANCE = 0.05
DEFAULT_DROP_THRESHOLD = 0.85
# The stability rules: "stage" (the default) measures the window's spread
# against the stage's first smoothed value, "paper" against the window's
# minimum (the paper's criterion).
STAGE = "stage"
PAPER = "paper"
STABILITY_RULES = (STAGE, PAPER)


@dataclasses.dataclass(frozen=True)
class AutoDecayState:
    """Everything `AutoDecayController` remembers between epochs.

    Attributes:
        next_epoch: Int. The epoch index `step` expects next.
        stage: Int. Index of the current learning stage (0 for the first;
            it grows by one at each decay).
        t: Int. Epochs observed in the current stage (the bias-correction
            exponent).
        f: Float. The moving average of the loss in this stage
            (f = beta f + (1 - beta) loss, from 0 at the stage start).
        first: Float or None. g(1), the stage's first bias-corrected value.
        recent: Tuple of floats. The last `window` bias-corrected values g
            of this stage, oldest first.
        smoothed: Float or None. The last bias-corrected value g(t) (None
            before the first observed epoch).
        lr_factor: Float. Product of the decays so far.
        decay_epochs: Tuple of ints. Epochs at whose end the LR decayed.
        stop_epoch: Int or None. Epoch at whose end training was stopped.
    """

    next_epoch: int = 0
    stage: int = 0
    t: int = 0
    f: float = 0.0
    first: float = None
    recent: tuple = ()
    smoothed: float = None
    lr_factor: float = 1.0
    decay_epochs: tuple = ()
    stop_epoch: int = None


class AutoDecayController(Controller):
    """AutoDecay: decay at the end of each learning stage, stop when one brings nothing.

    Epochs are indexed from 0. At the end of each epoch with a finite loss
    after `warmup_epochs` (other epochs change nothing and decide nothing;
    a non-finite loss warns once):

    1. Smoothing, within the current stage: t += 1;
       f = beta * f + (1 - beta) * loss; g(t) = f / (1 - beta ** t), the
       bias-corrected moving average (Appendix A.3, equation 2). g(1), the
       stage's first value, is the loss of its first observed epoch.
    2. Stability: once t >= `window`, the stage is stable when the last
       `window` values of g satisfy
       (max - min) / (g(1) + epsilon) < `tolerance` (`stability="stage"`,
       the default: the smoothed loss moves within the window by less than
       `tolerance` of the level the stage started at), or
       (max - min) / (min + epsilon) < `tolerance` (`stability="paper"`,
       the paper's criterion: relative to the window's own minimum, which
       a loss falling towards 0 never meets).
    3. When stable: if (g(t) + epsilon) / (g(1) + epsilon) <= `drop_threshold`
       the stage brought a significant drop, so the learning rate is
       multiplied by `decay_factor` and a new stage starts (t = 0, f = 0);
       otherwise it brought none, so training stops (no decay). There are
       no decisions after a stop.

    Defaults: the paper gives beta = 0.9 only. `window=5`, `tolerance=0.05`
    and `drop_threshold=0.85` come from a measured study
    (`benchmarks/autodecay_study.py`) on the loss curves of step decay in
    the package's `cifar10-autodecay-cpu` setting (ResNet-8, 5,000 CIFAR-10
    images, batch 128, learning rates 0.1, 0.01, 0.001): a 5-epoch window
    of the smoothed loss varying by less than 5% ends the first stage about
    where step decay's tuned first decay is (shorter windows or larger
    tolerances stop within a few epochs of the warmup, longer ones or 2%
    never do); the stages at 0.1 and 0.01 bring the smoothed loss to 0.59
    and 0.78 of its first value, the stage at 0.001 to 0.97, so 0.85
    separates the stages worth another decay from the last one.

    Args:
        beta: Float in (0, 1). Moving-average coefficient. Defaults to `0.9`.
        window: Int >= 2. Epochs of smoothed loss checked for stability.
            Defaults to `5`.
        tolerance: Float > 0. Largest relative spread of a stable window.
            Defaults to `0.05`.
        drop_threshold: Float in (0, 1). Largest ratio g(t) / g(1) that
            counts as a significant drop. Defaults to `0.85`.
        epsilon: Float > 0. Guards the ratios. Defaults to `1e-8`.
        decay_factor: Float in (0, 1). Multiplicative decay. Defaults to
            `0.1`.
        warmup_epochs: Int >= 0. Epochs ignored at the start. Defaults to
            `0`.
        stability: `"stage"` or `"paper"`. The stability criterion (2.).
            Defaults to `"stage"`.

    Example:

    >>> from keras_lrphase import AutoDecayController
    >>> losses = [2.0, 1.0, 1.0, 1.0, 1.0, 0.95, 0.95]
    >>> for stability in ("stage", "paper"):
    ...     c = AutoDecayController(window=2, tolerance=0.1,
    ...                             drop_threshold=0.8, beta=0.5,
    ...                             stability=stability)
    ...     factors = [c.step(epoch, loss) for epoch, loss in enumerate(losses)]
    ...     print(stability, factors, c.decay_epochs, c.stop_epoch)
    stage [1.0, 1.0, 0.1, 1.0, 1.0, 1.0, 1.0] [2] 4
    paper [1.0, 1.0, 1.0, 0.1, 1.0, 1.0, 1.0] [3] 5

    g is 2, 4/3, 8/7 in the first stage: the window (4/3, 8/7) spreads 0.19,
    less than 10% of g(1) = 2 (stable at epoch index 2) but not of its
    minimum 8/7 (stable one epoch later).

    References:
        You, Long, Jordan, Wang, "Learning Stages: Phenomenon, Root Cause,
        Mechanism Hypothesis, and Implications", Section 4 (AutoDecay),
        Figure 6 and Appendix A.3.
    """

    name = "autodecay"
    state_class = AutoDecayState
    state_version = 2
    FIELDS = {
        "next_epoch": "count",
        "stage": "count",
        "t": "count",
        "f": "number",
        "first": "number?",
        "recent": "numbers",
        "smoothed": "number?",
        "lr_factor": "positive",
        "decay_epochs": "counts",
        "stop_epoch": "count?",
    }

    def __init__(
        self,
        *,
        beta=0.9,
        window=DEFAULT_WINDOW,
        tolerance=DEFAULT_TOLERANCE,
        drop_threshold=DEFAULT_DROP_THRESHOLD,
        epsilon=1e-8,
        decay_factor=0.1,
        warmup_epochs=0,
        stability=STAGE,
    ):
        super().__init__()
        self.beta = check_fraction("beta", beta)
        self.window = check_integer("window", window, 2)
        self.tolerance = check_positive("tolerance", tolerance)
        self.drop_threshold = check_fraction("drop_threshold", drop_threshold)
        self.epsilon = check_positive("epsilon", epsilon)
        self.decay_factor = check_fraction("decay_factor", decay_factor)
        self.warmup_epochs = check_integer("warmup_epochs", warmup_epochs, 0)
        self.stability = check_choice("stability", stability, STABILITY_RULES)

    # -- read-only views ----------------------------------------------------------
    @property
    def should_stop(self):
        """Whether a stage without significant drop has stopped training."""
        return self._state.stop_epoch is not None

    @property
    def stop_epoch(self):
        """The epoch at whose end training was stopped, or None."""
        return self._state.stop_epoch

    @property
    def decay_epochs(self):
        """List of epoch indices at whose end the LR was decayed."""
        return list(self._state.decay_epochs)

    @property
    def stage(self):
        """Index of the current learning stage (0 for the first)."""
        return self._state.stage

    @property
    def smoothed_loss(self):
        """The last bias-corrected moving average g(t), or None."""
        return self._state.smoothed

    # -- decisions -------------------------------------------------------------
    def required_metrics(self, epoch):
        """`("loss",)`."""
        return (LOSS,)

    def step(self, epoch, loss):
        """Records the end of `epoch` and returns the LR factor to apply now.

        Returns:
            `decay_factor` at the end of a stage with a significant drop,
            else `1.0`.
        """
        return self.decide(epoch, {LOSS: loss}).factor

    def _transition(self, s, epoch, metrics):
        loss = metrics.get(LOSS)
        if loss is None:
            raise ValueError(self._missing_message(epoch, [LOSS]))
        s = dataclasses.replace(s, next_epoch=epoch + 1)
        if s.stop_epoch is not None or epoch < self.warmup_epochs:
            return s, Decision()
        if not math.isfinite(loss):
            self.warn_once(
                "nonfinite",
                f"AutoDecayController: non-finite loss at epoch {epoch + 1} "
                f"(loss={loss}); the epoch is skipped (no update, no "
                "decision). Further non-finite losses are skipped silently.",
            )
            return s, Decision()
        t = s.t + 1
        f = self.beta * s.f + (1.0 - self.beta) * loss
        g = f / (1.0 - self.beta**t)
        first = g if t == 1 else s.first
        recent = (s.recent + (g,))[-self.window:]
        s = dataclasses.replace(s, t=t, f=f, first=first, recent=recent, smoothed=g)
        if t < self.window:
            return s, Decision()
        low, high = min(recent), max(recent)
        scale = first if self.stability == STAGE else low
        if not (high - low) / (scale + self.epsilon) < self.tolerance:
            return s, Decision()
        if (g + self.epsilon) / (first + self.epsilon) <= self.drop_threshold:
            s = dataclasses.replace(
                s,
                stage=s.stage + 1,
                t=0,
                f=0.0,
                first=None,
                recent=(),
                lr_factor=s.lr_factor * self.decay_factor,
                decay_epochs=s.decay_epochs + (epoch,),
            )
            return s, Decision(self.decay_factor, False, ("stable", "decay"))
        s = dataclasses.replace(s, stop_epoch=epoch)
        return s, Decision(1.0, True, ("stable", "stop"))

    def get_config(self):
        """The constructor arguments."""
        return {
            "beta": self.beta,
            "window": self.window,
            "tolerance": self.tolerance,
            "drop_threshold": self.drop_threshold,
            "epsilon": self.epsilon,
            "decay_factor": self.decay_factor,
            "warmup_epochs": self.warmup_epochs,
            "stability": self.stability,
        }

    def _upgrade_state(self, state):
        """Reads a version-1 state: the paper's stability criterion."""
        if state["version"] != 1:
            return super()._upgrade_state(state)
        self.warn_once(
            "upgrade",
            "AutoDecayController: reading a state saved by version 1 of "
            "keras_lrphase, which had only the paper's stability criterion: "
            "it is read as stability='paper' and loads into a controller "
            "with that criterion only.",
        )
        return dict(state, version=self.state_version,
                    config=dict(state["config"], stability=PAPER))
