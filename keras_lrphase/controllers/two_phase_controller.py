"""The decision logic of the two-phase LR framework, without Keras.

`TwoPhaseController` is the state machine of Algorithm 1 of the two-phase paper: loss
plateau detection in an exploration phase, a fixed number of extra epochs,
then Hessian-aware learning rate decays in a convergence phase. It sees only
epoch indices, epoch losses and largest Hessian eigenvalues, so it is tested
with scripted sequences and reused by any training loop;
`keras_lrphase.callbacks.two_phase_lr.TwoPhaseLR` is its Keras adapter
(`ControllerCallback` with the Hessian eigenvalue provider).
"""

import dataclasses
import math

from keras_lrphase._validation import check_choice
from keras_lrphase._validation import check_fraction
from keras_lrphase._validation import check_integer
from keras_lrphase._validation import check_number
from keras_lrphase._validation import check_optional_integer
from keras_lrphase._validation import check_positive
from keras_lrphase.controllers.controller import HESSIAN_EIGENVALUE
from keras_lrphase.controllers.controller import LOSS
from keras_lrphase.controllers.controller import Controller
from keras_lrphase.controllers.controller import Decision
from keras_lrphase.controllers.controller import is_finite

EXPLORATION = "exploration"
CONVERGENCE = "convergence"


@dataclasses.dataclass(frozen=True)
class TwoPhaseState:
    """Everything `TwoPhaseController` remembers between epochs.

    Attributes:
        next_epoch: Int. Index of the epoch `step` expects next (the number
            of epochs stepped so far).
        phase: Str. `"exploration"` until the end of the switch epoch,
            `"convergence"` from then on.
        best: Float or None. Lowest finite loss seen after warmup (None
            before the first one). Frozen once a plateau is detected.
        wait: Int. Epochs since `best` last improved by more than
            `min_delta`. Frozen once a plateau is detected.
        plateau_epoch: Int or None. Epoch index at whose end the loss
            plateau was detected.
        switch_epoch: Int or None. Epoch index at whose end the phase
            switches (known from the plateau epoch on).
        h0: Float or None. Reference largest Hessian eigenvalue; `0.0` right
            after a decay, so that the next epoch only re-arms it.
        f0: Float or None. Reference epoch loss.
        lr_factor: Float. Product of all decays so far (the multiplier the
            controller wants on the learning rate).
        decay_epochs: Tuple of ints. Epoch indices at whose end the learning
            rate was decayed.
        excursion: Int. Consecutive epochs, up to the last one, whose loss
            was more than `excursion_threshold` above `best` (rule
            `"flat"`; always 0 with the paper's rule).
        excursion_low: Float or None. Lowest loss since the last excursion
            began, until the next new best (None when no excursion happened
            since the best).
        recent_losses: Tuple of floats. Losses of the convergence-phase
            epochs run at the learning rate in force, oldest first (at most
            `noise_window + 1`): the noise scale of decay rule
            `"significant"`.
        recent_eigenvalues: Tuple of floats. The eigenvalues of the same
            epochs.
        early_loss: Float or None. Lowest finite loss of the first
            `max(1, warmup_epochs)` epochs: the level a plateau is compared
            with to tell whether anything was learned.
    """

    next_epoch: int = 0
    phase: str = EXPLORATION
    best: float = None
    wait: int = 0
    plateau_epoch: int = None
    switch_epoch: int = None
    h0: float = None
    f0: float = None
    lr_factor: float = 1.0
    decay_epochs: tuple = ()
    excursion: int = 0
    excursion_low: float = None
    recent_losses: tuple = ()
    recent_eigenvalues: tuple = ()
    early_loss: float = None

    @property
    def plateau_detected(self):
        """Whether the loss plateau has been detected."""
        return self.plateau_epoch is not None

    @property
    def in_convergence(self):
        """Whether the convergence phase has started."""
        return self.phase == CONVERGENCE


# The plateau rules: "flat" (the default) does not count an epoch whose loss
# is well above its best towards a plateau; "paper" is Algorithm 1 as
# printed (every epoch without a new best counts).
FLAT = "flat"
PAPER = "paper"
PLATEAU_RULES = (FLAT, PAPER)
# The decay rules: "significant" (the default) decays only on rises beyond
# the epoch-to-epoch noise of the current learning rate; "paper" on any rise.
SIGNIFICANT = "significant"
DECAY_RULES = (SIGNIFICANT, PAPER)

# Defaults of the robust rules, chosen by the study in the package's README
# ("Two-phase and the unstable start").
DEFAULT_EXCURSION_THRESHOLD = 0.1
DEFAULT_DECAY_THRESHOLD = 1.0
DEFAULT_NOISE_WINDOW = 5
# The floor of the product of all decays (`min_factor`): 1/100, the total
# decay of step decay's two x0.1 cuts (Goyal et al. 2017 and the papers'
# step-decay rows), which no two-phase run of the CPU studies reached.
DEFAULT_MIN_FACTOR = 0.01
# An excursion that lasts this many times the patience is the loss's new
# level: `best` becomes its lowest loss.
EXCURSION_PATIENCE_FACTOR = 3
# Epoch-to-epoch changes at one learning rate needed before a decay under
# decay rule "significant".
MIN_NOISE_SAMPLES = 2
# A plateau whose best loss is not this fraction below the loss of the first
# epochs warns that nothing seems to have been learned.
NOTHING_LEARNED = 0.1


class TwoPhaseController(Controller):
    """The two-phase learning rate controller of the two-phase paper (Algorithm 1).

    Use it to drive the learning rate of any training loop from epoch-level
    information; in Keras, use the `TwoPhaseLR` callback, which wraps it.
    Epochs are indexed from 0 here, as Keras' `on_epoch_end(epoch, ...)`
    indexes them; a user reads "epoch `index + 1`" (Keras' "Epoch 44/100"
    is index 43), and n, the number of completed epochs, is `index + 1`.

    1. Warmup: the first `warmup_epochs` epochs are ignored by plateau
       detection.
    2. Exploration: `best` is the lowest epoch loss after warmup; an epoch
       improves when `loss < best - min_delta`, otherwise a wait counter
       grows (it resets on improvement). A plateau is detected when the
       counter reaches `plateau_patience`.
       With `plateau_rule="flat"` (the default), an epoch whose loss is
       more than `excursion_threshold * max(|best|, early - best)` above
       `best` is an excursion, not a plateau (`early`: the lowest loss of
       the first `max(1, warmup_epochs)` epochs; so a loss near 0, whose
       noise is large against its value but small against what it has
       shed, is judged on the second scale): it resets the wait counter instead of
       growing it. While the loss comes back from an excursion (until the
       next new best), an epoch whose loss is lower than every loss since
       the excursion began (by more than `min_delta`) is progress and
       resets the counter too, as a new best would: a recovery is not a
       plateau. An excursion that lasts `3 * plateau_patience`
       consecutive epochs is taken as the loss's new level: `best` becomes
       the excursion's lowest loss, and counting goes on from there.
       `plateau_rule="paper"` is Algorithm 1 as printed: every epoch
       without a new best counts, however high its loss.
    3. Extension: with n completed epochs at detection,
       alpha = `round(extra_epochs_fraction * n)` (Python's `round`, half to
       even). The phase switches at the end of the epoch at which n + alpha
       epochs are completed (epoch index n + alpha - 1); there h0 = largest
       Hessian eigenvalue and f0 = that epoch's loss. No LR change.
    4. Convergence, at every later epoch end, with eigenvalue h and loss f:
       if h0 > 0 and h and f rose (below), the LR is multiplied by
       `decay_factor` and h0 = 0 (so the next epoch only re-arms it);
       otherwise h0 = h and f0 = f. The LR never decays in two consecutive
       epochs, and eigenvalues are only compared between epochs run at the
       same LR. With `decay_rule="paper"` (the default), "rose" is
       h > h0 and f > f0. With `decay_rule="significant"`, it is
       h - h0 > `decay_threshold` * s_h and f - f0 > `decay_threshold` *
       s_f, where s is the median absolute epoch-to-epoch change of that
       quantity over the last `noise_window` changes at the learning rate
       in force (the epochs since the switch or the last decay); with
       fewer than 2 such changes there is no decay. So a decay needs a
       rise larger than the run's own fluctuations, and waits at least
       three epochs after the switch or a decay.
       The product of all decays never goes below `min_factor` (1/100 by
       default): a decay that would is clamped to it, and once there the
       rate decays no more (no event). `min_factor=0` is Algorithm 1 as
       printed, which decays without end.
    5. A non-finite loss or eigenvalue makes no decision: the epoch changes
       neither `best`, the wait counter, h0 nor f0 (the phase still switches
       at the switch epoch, with h0 and f0 left unset). It warns once.
    6. An eigenvalue is wanted (`wants_eigenvalue`) only from the switch
       epoch on. When alpha would be 0 (`extra_epochs_fraction` below
       1/(2n)), the switch can fall on the epoch that detects the plateau,
       so the eigenvalue is also wanted on every epoch that could detect it.

    The defaults of the robust rules were chosen by measurement (the
    README's "Two-phase and the unstable start"): on the linear-scaling
    recipe with warmup, the loss can rise after the warmup and stay above
    its best for longer than the patience; the paper's rule then switches
    inside that excursion, and its decay rule keeps halving the rate on
    rises that are coin tosses once learning has stalled.

    It implements the controller protocol (`keras_lrphase.controllers.
    controller.Controller`): `required_metrics(epoch)` is the loss, plus the
    eigenvalue when `wants_eigenvalue(epoch)`; `decide(epoch, metrics)`
    returns a `Decision` with the events `"plateau"`, `"switch"` and
    `"decay"`; `step(epoch, loss, eigenvalue)` is the same returning only
    the factor. The state is a `TwoPhaseState`; `get_state()` /
    `set_state()` save and restore it (with the configuration, which must
    match) as a JSON-serialisable dict, and epochs out of order are
    refused, so a resumed run makes the same decisions as an uninterrupted
    one. A state saved by version 1 of the package (the paper's rules
    only) loads into a controller with the paper's rules.

    Args:
        epochs: Int >= 1 or None. The epoch budget (sets the default
            patience and the budget warning). `None` leaves it to be bound
            with `set_epochs` before the first step (the Keras callback
            binds `fit`'s `epochs`).
        warmup_epochs: Int >= 0. Epochs ignored by plateau detection.
            Defaults to `0`.
        plateau_patience: Int >= 1 or None. Epochs without improvement that
            make a plateau. Defaults to `None`:
            `max(1, round(0.05 * epochs))` (5% of the budget, the paper's
            choice).
        min_delta: Float >= 0. Least decrease of the loss that counts as an
            improvement. Defaults to `0.0`.
        extra_epochs_fraction: Float >= 0. alpha / n, the extra epochs after
            the plateau relative to the epochs completed at detection.
            Defaults to `1/3`.
        decay_factor: Float in (0, 1). The multiplicative decay (the
            paper's beta). Defaults to `0.5`.
        plateau_rule: `"flat"` or `"paper"`. See 2. Defaults to `"flat"`.
        excursion_threshold: Float > 0. Rule `"flat"`: the rise of the
            loss above its best, relative to the larger of |best| and the
            drop from the first epochs' loss to best, beyond which an epoch
            is an excursion. Defaults to `0.1`.
        decay_rule: `"paper"` or `"significant"`. See 4. Defaults to
            `"paper"`.
        decay_threshold: Float >= 0. Rule `"significant"`: the rises of the
            loss and the eigenvalue must exceed this many times their
            typical epoch-to-epoch change. Defaults to `1.0`.
        noise_window: Int >= 2. Rule `"significant"`: the epoch-to-epoch
            changes the typical change is the median of. Defaults to `5`.
        min_factor: Float in [0, 1]. Floor of the product of all decays
            (the learning rate never goes below `min_factor` times its
            undecayed value). `0` is the paper's (no floor). Defaults to
            `0.01`.

    Example:

    >>> from keras_lrphase.controllers import TwoPhaseController
    >>> losses = [3.0, 2.0, 2.6, 2.5, 2.1, 1.5, 1.48, 1.49]
    >>> flat = TwoPhaseController(20, plateau_patience=2, min_delta=0.05)
    >>> paper = TwoPhaseController(20, plateau_patience=2, min_delta=0.05,
    ...                            plateau_rule="paper")
    >>> for epoch, loss in enumerate(losses):
    ...     _ = flat.step(epoch, loss), paper.step(epoch, loss, 1.0)
    >>> paper.plateau_epoch, paper.switch_epoch, paper.phase
    (3, 4, 'convergence')
    >>> flat.plateau_epoch, flat.switch_epoch, flat.phase
    (7, 10, 'exploration')

    After its best (2.0 at epoch 1) the loss rose 30% (epochs 2 and 3):
    the paper's rule counts those epochs as a plateau and switches at
    epoch 4, before the loss fell to 1.5; rule `"flat"` counts only the
    epochs near the best (4, then 6 and 7 after the new best at 5).

    References:
        "Achieving Small-Batch Accuracy with Large-Batch Scalability via
        Adaptive Learning Rate Adjustment" (ICLR 2022 submission),
        Section 3 and Algorithm 1 (two-phase adaptive LR
        adjustment).
    """

    name = "two_phase_lr"
    state_class = TwoPhaseState
    state_version = 3
    FIELDS = {
        "next_epoch": "count",
        "phase": "one of exploration|convergence",
        "best": "number?",
        "wait": "count",
        "plateau_epoch": "count?",
        "switch_epoch": "count?",
        "h0": "number?",
        "f0": "number?",
        "lr_factor": "positive",
        "decay_epochs": "counts",
        "excursion": "count",
        "excursion_low": "number?",
        "recent_losses": "numbers",
        "recent_eigenvalues": "numbers",
        "early_loss": "number?",
    }

    def __init__(
        self,
        epochs=None,
        *,
        warmup_epochs=0,
        plateau_patience=None,
        min_delta=0.0,
        extra_epochs_fraction=1 / 3,
        decay_factor=0.5,
        plateau_rule=FLAT,
        excursion_threshold=DEFAULT_EXCURSION_THRESHOLD,
        decay_rule=PAPER,
        decay_threshold=DEFAULT_DECAY_THRESHOLD,
        noise_window=DEFAULT_NOISE_WINDOW,
        min_factor=DEFAULT_MIN_FACTOR,
    ):
        super().__init__()
        self._epochs = check_optional_integer("epochs", epochs, 1)
        self.warmup_epochs = check_integer("warmup_epochs", warmup_epochs, 0)
        self._plateau_patience_arg = check_optional_integer(
            "plateau_patience", plateau_patience, 1
        )
        self.min_delta = check_number("min_delta", min_delta, minimum=0.0)
        self.extra_epochs_fraction = check_number(
            "extra_epochs_fraction", extra_epochs_fraction, minimum=0.0
        )
        self.decay_factor = check_fraction("decay_factor", decay_factor)
        self.plateau_rule = check_choice("plateau_rule", plateau_rule,
                                         PLATEAU_RULES)
        self.excursion_threshold = check_positive(
            "excursion_threshold", excursion_threshold)
        self.decay_rule = check_choice("decay_rule", decay_rule, DECAY_RULES)
        self.decay_threshold = check_number(
            "decay_threshold", decay_threshold, minimum=0.0)
        self.noise_window = check_integer("noise_window", noise_window, 2)
        self.min_factor = check_number("min_factor", min_factor,
                                       minimum=0.0, maximum=1.0)
        self._check_budget()

    def _check_budget(self):
        if self._epochs is not None and self.warmup_epochs >= self._epochs:
            self.warn_once(
                "warmup",
                f"TwoPhaseController: `warmup_epochs={self.warmup_epochs}` is "
                f"not below the budget `epochs={self._epochs}`: no loss plateau "
                "can be detected and the learning rate will never be decayed.",
            )

    # -- the epoch budget ---------------------------------------------------------
    @property
    def epochs(self):
        """The epoch budget, or None while unbound."""
        return self._epochs

    def set_epochs(self, epochs):
        """Binds the epoch budget of a controller built with `epochs=None`.

        Raises:
            ValueError: if a different budget is bound already.
        """
        epochs = check_integer("epochs", epochs, 1)
        if self._epochs is not None and self._epochs != epochs:
            raise ValueError(
                f"TwoPhaseController: the epoch budget is {self._epochs}; it "
                f"cannot be changed to epochs={epochs}."
            )
        self._epochs = epochs
        self._check_budget()

    @property
    def plateau_patience(self):
        """Epochs without improvement that make a plateau."""
        if self._plateau_patience_arg is not None:
            return self._plateau_patience_arg
        if self._epochs is None:
            raise ValueError(
                "TwoPhaseController: the default `plateau_patience` is 5% of "
                "the epoch budget, which is not bound yet. Pass `epochs` (or "
                "`plateau_patience`), or call `set_epochs` before the first step."
            )
        return max(1, round(0.05 * self._epochs))

    @property
    def excursion_patience(self):
        """Epochs of excursion after which its lowest loss becomes `best`."""
        return EXCURSION_PATIENCE_FACTOR * self.plateau_patience

    # -- read-only views -------------------------------------------------------
    @property
    def phase(self):
        """`"exploration"` or `"convergence"`."""
        return self._state.phase

    @property
    def plateau_epoch(self):
        """Epoch index at which the plateau was detected, or None."""
        return self._state.plateau_epoch

    @property
    def switch_epoch(self):
        """Epoch index at whose end the phase switches, or None."""
        return self._state.switch_epoch

    @property
    def decay_epochs(self):
        """List of epoch indices at whose end the LR was decayed."""
        return list(self._state.decay_epochs)

    def alpha(self, completed_epochs):
        """Extra epochs after a plateau detected with `completed_epochs` done."""
        return round(self.extra_epochs_fraction * completed_epochs)

    def phase_during(self, epoch):
        """The phase epoch `epoch` is (or was) trained in: 0 or 1.

        0 (exploration) up to and including the switch epoch, 1
        (convergence) after it: the switch happens at the end of the switch
        epoch, and the epochs after it are the convergence phase. This is
        the `lrphase_phase` log and the phase column of the CLI's history.
        """
        switch = self._state.switch_epoch
        return int(switch is not None and epoch > switch)

    # -- decisions -------------------------------------------------------------
    def wants_eigenvalue(self, epoch):
        """Whether `step(epoch, ...)` needs the largest Hessian eigenvalue.

        True from the switch epoch on; False before (no Hessian work before
        the switch), except when alpha would be 0 (see the class docstring).
        """
        s = self._state
        if s.switch_epoch is not None:
            return epoch >= s.switch_epoch
        return (
            epoch == s.next_epoch
            and epoch >= self.warmup_epochs
            and s.best is not None
            and s.wait + 1 >= self.plateau_patience
            and self.alpha(epoch + 1) == 0
        )

    def required_metrics(self, epoch):
        """`("loss",)`, plus the eigenvalue when `wants_eigenvalue(epoch)`."""
        if self.wants_eigenvalue(epoch):
            return (LOSS, HESSIAN_EIGENVALUE)
        return (LOSS,)

    def step(self, epoch, loss, eigenvalue=None):
        """Records the end of `epoch` and returns the LR factor to apply now.

        Args:
            epoch: Int. The epoch index that just ended; must be
                `next_epoch` (epochs are stepped in order, once each).
            loss: Float. The epoch's training loss.
            eigenvalue: Float or None. The largest Hessian eigenvalue at the
                epoch's end; required when `wants_eigenvalue(epoch)` turned
                out to matter (from the switch epoch on), ignored otherwise.

        Returns:
            `decay_factor` if the learning rate must be decayed now, else
            `1.0`. `lr_factor` holds the product of all decays.
        """
        return self.decide(
            epoch, {LOSS: loss, HESSIAN_EIGENVALUE: eigenvalue}
        ).factor

    def _transition(self, s, epoch, metrics):
        loss = metrics.get(LOSS)
        if loss is None:
            raise ValueError(self._missing_message(epoch, [LOSS]))
        eigenvalue = metrics.get(HESSIAN_EIGENVALUE)
        update = {"next_epoch": epoch + 1}
        events = []
        nonfinite = False
        if epoch < max(1, self.warmup_epochs) and math.isfinite(loss):
            early = loss if s.early_loss is None else min(s.early_loss, loss)
            update["early_loss"] = early

        if not s.plateau_detected and epoch >= self.warmup_epochs:
            if not math.isfinite(loss):
                nonfinite = True
            else:
                update.update(self._explore(s, epoch, loss, events))

        switch_epoch = update.get("switch_epoch", s.switch_epoch)
        factor = 1.0
        if switch_epoch is not None and epoch >= switch_epoch:
            if eigenvalue is None:
                raise ValueError(
                    f"TwoPhaseController needs the largest Hessian eigenvalue "
                    f"at epoch={epoch} (switch at index {switch_epoch}); received "
                    "eigenvalue=None. Call `wants_eigenvalue(epoch)` before "
                    "`step`."
                )
            finite = is_finite(loss, eigenvalue)
            nonfinite = nonfinite or not finite
            if epoch == switch_epoch:
                update["phase"] = CONVERGENCE
                events.append("switch")
                if finite:
                    update.update(h0=eigenvalue, f0=loss,
                                  recent_losses=(loss,),
                                  recent_eigenvalues=(eigenvalue,))
            elif finite:
                if (self._rose(s, loss, eigenvalue)
                        and s.lr_factor > self.min_factor):
                    new_factor = max(s.lr_factor * self.decay_factor,
                                     self.min_factor)
                    factor = new_factor / s.lr_factor
                    events.append("decay")
                    update.update(
                        h0=0.0,
                        lr_factor=new_factor,
                        decay_epochs=s.decay_epochs + (epoch,),
                        recent_losses=(),
                        recent_eigenvalues=(),
                    )
                else:
                    keep = self.noise_window + 1
                    update.update(
                        h0=eigenvalue, f0=loss,
                        recent_losses=(s.recent_losses + (loss,))[-keep:],
                        recent_eigenvalues=(
                            s.recent_eigenvalues + (eigenvalue,))[-keep:],
                    )
        if nonfinite:
            self.warn_once(
                "nonfinite",
                f"TwoPhaseController: non-finite value at epoch {epoch + 1} "
                f"(loss={loss}, eigenvalue={eigenvalue}); no decision was made "
                "for this epoch. Further non-finite values are skipped silently.",
            )
        return dataclasses.replace(s, **update), Decision(factor, False, tuple(events))

    def _explore(self, s, epoch, loss, events):
        """The plateau detection's update for a finite loss after warmup."""
        if s.best is None or loss < s.best - self.min_delta:
            return dict(best=loss, wait=0, excursion=0, excursion_low=None)
        if self.plateau_rule == PAPER:
            return self._count(s, epoch, dict(wait=s.wait + 1), events)
        if loss > s.best + self.excursion_threshold * self._loss_scale(s):
            low = loss if s.excursion_low is None else min(s.excursion_low, loss)
            if s.excursion + 1 >= self.excursion_patience:
                # The loss has settled at a new level: count from its lowest.
                return dict(best=low, wait=0, excursion=0, excursion_low=None)
            return dict(wait=0, excursion=s.excursion + 1, excursion_low=low)
        if s.excursion_low is not None and loss < s.excursion_low - self.min_delta:
            # Coming back from an excursion: a new low is progress.
            return dict(wait=0, excursion=0, excursion_low=loss)
        return self._count(s, epoch, dict(wait=s.wait + 1, excursion=0), events)

    @staticmethod
    def _loss_scale(s):
        """What a rise of the loss is measured against (rule "flat"): the
        larger of |best| and the drop from the first epochs' loss to best.
        Near 0 a loss's epoch-to-epoch noise is a large fraction of it, but
        a small one of what it has already shed."""
        drop = 0.0 if s.early_loss is None else s.early_loss - s.best
        return max(abs(s.best), drop)

    def _count(self, s, epoch, update, events):
        """`update` with the plateau detected if the wait reached patience."""
        if update["wait"] >= self.plateau_patience:
            n = epoch + 1
            update.update(plateau_epoch=epoch, switch_epoch=n + self.alpha(n) - 1)
            events.append("plateau")
            self._warn_switch_beyond_budget(epoch, update["switch_epoch"])
            self._warn_nothing_learned(s, epoch)
        return update

    def _warn_nothing_learned(self, s, epoch):
        early = s.early_loss
        if early is None or not early > 0 or s.best < (1 - NOTHING_LEARNED) * early:
            return
        self.warn_once(
            "nothing_learned",
            f"TwoPhaseController: loss plateau detected at epoch {epoch + 1} "
            f"while the loss (best {s.best:.4g}) is still within "
            f"{NOTHING_LEARNED:.0%} of its level in the first epochs "
            f"({early:.4g}): nothing seems to have been learned. The learning "
            "rate may be too large (or too small) for this model; check the "
            "accuracy before trusting the decays that follow.",
        )

    def _rose(self, s, loss, eigenvalue):
        """Whether the loss and the eigenvalue rose enough for a decay."""
        if s.h0 is None or not s.h0 > 0:
            return False
        if self.decay_rule == PAPER:
            return eigenvalue > s.h0 and loss > s.f0
        if len(s.recent_losses) < MIN_NOISE_SAMPLES + 1:
            return False
        k = self.decay_threshold
        return (eigenvalue - s.h0 > k * _typical_change(s.recent_eigenvalues)
                and loss - s.f0 > k * _typical_change(s.recent_losses))

    def _warn_switch_beyond_budget(self, epoch, switch_epoch):
        if self._epochs is None or switch_epoch < self._epochs:
            return
        n = epoch + 1
        self.warn_once(
            "budget",
            f"TwoPhaseController: loss plateau detected at epoch {n}; with "
            f"alpha={self.alpha(n)} extra epochs the phase switch falls at "
            f"epoch {switch_epoch + 1}, beyond the budget of "
            f"epochs={self._epochs}: the convergence phase will not run within "
            "the budget.",
        )

    # -- persistence -------------------------------------------------------------
    def get_config(self):
        """The constructor arguments."""
        return {
            "epochs": self._epochs,
            "warmup_epochs": self.warmup_epochs,
            "plateau_patience": self._plateau_patience_arg,
            "min_delta": self.min_delta,
            "extra_epochs_fraction": self.extra_epochs_fraction,
            "decay_factor": self.decay_factor,
            "plateau_rule": self.plateau_rule,
            "excursion_threshold": self.excursion_threshold,
            "decay_rule": self.decay_rule,
            "decay_threshold": self.decay_threshold,
            "noise_window": self.noise_window,
            "min_factor": self.min_factor,
        }

    def _upgrade_state(self, state):
        """Reads a version-1 state: the paper's rules, no new fields.

        Version 1 had only the paper's rules, so its configuration is read
        with `plateau_rule="paper"` and `decay_rule="paper"` (and the new
        arguments at their defaults), and its state gets the new fields
        empty (no excursion, no recent values). It warns what it assumed.
        """
        if state["version"] == 2:
            # Version 2 had the robust rules but no floor on the decays.
            self.warn_once(
                "upgrade",
                "TwoPhaseController: reading a state saved by version 2 of "
                "keras_lrphase, which had no floor on the decays: it is read "
                "as min_factor=0 and loads into a controller with that "
                "floor only.")
            return dict(state, version=self.state_version,
                        config=dict(state["config"], min_factor=0.0))
        if state["version"] != 1:
            return super()._upgrade_state(state)
        config = dict(
            state["config"], plateau_rule=PAPER, decay_rule=PAPER,
            excursion_threshold=DEFAULT_EXCURSION_THRESHOLD,
            decay_threshold=DEFAULT_DECAY_THRESHOLD,
            noise_window=DEFAULT_NOISE_WINDOW, min_factor=0.0,
        )
        values = dict(state["state"], excursion=0, excursion_low=None,
                      recent_losses=[], recent_eigenvalues=[],
                      early_loss=None)
        self.warn_once(
            "upgrade",
            "TwoPhaseController: reading a state saved by version 1 of "
            "keras_lrphase, which had only the paper's rules: it is read as "
            "plateau_rule='paper', decay_rule='paper', min_factor=0, with "
            "no excursion "
            "and no recent values or early loss. It loads into a controller "
            "with those "
            "rules only.",
        )
        return dict(state, version=self.state_version, config=config,
                    state=values)


def _typical_change(values):
    """Median absolute change between consecutive `values`."""
    changes = sorted(abs(b - a) for a, b in zip(values, values[1:]))
    middle = len(changes) // 2
    if len(changes) % 2:
        return changes[middle]
    return (changes[middle - 1] + changes[middle]) / 2
