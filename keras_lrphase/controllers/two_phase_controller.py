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

from keras_lrphase._validation import check_fraction
from keras_lrphase._validation import check_integer
from keras_lrphase._validation import check_number
from keras_lrphase._validation import check_optional_integer
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

    @property
    def plateau_detected(self):
        """Whether the loss plateau has been detected."""
        return self.plateau_epoch is not None

    @property
    def in_convergence(self):
        """Whether the convergence phase has started."""
        return self.phase == CONVERGENCE


class TwoPhaseController(Controller):
    """The two-phase learning rate controller of the two-phase paper (Algorithm 1).

    Use it to drive the learning rate of any training loop from epoch-level
    information; in Keras, use the `TwoPhaseLR` callback, which wraps it.
    Epochs are indexed from 0; "completed epochs" n = index + 1.

    1. Warmup: the first `warmup_epochs` epochs are ignored by plateau
       detection.
    2. Exploration: `best` is the lowest epoch loss after warmup; an epoch
       improves when `loss < best - min_delta`, otherwise a wait counter
       grows (it resets on improvement). A plateau is detected when the
       counter reaches `plateau_patience`.
    3. Extension: with n completed epochs at detection,
       alpha = `round(extra_epochs_fraction * n)` (Python's `round`, half to
       even). The phase switches at the end of the epoch at which n + alpha
       epochs are completed (epoch index n + alpha - 1); there h0 = largest
       Hessian eigenvalue and f0 = that epoch's loss. No LR change.
    4. Convergence, at every later epoch end, with eigenvalue h and loss f:
       if h0 > 0 and h > h0 and f > f0, the LR is multiplied by
       `decay_factor` and h0 = 0 (so the next epoch only re-arms it);
       otherwise h0 = h and f0 = f. The LR never decays in two consecutive
       epochs, and eigenvalues are only compared between epochs run at the
       same LR.
    5. A non-finite loss or eigenvalue makes no decision: the epoch changes
       neither `best`, the wait counter, h0 nor f0 (the phase still switches
       at the switch epoch, with h0 and f0 left unset). It warns once.
    6. An eigenvalue is wanted (`wants_eigenvalue`) only from the switch
       epoch on. When alpha would be 0 (`extra_epochs_fraction` below
       1/(2n)), the switch can fall on the epoch that detects the plateau,
       so the eigenvalue is also wanted on every epoch that could detect it.

    It implements the controller protocol (`keras_lrphase.controllers.
    controller.Controller`): `required_metrics(epoch)` is the loss, plus the
    eigenvalue when `wants_eigenvalue(epoch)`; `decide(epoch, metrics)`
    returns a `Decision` with the events `"plateau"`, `"switch"` and
    `"decay"`; `step(epoch, loss, eigenvalue)` is the same returning only
    the factor. The state is a `TwoPhaseState`; `get_state()` /
    `set_state()` save and restore it (with the configuration, which must
    match) as a JSON-serialisable dict, and epochs out of order are
    refused, so a resumed run makes the same decisions as an uninterrupted
    one.

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

    Example:

    >>> from keras_lrphase.controllers import TwoPhaseController
    >>> c = TwoPhaseController(10, plateau_patience=2)
    >>> losses = [3.0, 2.0, 2.5, 2.1, 1.9, 1.95, 2.0]
    >>> eigenvalues = [None] * 4 + [1.0, 1.2, 1.3]
    >>> factors = []
    >>> for epoch, (f, h) in enumerate(zip(losses, eigenvalues)):
    ...     h = h if c.wants_eigenvalue(epoch) else None
    ...     factors.append(c.step(epoch, f, h))
    >>> factors
    [1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 1.0]
    >>> c.plateau_epoch, c.switch_epoch, c.decay_epochs, c.lr_factor
    (3, 4, [5], 0.5)

    References:
        "Achieving Small-Batch Accuracy with Large-Batch Scalability via
        Adaptive Learning Rate Adjustment" (ICLR 2022 submission),
        Section 3 and Algorithm 1 (two-phase adaptive LR
        adjustment).
    """

    name = "two_phase_lr"
    state_class = TwoPhaseState
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

        if not s.plateau_detected and epoch >= self.warmup_epochs:
            if not math.isfinite(loss):
                nonfinite = True
            elif s.best is None or loss < s.best - self.min_delta:
                update.update(best=loss, wait=0)
            else:
                wait = s.wait + 1
                update["wait"] = wait
                if wait >= self.plateau_patience:
                    n = epoch + 1
                    update.update(
                        plateau_epoch=epoch, switch_epoch=n + self.alpha(n) - 1
                    )
                    events.append("plateau")
                    self._warn_switch_beyond_budget(epoch, update["switch_epoch"])

        switch_epoch = update.get("switch_epoch", s.switch_epoch)
        factor = 1.0
        if switch_epoch is not None and epoch >= switch_epoch:
            if eigenvalue is None:
                raise ValueError(
                    f"TwoPhaseController needs the largest Hessian eigenvalue "
                    f"at epoch {epoch} (switch epoch {switch_epoch}); received "
                    "eigenvalue=None. Call `wants_eigenvalue(epoch)` before "
                    "`step`."
                )
            finite = is_finite(loss, eigenvalue)
            nonfinite = nonfinite or not finite
            if epoch == switch_epoch:
                update["phase"] = CONVERGENCE
                events.append("switch")
                if finite:
                    update.update(h0=eigenvalue, f0=loss)
            elif finite:
                if s.h0 is not None and s.h0 > 0 and eigenvalue > s.h0 and loss > s.f0:
                    factor = self.decay_factor
                    events.append("decay")
                    update.update(
                        h0=0.0,
                        lr_factor=s.lr_factor * self.decay_factor,
                        decay_epochs=s.decay_epochs + (epoch,),
                    )
                else:
                    update.update(h0=eigenvalue, f0=loss)
        if nonfinite:
            self.warn_once(
                "nonfinite",
                f"TwoPhaseController: non-finite value at epoch {epoch} "
                f"(loss={loss}, eigenvalue={eigenvalue}); no decision was made "
                "for this epoch. Further non-finite values are skipped silently.",
            )
        return dataclasses.replace(s, **update), Decision(factor, False, tuple(events))

    def _warn_switch_beyond_budget(self, epoch, switch_epoch):
        if self._epochs is None or switch_epoch < self._epochs:
            return
        n = epoch + 1
        self.warn_once(
            "budget",
            f"TwoPhaseController: loss plateau detected at epoch {epoch} "
            f"({n} epochs completed); with alpha={self.alpha(n)} extra "
            f"epochs the phase switch falls at epoch {switch_epoch}, "
            f"beyond the budget of epochs={self._epochs}: the convergence "
            "phase will not run within the budget.",
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
        }

