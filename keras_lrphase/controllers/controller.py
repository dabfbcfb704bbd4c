"""The controller protocol: pure learning-rate decision logic, no Keras.

A controller sees one epoch at a time: the epoch index and the metrics it
asked for (`required_metrics(epoch)`: the epoch loss, and e.g. the largest
Hessian eigenvalue only from some epoch on). It returns a `Decision`: the
factor to multiply the learning rate by now, whether training should stop,
and named events (`"switch"`, `"decay"`, `"stop"`, ...). Its memory is a
frozen state dataclass; `get_state()` / `set_state()` save and restore it
as versioned JSON together with the configuration, and refuse a state saved
by another kind of controller or another configuration. Epochs are stepped
in order, once each, so a restored controller continues exactly.

`keras_lrphase.callbacks.ControllerCallback` is the one Keras adapter that
drives any controller; `TwoPhaseController` and `AutoDecayController` are
the package's controllers.
"""

import abc
import dataclasses
import math
import numbers

from keras_lrphase import _warnings
from keras_lrphase._validation import fail

# The version of the envelope `get_state()` writes when a controller class
# does not set its own `state_version`.
STATE_VERSION = 1

# The metric names controllers use. `ControllerCallback` maps `LOSS` to the
# epoch log it monitors and asks its metric providers for the others.
LOSS = "loss"
HESSIAN_EIGENVALUE = "hessian_max_eigenvalue"


@dataclasses.dataclass(frozen=True)
class Decision:
    """What a controller decided at the end of one epoch.

    Attributes:
        factor: Float > 0. Multiply the learning rate by it now (1.0: no
            change).
        stop: Bool. Whether training should stop after this epoch.
        events: Tuple of strings. What happened, in order (e.g.
            `("plateau", "switch")`, `("decay",)`, `("stop",)`).
    """

    factor: float = 1.0
    stop: bool = False
    events: tuple = ()


class Controller(abc.ABC):
    """Base class of the package's learning-rate controllers.

    Subclasses set `name` (the factor name and state key the Keras adapter
    uses), `state_class` (a frozen dataclass whose fields are listed in
    `FIELDS` with their kind) and implement `required_metrics`,
    `_transition` and `get_config`.

    Example:

    >>> from keras_lrphase.controllers.controller import Controller, Decision
    >>> import dataclasses
    >>> @dataclasses.dataclass(frozen=True)
    ... class HalveState:
    ...     next_epoch: int = 0
    ...     lr_factor: float = 1.0
    >>> class HalveEveryTenth(Controller):
    ...     name = "halve"
    ...     state_class = HalveState
    ...     FIELDS = {"next_epoch": "count", "lr_factor": "positive"}
    ...     def required_metrics(self, epoch):
    ...         return ()
    ...     def _transition(self, state, epoch, metrics):
    ...         if epoch % 10 == 9:
    ...             return (dataclasses.replace(state, next_epoch=epoch + 1,
    ...                     lr_factor=state.lr_factor / 2), Decision(0.5))
    ...         return dataclasses.replace(state, next_epoch=epoch + 1), Decision()
    ...     def get_config(self):
    ...         return {}
    >>> c = HalveEveryTenth()
    >>> [c.decide(e, {}).factor for e in range(10)][-2:]
    [1.0, 0.5]
    >>> c.get_state()["state"]
    {'next_epoch': 10, 'lr_factor': 0.5}
    """

    name = None
    state_class = None
    FIELDS = {}
    # The version of this controller's saved state. A subclass that adds
    # state fields or configuration keys raises it and reads the older
    # versions in `_upgrade_state`.
    state_version = STATE_VERSION

    def __init__(self):
        self._state = self.state_class()
        self._warned = set()

    # -- the protocol ----------------------------------------------------------
    @abc.abstractmethod
    def required_metrics(self, epoch):
        """The metric names `decide(epoch, ...)` needs, as a tuple."""

    @abc.abstractmethod
    def _transition(self, state, epoch, metrics):
        """Pure update: returns `(next_state, Decision)`."""

    @abc.abstractmethod
    def get_config(self):
        """The constructor arguments, JSON-serialisable."""

    @classmethod
    def from_config(cls, config):
        """Builds a controller from `get_config()`'s output."""
        return cls(**config)

    def decide(self, epoch, metrics):
        """Records the end of `epoch` and returns the `Decision`.

        Args:
            epoch: Int. The epoch that just ended; must be `next_epoch`.
            metrics: Dict of metric name to float, holding at least
                `required_metrics(epoch)` (a missing one is an error; a
                non-finite one makes no decision).

        Returns:
            A `Decision`.
        """
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral):
            raise TypeError(
                f"Argument `epoch` must be an int. Received: epoch={epoch!r}"
            )
        epoch = int(epoch)
        expected = self._state.next_epoch
        if epoch != expected:
            raise ValueError(
                f"{type(self).__name__} expected epoch {expected} next, but "
                f"received epoch={epoch}. Epochs must be stepped in order, "
                "once each; when resuming, restore the controller's state "
                "(`set_state`) saved at the end of the epoch before the one "
                "training resumes at."
            )
        values = {k: (None if v is None else float(v)) for k, v in metrics.items()}
        state, decision = self._transition(self._state, epoch, values)
        self._state = state
        return decision

    def _missing_message(self, epoch, missing):
        return (
            f"{type(self).__name__} needs {missing} at epoch={epoch} (an index from 0); call "
            "`required_metrics(epoch)` before `decide`."
        )

    def warn_once(self, key, message):
        """Warns with `message` the first time `key` is seen."""
        if key not in self._warned:
            self._warned.add(key)
            _warnings.warn(message)

    # -- read-only views ----------------------------------------------------------
    @property
    def state(self):
        """The current state (an immutable dataclass)."""
        return self._state

    @property
    def next_epoch(self):
        """The epoch index `decide` expects next."""
        return self._state.next_epoch

    @property
    def lr_factor(self):
        """Product of the decays so far (1.0 before the first)."""
        return self._state.lr_factor

    @property
    def should_stop(self):
        """Whether the controller has decided to stop training."""
        return False

    def reset(self):
        """Forgets all progress (a new run)."""
        self._state = self.state_class()

    # -- persistence -----------------------------------------------------------------
    def get_state(self):
        """The state and configuration as a JSON-serialisable dict."""
        state = {}
        for field in dataclasses.fields(self._state):
            value = getattr(self._state, field.name)
            state[field.name] = list(value) if isinstance(value, tuple) else value
        return {
            "version": self.state_version,
            "controller": type(self).__name__,
            "config": self.get_config(),
            "state": state,
        }

    def _upgrade_state(self, state):
        """Reads a state saved by an older version of this controller.

        Returns the same dict in the current version's form, or raises
        `ValueError` saying why it cannot be read. Subclasses that raise
        `state_version` override it (and warn what they assume).
        """
        raise ValueError(
            f"Unsupported {type(self).__name__} state version "
            f"{state['version']!r}; this version of keras_lrphase reads "
            f"version {self.state_version}."
        )

    def set_state(self, state):
        """Restores a state saved by `get_state()` (same configuration).

        A state saved by an older version of the controller is upgraded
        first (`_upgrade_state`), which warns what it assumes.

        Raises:
            ValueError: naming what does not match, if `state` is not such a
                dict, was saved by another kind of controller or another
                configuration, or has a field of the wrong kind.
        """
        cls = type(self).__name__
        if not isinstance(state, dict) or set(state) != {
            "version", "controller", "config", "state",
        }:
            fail("state", state, f"must be a dict from `{cls}.get_state()`")
        if state["controller"] != cls:
            raise ValueError(
                f"The saved state was made by a {state['controller']}, not a "
                f"{cls}."
            )
        version = state["version"]
        if version != self.state_version:
            if (isinstance(version, bool) or not isinstance(version, int)
                    or not 1 <= version < self.state_version):
                raise ValueError(
                    f"Unsupported {cls} state version {version!r}; this "
                    "version of keras_lrphase reads versions 1 to "
                    f"{self.state_version}."
                )
            state = self._upgrade_state(state)
        if state["config"] != self.get_config():
            raise ValueError(
                "The saved state was made by a controller with another "
                f"configuration. Saved: {state['config']}; this controller: "
                f"{self.get_config()}"
            )
        values = state["state"]
        if not isinstance(values, dict) or set(values) != set(self.FIELDS):
            fail("state", values, f"must have the fields {sorted(self.FIELDS)}")
        checked = {
            name: _check_field(name, values[name], kind)
            for name, kind in self.FIELDS.items()
        }
        self._state = self.state_class(**checked)


def is_finite(*values):
    """Whether every value is a finite float (None counts as not finite)."""
    return all(v is not None and math.isfinite(v) for v in values)


def _check_field(name, value, kind):
    """Validates one saved state field of kind `kind` and returns it."""
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    if value is None and optional:
        return None
    if kind == "count":
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            fail(name, value, "must be an integer >= 0 in a saved state")
        return value
    if kind in ("number", "positive"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(name, value, "must be a number in a saved state")
        value = float(value)
        if kind == "positive" and not (value > 0 and math.isfinite(value)):
            fail(name, value, "must be a positive finite number in a saved state")
        return value
    if kind == "counts":
        if not isinstance(value, (list, tuple)) or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value
        ):
            fail(name, value, "must be a list of integers >= 0 in a saved state")
        return tuple(value)
    if kind == "numbers":
        if not isinstance(value, (list, tuple)) or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) for v in value
        ):
            fail(name, value, "must be a list of numbers in a saved state")
        return tuple(float(v) for v in value)
    if kind == "flag":
        if not isinstance(value, bool):
            fail(name, value, "must be True or False in a saved state")
        return value
    if kind.startswith("one of "):
        choices = kind[len("one of "):].split("|")
        if value not in choices:
            fail(name, value, f"must be one of {choices} in a saved state")
        return value
    raise AssertionError(f"unknown field kind {kind!r}")
