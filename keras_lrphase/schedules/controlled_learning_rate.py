"""The one mechanism through which every callback of the package moves the LR.

Keras lets a callback change the learning rate by assigning a float to
`optimizer.learning_rate`, the optimizer's float variable (that is what
`ReduceLROnPlateau` does). `ControlledLearningRate` keeps that contract:

* **On a float learning rate** the optimizer's own variable stays the one
  truth. A controller's decay multiplies it in place (clamped at the
  controller's `min_lr`), exactly like `ReduceLROnPlateau`, so Keras' LR
  callbacks and `optimizer.learning_rate = x` keep working and compose
  with the package's decays; checkpoints (`BackupAndRestore`,
  `ModelCheckpoint`) save the decayed value; on JAX the variable is part of
  the train step's state, so a decay costs no retrace; and after `fit` the
  optimizer holds a plain float carrying the decays.
* **On a `LearningRateSchedule`**, which has no variable to set, the
  controllers' factors multiply it inside the train step (their product is
  the `scale` variable of a `ScaledLearningRate`); the schedule is given
  back unscaled after `fit` (a schedule cannot carry them), and the factor
  is applied again when the controller continues.
* **A per-step warmup ramp** (`GradualWarmup`) is computed inside the train
  step by a `ScaledLearningRate`, so warmup costs no per-batch callback.

The callable `ScaledLearningRate` is installed only while a callback needs
it (a ramp, a schedule base) and removed at the end of `fit`.

Momentum correction (Goyal et al. 2017, Section 2.2): Keras' SGD and the
package's LARS keep the learning rate inside their velocity
(v = m v - lr g), so after a cut the old velocity keeps the old step size
for about 1/(1 - m) steps. `correct_momentum(step)` rescales the velocities
by lr_new / lr_old at an epoch boundary where the learning rate in force
changed (a controller's decay, a step of a schedule, `ReduceLROnPlateau`);
the warmup ramp is not a change in this sense.

The control is one object per optimizer, found with
`ControlledLearningRate.install(optimizer)`; its state (the factors and the
learning rate recorded at the last epoch starts) is saved with the package's
callbacks' resume state.
"""

import contextlib
import math
import weakref

import keras
import numpy as np
from keras import ops

from keras_lrphase._validation import check_integer
from keras_lrphase._validation import check_name
from keras_lrphase._validation import check_number
from keras_lrphase._validation import check_positive
from keras_lrphase._validation import fail
from keras_lrphase.backend import keras_compat
from keras_lrphase.schedules.scaled_learning_rate import ScaledLearningRate

STATE_VERSION = 1
_CONTROLS = weakref.WeakKeyDictionary()


class ControlledLearningRate:
    """The learning rate of one optimizer, as the package's callbacks control it.

    Users rarely touch it: the package's callbacks call
    `ControlledLearningRate.install(optimizer)`, which returns the same
    object to every caller. Each controller owns a named multiplicative
    factor; the learning rate in force is the optimizer's own learning rate
    (a float or a schedule) times those factors, times a warmup ramp.

    Example:

    >>> import keras
    >>> from keras_lrphase import ControlledLearningRate
    >>> opt = keras.optimizers.SGD(0.1)
    >>> lr = ControlledLearningRate.install(opt)
    >>> lr.set_factor("my_controller", 0.5)
    0.5
    >>> round(float(opt.learning_rate), 6)  # still a plain, settable float
    0.05
    >>> opt.learning_rate = 0.2  # e.g. ReduceLROnPlateau; decays compose
    >>> applied = lr.scale_by("my_controller", 0.5, min_lr=0.15)  # clamped
    >>> round(applied, 4)
    0.75
    >>> round(float(opt.learning_rate), 6)
    0.15

    References:
        Goyal et al. 2017, "Accurate, Large Minibatch SGD: Training ImageNet
        in 1 Hour", Section 2.2 (warmup, momentum correction).
    """

    def __init__(self, optimizer):
        owner = keras_compat.learning_rate_owner(optimizer)
        current = keras_compat.current_learning_rate_object(owner)
        if isinstance(current, ScaledLearningRate):  # left by an interrupted fit
            current = current.base
        if not isinstance(
            current,
            (keras.Variable, keras.optimizers.schedules.LearningRateSchedule),
        ):
            fail(
                "optimizer",
                optimizer,
                "must have a float learning rate or a "
                "keras.optimizers.schedules.LearningRateSchedule (a plain "
                "callable cannot be scaled in the train step); its learning "
                f"rate is {current!r}",
            )
        self.owner = owner
        self.base = current
        self.factors = {}
        self.version = 0
        self.structure_version = 0
        self._wrapper = None
        self._users = weakref.WeakSet()
        self._records = []
        self._corrected_step = None

    # -- one object per optimizer --------------------------------------------
    @classmethod
    def install(cls, optimizer):
        """Returns the optimizer's control, creating it once.

        Nothing changes in the optimizer until a callback `acquire`s the
        control for a warmup ramp or for factors on a schedule, or a factor
        is set on a schedule.

        Args:
            optimizer: A `keras.optimizers.Optimizer`, or a wrapper exposing
                `inner_optimizer` (`LossScaleOptimizer`, `LARSWrapper`).
        """
        owner = keras_compat.learning_rate_owner(optimizer)
        control = _CONTROLS.get(owner)
        current = keras_compat.current_learning_rate_object(owner)
        if control is None or (
            current is not control.base and current is not control._wrapper
        ):  # new, or the user gave the optimizer another learning rate
            control = cls(owner)
            _CONTROLS[owner] = control
        return control

    @property
    def is_float(self):
        """Whether the base is the optimizer's float learning-rate variable."""
        return isinstance(self.base, keras.Variable)

    @property
    def installed(self):
        """Whether the in-graph `ScaledLearningRate` is in the optimizer."""
        return (
            keras_compat.current_learning_rate_object(self.owner)
            is self._wrapper
            and self._wrapper is not None
        )

    def acquire(self, user, model, warmup=False, scales=False):
        """Registers callback `user` for one `fit` (called from `set_model`).

        Args:
            user: The callback.
            model: The model being fit; its train function is traced again
                when the in-graph scaling is installed now.
            warmup: Bool. Whether `user` needs the in-graph warmup ramp.
            scales: Bool. Whether `user` sets factors (which a schedule
                base needs in the train step).
        """
        self._users.add(user)
        if warmup or (scales and not self.is_float):
            if self._install_wrapper():
                keras_compat.drop_train_function(model)
                self._mark_traced(model)

    def release(self, user, model):
        """Ends `user`'s `fit`; the last one restores the optimizer's own LR.

        The float variable stays with the decays; a schedule is given back
        unscaled. The train function is traced again by the next `fit`.
        """
        self._users.discard(user)
        if self._users or not self.installed:
            return
        keras_compat.replace_learning_rate_object(self.owner, self.base)
        keras_compat.drop_train_function(model)
        self.version += 1
        self.structure_version += 1
        self._mark_traced(model)

    def _install_wrapper(self):
        if self.installed:
            return False
        if self._wrapper is None:
            self._wrapper = ScaledLearningRate(
                self.base,
                keras_compat.raw_step_variable(self.owner),
                _scalar_variable("lrphase_scale", math.prod(self._schedule_factors())),
                _scalar_variable("lrphase_warmup_steps", 0.0),
                _scalar_variable("lrphase_warmup_initial_fraction", 1.0),
            )
        keras_compat.replace_learning_rate_object(self.owner, self._wrapper)
        self.version += 1
        self.structure_version += 1
        return True

    def _schedule_factors(self):
        return self.factors.values() if not self.is_float else ()

    @contextlib.contextmanager
    def plain_learning_rate(self):
        """Within it, the optimizer holds its own learning rate (for saving).

        A model saved inside it records the optimizer's float or schedule,
        so it loads without the package; the train step is not affected.
        """
        if not self.installed:
            yield
            return
        keras_compat.replace_learning_rate_object(self.owner, self.base)
        try:
            yield
        finally:
            keras_compat.replace_learning_rate_object(self.owner, self._wrapper)

    # -- factors ---------------------------------------------------------------
    def factor(self, name):
        """The product of controller `name`'s applied factors (1.0 if none)."""
        return self.factors.get(name, 1.0)

    def scale_by(self, name, ratio, min_lr=None):
        """Multiplies the learning rate in force by `ratio` for controller `name`.

        A decay (`ratio < 1`) that would take the learning rate in force
        below `min_lr` is clamped to `min_lr`; one that starts below it
        changes nothing.

        Args:
            name: String. The controller's factor name.
            ratio: Float > 0. The multiplier.
            min_lr: Float >= 0 or None. Floor for decays.

        Returns:
            The ratio applied (smaller in effect than `ratio` when clamped).
        """
        check_name("name", name)
        ratio = check_positive("ratio", ratio)
        if ratio == 1.0:
            return 1.0
        if min_lr is not None and ratio < 1.0:
            step = keras_compat.raw_step(self.owner)
            current = self.value_without_warmup_at(step)
            target = max(current * ratio, float(min_lr))
            ratio = min(1.0, target / current) if current > 0 else 1.0
            if ratio == 1.0:
                return 1.0
        self.factors[name] = self.factor(name) * ratio
        if self.is_float:
            self.base.assign(float(ops.convert_to_numpy(self.base)) * ratio)
        else:
            self._set_scale()
        return ratio

    def set_factor(self, name, value):
        """Sets controller `name`'s total factor to `value` (no floor).

        Returns:
            The ratio applied to the learning rate in force.
        """
        value = check_positive("value", value)
        return self.scale_by(name, value / self.factor(name))

    def restore_factors(self, factors):
        """Sets the factor bookkeeping from a saved state.

        On a float base the restored variable already carries the factors,
        so only the bookkeeping changes; on a schedule base the in-graph
        scale is set to their product.
        """
        self.factors = {str(k): float(v) for k, v in factors.items()}
        if not self.is_float:
            self._set_scale()

    def forget_factor(self, name):
        """Drops controller `name`'s factor (a new run of that controller).

        A float learning rate keeps its value, as it would after
        `ReduceLROnPlateau`; on a schedule the factor stops applying.
        """
        if self.factors.pop(name, None) is not None and not self.is_float:
            self._set_scale()

    def _set_scale(self):
        scale = float(np.float32(math.prod(self.factors.values())))
        if self._wrapper is None:
            self._install_wrapper()
        if float(ops.convert_to_numpy(self._wrapper.scale)) != scale:
            self._wrapper.scale.assign(scale)
            self.version += 1

    # -- warmup and base --------------------------------------------------------
    def set_warmup(self, steps, initial_fraction):
        """Starts a linear warmup of `steps` raw steps from `initial_fraction`."""
        steps = check_integer("steps", steps, 0)
        initial_fraction = check_number(
            "initial_fraction", initial_fraction, minimum=0.0, maximum=1.0,
            exclusive_minimum=True,
        )
        self._install_wrapper()
        wrapper = self._wrapper
        wanted = (float(steps), float(np.float32(initial_fraction)))
        current = (
            float(ops.convert_to_numpy(wrapper.warmup_steps)),
            float(ops.convert_to_numpy(wrapper.warmup_initial_fraction)),
        )
        if current != wanted:
            wrapper.warmup_steps.assign(wanted[0])
            wrapper.warmup_initial_fraction.assign(initial_fraction)
            self.version += 1

    def set_base(self, value):
        """Sets the float learning rate (the target of a warmup ramp)."""
        value = check_positive("value", value)
        if not self.is_float:
            fail(
                "value", value,
                "cannot be set: the optimizer's learning rate is the schedule "
                f"{type(self.base).__name__}",
            )
        self.base.assign(value)

    # -- reading ----------------------------------------------------------------
    def value_without_warmup_at(self, step):
        """The learning rate in force at raw step `step`, without the ramp."""
        if self.is_float:
            return float(ops.convert_to_numpy(self.base))
        base = float(ops.convert_to_numpy(self.base(step)))
        return base * math.prod(self.factors.values())

    def value_at(self, step):
        """The learning rate at raw step `step`, as a Python float."""
        if self.installed:
            return float(ops.convert_to_numpy(self._wrapper.value(step)))
        return self.value_without_warmup_at(step)

    def last_step_value(self):
        """The learning rate the last completed step was trained with.

        Computed from the learning rate recorded when the epoch started
        (`enter_epoch`), so decisions already made at this epoch end, by
        the package or by Keras' callbacks, do not change it; in float32,
        in the order the train step computes it.
        """
        step = max(keras_compat.raw_step(self.owner) - 1, 0)
        control = self._records[-1][1] if self._records else self._control_value()
        value = np.float32(self._schedule_value(step)) * np.float32(control)
        if self.installed:
            ramp = ops.convert_to_numpy(self._wrapper.warmup_factor(step))
            value = value * np.float32(ramp)
        return float(value)

    def refresh(self, model):
        """Makes `model`'s next train step use the current in-graph values.

        Traces the train step again when the in-graph scaling was installed
        or removed since it was traced (`structure_version`). Otherwise, on
        TensorFlow and torch the step reads the variables live and nothing
        is needed; on JAX the values that are not optimizer variables (the
        scale on a schedule base, the ramp's length) are constants of the
        trace, so it is traced again when they changed (`version`): once per
        change. The float learning rate is an optimizer variable and never
        needs this. The package's callbacks call it at every epoch start.
        """
        if getattr(model, "_lrphase_lr_version", None) == self._trace_version():
            return
        keras_compat.retrace_train_function(model)
        self._mark_traced(model)

    def _trace_version(self):
        if keras.backend.backend() == "jax":
            return self.version
        return self.structure_version

    def _mark_traced(self, model):
        """Records that `model`'s next trace sees the current values."""
        model._lrphase_lr_version = self._trace_version()

    # -- epoch boundaries: momentum correction, stage ends -------------------------
    def _control_value(self):
        if self.is_float:
            return float(ops.convert_to_numpy(self.base))
        return math.prod(self.factors.values())

    def _schedule_value(self, step):
        if self.is_float:
            return 1.0
        return float(ops.convert_to_numpy(self.base(max(step, 0))))

    def enter_epoch(self, step):
        """Records the learning rate in force at the epoch starting at `step`.

        Idempotent per step; called by every package callback at
        `on_epoch_begin` (after the epoch-end decisions of the previous
        epoch).
        """
        if self._records and self._records[-1][0] == step:
            return
        self._records = (self._records + [(int(step), self._control_value())])[-2:]

    def boundary(self, step):
        """The change of the learning rate in force at the epoch start `step`.

        Returns:
            None before the second recorded epoch start, else a dict:
            `previous` and `next` (the learning rate without warmup ramp at
            steps `step - 1` and `step`), `controlled_drop` (a drop of the
            float variable or of the controllers' factors) and
            `schedule_step` (the schedule dropped at `step` after being flat
            over the two steps before: a step schedule, not a smooth one).
        """
        if len(self._records) < 2 or self._records[-1][0] != step:
            return None
        (_, before), (_, now) = self._records
        previous = self._schedule_value(step - 1) * before
        following = self._schedule_value(step) * now
        schedule_step = (
            not self.is_float
            and step >= 2
            and self._schedule_value(step) < self._schedule_value(step - 1)
            and self._schedule_value(step - 1) == self._schedule_value(step - 2)
        )
        return {
            "previous": previous,
            "next": following,
            "controlled_drop": now < before,
            "schedule_step": schedule_step,
        }

    def correct_momentum(self, step):
        """Rescales the velocities by lr_new / lr_old at the epoch start `step`.

        Idempotent per step. Applies to Keras' `SGD` and the package's
        `LARS` (directly or inside `LossScaleOptimizer` / `LARSWrapper`).

        Returns:
            The ratio applied (1.0 when the learning rate did not change).
        """
        if self._corrected_step == step:
            return 1.0
        change = self.boundary(step)
        self._corrected_step = step
        if change is None or change["previous"] <= 0:
            return 1.0
        ratio = change["next"] / change["previous"]
        if ratio == 1.0:
            return 1.0
        for velocity in velocity_variables(self.owner) or ():
            velocity.assign(velocity * ops.cast(ratio, velocity.dtype))
        return ratio

    # -- state --------------------------------------------------------------------
    def get_state(self):
        """The factors and boundary records, JSON-serialisable."""
        return {
            "version": STATE_VERSION,
            "factors": dict(self.factors),
            "records": [[s, v] for s, v in self._records],
        }

    def set_state(self, state):
        """Restores `get_state()`'s output (from a checkpoint or a file)."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            fail("state", state, "must come from ControlledLearningRate.get_state()")
        self.restore_factors(state["factors"])
        self._records = [(int(s), float(v)) for s, v in state["records"]][-2:]


def last_step_learning_rate(optimizer):
    """The learning rate of the optimizer's last completed step, as a float.

    The one reader of "the learning rate an epoch was trained with": the
    optimizer's `ControlledLearningRate` when a package callback installed
    one (which also survives decisions made at this epoch end), else the
    optimizer's float or schedule evaluated at the last raw step, which is
    what Keras passed to it for the last batch.
    """
    owner = keras_compat.learning_rate_owner(optimizer)
    control = _CONTROLS.get(owner)
    if control is not None:
        return control.last_step_value()
    rate = keras_compat.current_learning_rate_object(owner)
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        step = max(keras_compat.raw_step(owner) - 1, 0)
        return float(ops.convert_to_numpy(rate(step)))
    if callable(rate) and not isinstance(rate, keras.Variable):
        return float(ops.convert_to_numpy(rate()))
    return float(ops.convert_to_numpy(rate))


def velocity_variables(optimizer):
    """The velocity variables that hold the learning rate, or raises.

    Keras' `SGD` (`momentums`, empty when `momentum=0`) and the package's
    `LARS` (`velocities`).
    """
    from keras_lrphase.optimizers.lars import LARS

    owner = keras_compat.learning_rate_owner(optimizer)
    if isinstance(owner, keras.optimizers.SGD):
        return list(getattr(owner, "momentums", []) or [])
    if isinstance(owner, LARS):
        return list(getattr(owner, "velocities", []) or [])
    return None


def supports_momentum_correction(optimizer):
    """Whether `velocity_variables` knows the optimizer's velocities."""
    return velocity_variables(optimizer) is not None


def _scalar_variable(name, value):
    return keras.Variable(
        float(value), name=name, dtype="float32", trainable=False,
        aggregation="only_first_replica",
    )
