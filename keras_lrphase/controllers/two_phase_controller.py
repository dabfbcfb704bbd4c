"""The decision logic of the two-phase LR framework, without Keras.

`TwoPhaseController` is the state machine of Algorithm 1 of the two-phase paper: loss
plateau detection in an exploration phase, a fixed number of extra epochs,
then Hessian-aware learning rate decays in a convergence phase. It sees only
epoch indices, epoch losses and largest Hessian eigenvalues, so it is tested
with scripted sequences and reused by any training loop;
`keras_lrphase.callbacks.two_phase_lr.TwoPhaseLR` is its Keras adapter.
"""

import dataclasses
import math
import numbers
import warnings

from keras_lrphase._validation import check_integer

EXPLORATION = "exploration"
CONVERGENCE = "convergence"
STATE_VERSION = 1


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


class TwoPhaseController:
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

    The state is a `TwoPhaseState`; `get_state()` / `set_state()` save and
    restore it (with the configuration, which must match) as a
    JSON-serialisable dict, and `step` refuses epochs out of order, so a
    resumed run makes the same decisions as an uninterrupted one.

    Args:
        epochs: Int >= 1. The epoch budget.
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

    def __init__(
        self,
        epochs,
        *,
        warmup_epochs=0,
        plateau_patience=None,
        min_delta=0.0,
        extra_epochs_fraction=1 / 3,
        decay_factor=0.5,
    ):
        self.epochs = check_integer("epochs", epochs, minimum=1)
        self.warmup_epochs = check_integer("warmup_epochs", warmup_epochs, minimum=0)
        if plateau_patience is not None:
            plateau_patience = check_integer(
                "plateau_patience", plateau_patience, minimum=1
            )
        self._plateau_patience_arg = plateau_patience
        self.plateau_patience = (
            plateau_patience
            if plateau_patience is not None
            else max(1, round(0.05 * self.epochs))
        )
        self.min_delta = _check_float("min_delta", min_delta, minimum=0.0)
        self.extra_epochs_fraction = _check_float(
            "extra_epochs_fraction", extra_epochs_fraction, minimum=0.0
        )
        decay_factor = _check_float("decay_factor", decay_factor)
        if not 0.0 < decay_factor < 1.0:
            raise ValueError(
                "Argument `decay_factor` must be in (0, 1). "
                f"Received: decay_factor={decay_factor}"
            )
        self.decay_factor = decay_factor
        if self.warmup_epochs >= self.epochs:
            warnings.warn(
                f"TwoPhaseController: `warmup_epochs={self.warmup_epochs}` is "
                f"not below the budget `epochs={self.epochs}`: no loss plateau "
                "can be detected and the learning rate will never be decayed.",
                stacklevel=2,
            )
        self._state = TwoPhaseState()
        self._warned_budget = False
        self._warned_nonfinite = False

    # -- read-only views -------------------------------------------------------
    @property
    def state(self):
        """The current `TwoPhaseState` (immutable)."""
        return self._state

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

    @property
    def lr_factor(self):
        """Product of the decays so far (1.0 before the first)."""
        return self._state.lr_factor

    @property
    def next_epoch(self):
        """The epoch index `step` expects next."""
        return self._state.next_epoch

    def alpha(self, completed_epochs):
        """Extra epochs after a plateau detected with `completed_epochs` done."""
        return round(self.extra_epochs_fraction * completed_epochs)

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
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral):
            raise TypeError(
                f"Argument `epoch` must be an int. Received: epoch={epoch!r}"
            )
        epoch = int(epoch)
        if epoch != self._state.next_epoch:
            raise ValueError(
                f"TwoPhaseController expected epoch {self._state.next_epoch} "
                f"next, but `step` received epoch={epoch}. Epochs must be "
                "stepped in order, once each; when resuming, restore the "
                "controller's state (`set_state`) saved at the end of the "
                "epoch before the one training resumes at."
            )
        loss = float(loss)
        if eigenvalue is not None:
            eigenvalue = float(eigenvalue)
        state, factor, nonfinite = _transition(self, self._state, epoch, loss, eigenvalue)
        if nonfinite and not self._warned_nonfinite:
            self._warned_nonfinite = True
            warnings.warn(
                f"TwoPhaseController: non-finite value at epoch {epoch} "
                f"(loss={loss}, eigenvalue={eigenvalue}); no decision was made "
                "for this epoch. Further non-finite values are skipped silently.",
                stacklevel=2,
            )
        if (
            state.plateau_detected
            and not self._state.plateau_detected
            and state.switch_epoch >= self.epochs
            and not self._warned_budget
        ):
            self._warned_budget = True
            n = epoch + 1
            warnings.warn(
                f"TwoPhaseController: loss plateau detected at epoch {epoch} "
                f"({n} epochs completed); with alpha={self.alpha(n)} extra "
                f"epochs the phase switch falls at epoch {state.switch_epoch}, "
                f"beyond the budget of epochs={self.epochs}: the convergence "
                "phase will not run within the budget.",
                stacklevel=2,
            )
        self._state = state
        return factor

    def reset(self):
        """Forgets all progress (a new run)."""
        self._state = TwoPhaseState()

    # -- persistence -------------------------------------------------------------
    def get_config(self):
        """The constructor arguments."""
        return {
            "epochs": self.epochs,
            "warmup_epochs": self.warmup_epochs,
            "plateau_patience": self._plateau_patience_arg,
            "min_delta": self.min_delta,
            "extra_epochs_fraction": self.extra_epochs_fraction,
            "decay_factor": self.decay_factor,
        }

    @classmethod
    def from_config(cls, config):
        """Builds a controller from `get_config()`'s output."""
        config = dict(config)
        epochs = config.pop("epochs")
        return cls(epochs, **config)

    def get_state(self):
        """The state and configuration as a JSON-serialisable dict."""
        state = dataclasses.asdict(self._state)
        state["decay_epochs"] = list(self._state.decay_epochs)
        return {
            "version": STATE_VERSION,
            "config": self.get_config(),
            "state": state,
        }

    def set_state(self, state):
        """Restores a state saved by `get_state()` (same configuration)."""
        if not isinstance(state, dict) or set(state) != {
            "version",
            "config",
            "state",
        }:
            raise ValueError(
                "Argument `state` must be a dict from "
                "`TwoPhaseController.get_state()`. "
                f"Received: state={state!r}"
            )
        if state["version"] != STATE_VERSION:
            raise ValueError(
                f"Unsupported state version {state['version']!r}; this "
                f"controller reads version {STATE_VERSION}."
            )
        if state["config"] != self.get_config():
            raise ValueError(
                "The saved state was made by a controller with another "
                f"configuration. Saved: {state['config']}; this controller: "
                f"{self.get_config()}"
            )
        fields = {f.name for f in dataclasses.fields(TwoPhaseState)}
        values = state["state"]
        if not isinstance(values, dict) or set(values) != fields:
            raise ValueError(
                f"The saved state must have the fields {sorted(fields)}. "
                f"Received: {values!r}"
            )
        values = dict(values)
        if values["phase"] not in (EXPLORATION, CONVERGENCE):
            raise ValueError(
                f"Invalid saved phase. Received: phase={values['phase']!r}"
            )
        values["decay_epochs"] = tuple(int(e) for e in values["decay_epochs"])
        self._state = TwoPhaseState(**values)


def _transition(controller, s, epoch, loss, eigenvalue):
    """Pure update: returns `(next_state, factor, skipped_nonfinite)`."""
    c = controller
    update = {"next_epoch": epoch + 1}
    nonfinite = False

    if not s.plateau_detected and epoch >= c.warmup_epochs:
        if not math.isfinite(loss):
            nonfinite = True
        elif s.best is None or loss < s.best - c.min_delta:
            update.update(best=loss, wait=0)
        else:
            wait = s.wait + 1
            update["wait"] = wait
            if wait >= c.plateau_patience:
                n = epoch + 1
                update.update(plateau_epoch=epoch, switch_epoch=n + c.alpha(n) - 1)

    switch_epoch = update.get("switch_epoch", s.switch_epoch)
    factor = 1.0
    if switch_epoch is not None and epoch >= switch_epoch:
        if eigenvalue is None:
            raise ValueError(
                f"TwoPhaseController needs the largest Hessian eigenvalue at "
                f"epoch {epoch} (switch epoch {switch_epoch}); received "
                "eigenvalue=None. Call `wants_eigenvalue(epoch)` before `step`."
            )
        finite = math.isfinite(loss) and math.isfinite(eigenvalue)
        nonfinite = nonfinite or not finite
        if epoch == switch_epoch:
            update["phase"] = CONVERGENCE
            if finite:
                update.update(h0=eigenvalue, f0=loss)
        elif finite:
            if (
                s.h0 is not None
                and s.h0 > 0
                and eigenvalue > s.h0
                and loss > s.f0
            ):
                factor = c.decay_factor
                update.update(
                    h0=0.0,
                    lr_factor=s.lr_factor * c.decay_factor,
                    decay_epochs=s.decay_epochs + (epoch,),
                )
            else:
                update.update(h0=eigenvalue, f0=loss)
    return dataclasses.replace(s, **update), factor, nonfinite


def _check_float(name, value, minimum=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"Argument `{name}` must be a number. Received: {name}={value!r}"
        )
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(
            f"Argument `{name}` must be finite. Received: {name}={value}"
        )
    if minimum is not None and value < minimum:
        raise ValueError(
            f"Argument `{name}` must be >= {minimum}. Received: {name}={value}"
        )
    return value
