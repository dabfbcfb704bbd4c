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

The callable `ScaledLearningRate` is installed only in a `fit` that needs
it (a ramp not yet over, factors on a schedule), from its start or from
the epoch start where a factor first applies, and removed at the end of
that `fit`. If the `fit` raises (Keras then calls no `on_train_end`), it is
removed when the model next trains: by the package's callbacks of the next
`fit`, or, for a `fit` or `train_on_batch` without them, when Keras makes
its train step. The train steps with and without it are kept, so a program
that calls `fit` once per round traces each of them once, not per call.
While it is installed the optimizer's config (what `model.save` and
`ModelCheckpoint` record) holds the optimizer's own learning rate, so every
saved model loads without the package.

Momentum correction (Goyal et al. 2017, Section 2.2): Keras' SGD and the
package's LARS keep the learning rate inside their velocity
(v = m v - lr g), so after a cut the old velocity keeps the old step size
for about 1/(1 - m) steps. `correct_momentum(step)` rescales the velocities
at an epoch start where the learning rate in force changed since the
previous one (a controller's decay, a step of a schedule anywhere in the
epoch, `ReduceLROnPlateau`); the warmup ramp is not a change in this sense.
Which slots hold the learning rate is the optimizer's to say: a method
`learning_rate_slots()` returning them, with their decay per update as the
float attribute `momentum` (the package's `LARS` defines it, and so can any
optimizer); Keras' `SGD`, which cannot, is read by `keras_compat`. Other
optimizers are refused by the callbacks that correct momentum.

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
# A drop of a schedule smaller than this fraction of its value is float
# rounding of a smooth schedule (a slowly decaying cosine holds its float32
# value for some steps, then drops by one unit in the last place), not a
# step: a step schedule drops by far more.
_STEP_DROP_MIN = 1e-5


class _TrainSteps:
    """The train steps of one model with and without the in-graph scaling.

    `plain` is the model's own train function, the one Keras made (and
    keeps from one `fit` to the next); `scaled` the one traced while the
    scaling was installed, valid while `plain` is still the model's (a new
    `compile` makes a new one) and, on JAX, while the in-graph values it
    was traced with (`version`) are current.
    """

    def __init__(self):
        self.plain = None
        self.scaled = None
        self.version = None


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
        self.owner = owner
        self.base = current
        self.factors = {}
        self.version = 0
        self._wrapper = None
        self._ramp_requested = False
        self._installed_in = None
        self._steps = weakref.WeakKeyDictionary()
        self._records = []
        self._corrected_step = None
        self._warmups = weakref.WeakSet()
        self.frozen = FrozenVariables(owner)

    # -- one object per optimizer --------------------------------------------
    @classmethod
    def install(cls, optimizer, *, scaled=True):
        """Returns the optimizer's control, creating it once.

        The one object per optimizer through which the package's callbacks
        change how it trains: its learning rate (the factors, the warmup
        ramp, momentum correction) and the variables `FreezeLayers` leaves
        out of its updates (`frozen`). Nothing changes in the optimizer
        until a `fit` needs the in-graph scaling (see `refresh`) or a
        freeze.

        Args:
            optimizer: A `keras.optimizers.Optimizer`, or a wrapper exposing
                `inner_optimizer` (`LossScaleOptimizer`, `LARSWrapper`).
            scaled: Bool. Whether the caller scales the learning rate, which
                then must be a float or a `LearningRateSchedule` (a plain
                callable cannot be scaled in the train step). `FreezeLayers`
                passes `False`. Defaults to `True`.
        """
        owner = keras_compat.learning_rate_owner(optimizer)
        control = _CONTROLS.get(owner)
        current = keras_compat.current_learning_rate_object(owner)
        if control is None or (
            current is not control.base and current is not control._wrapper
        ):  # new, or the user gave the optimizer another learning rate
            previous = control
            control = cls(owner)
            if previous is not None:  # the freezes outlive the learning rate
                control.frozen = previous.frozen
            _CONTROLS[owner] = control
        if scaled and not control.scalable:
            fail(
                "optimizer",
                optimizer,
                "must have a float learning rate or a "
                "keras.optimizers.schedules.LearningRateSchedule (a plain "
                "callable cannot be scaled in the train step); its learning "
                f"rate is {control.base!r}",
            )
        return control

    @property
    def scalable(self):
        """Whether the base is a float variable or a schedule (not a callable)."""
        return isinstance(
            self.base,
            (keras.Variable, keras.optimizers.schedules.LearningRateSchedule),
        )

    @property
    def is_float(self):
        """Whether the base is the optimizer's float learning-rate variable."""
        return isinstance(self.base, keras.Variable)

    @property
    def installed(self):
        """Whether the in-graph `ScaledLearningRate` is in the optimizer."""
        return (
            self._wrapper is not None
            and keras_compat.current_learning_rate_object(self.owner)
            is self._wrapper
        )

    # -- the in-graph scaling, per fit ------------------------------------------
    def acquire(self, model):
        """Called by each package callback of a `fit` of `model` (`set_model`).

        Between two `fit` calls the scaling is never installed; found
        installed here, it was left by a `fit` that raised (Keras calls no
        `on_train_end` then), and is removed before this `fit` makes its
        train step.
        """
        self._end_fit()

    def note_warmup(self, warmup):
        """Registers a `GradualWarmup` of a `fit` (its `set_model`)."""
        self._warmups.add(warmup)

    def warmup_epochs_in_fit(self, callback):
        """The `warmup_epochs` of the `GradualWarmup` in `callback`'s `fit`.

        None when no `GradualWarmup` of this optimizer is in the same `fit`
        call as `callback` (see `keras_compat.same_fit`).
        """
        for warmup in list(self._warmups):
            if keras_compat.same_fit(callback, warmup):
                return warmup.warmup_epochs
        return None

    def release(self, model):
        """Ends the `fit` (any package callback's `on_train_end`).

        The optimizer gets its own learning rate back: the float variable
        with the decays, a schedule unscaled. The model gets back its own
        train step; the scaled one is kept for the next `fit` that needs it.
        """
        self._end_fit()

    def _end_fit(self):
        self._ramp_requested = False  # set again by the next fit's warmup
        if self.installed:
            self._uninstall()

    def refresh(self, model):
        """Makes `model`'s next train step use the current in-graph values.

        The package's callbacks call it at `on_train_begin` (warmup) and at
        every epoch start (controllers). It installs the in-graph scaling
        when this `fit` needs it: a warmup ramp set up in this `fit` that is
        not over, or factors other than 1 on a schedule. Installed, the
        train step is the one traced with it (kept from an earlier `fit`
        when still valid). On TensorFlow and torch the step reads its
        variables live; on JAX the values that are not optimizer variables
        (the scale on a schedule base, the ramp's length) are constants of
        the trace, so the step is traced again when they changed
        (`version`): once per change. The float learning rate is an
        optimizer variable and never needs this.
        """
        if not self.installed:
            if not self._needed(keras_compat.raw_step(self.owner)):
                return
            self._install(model)
            return
        steps = self._steps_of(model)
        current = keras_compat.train_function(model)
        if current is not steps.scaled and current is not None:
            steps.scaled = current  # made since (FreezeLayers, a forced one)
        if keras.backend.backend() == "jax" and steps.version != self.version:
            steps.scaled = keras_compat.trace_train_function_anew(model)
            steps.version = self.version

    def _needed(self, step):
        if self._wrapper is None:
            return False
        ramp = self._ramp_requested and step < float(
            ops.convert_to_numpy(self._wrapper.warmup_steps))
        return ramp or (not self.is_float and self._scale() != 1.0)

    def _install(self, model):
        keras_compat.replace_learning_rate_object(self.owner, self._wrapper)
        keras_compat.serialize_learning_rate_as(self.owner, lambda: self.base)
        keras_compat.intercept_make_train_function(
            model, lambda force: self._on_make_train_function(model, force))
        self._installed_in = weakref.ref(model)
        steps = self._steps_of(model)
        current = keras_compat.train_function(model)
        if (
            steps.scaled is not None
            and current is steps.plain
            and (keras.backend.backend() != "jax" or steps.version == self.version)
        ):
            keras_compat.set_train_function(model, steps.scaled)
            return
        steps.plain = current
        steps.scaled = keras_compat.trace_train_function_anew(model)
        steps.version = self.version

    def _uninstall(self):
        keras_compat.replace_learning_rate_object(self.owner, self.base)
        keras_compat.serialize_learning_rate_as(self.owner, None)
        model = self._installed_in() if self._installed_in is not None else None
        self._installed_in = None
        if model is None:
            return
        keras_compat.intercept_make_train_function(model, None)
        steps = self._steps_of(model)
        current = keras_compat.train_function(model)
        if current is None:
            # Dropped meanwhile (a new `compile`, FreezeLayers): Keras makes
            # the next one.
            steps.plain = steps.scaled = None
            return
        if current is not steps.plain:
            steps.scaled = current
        keras_compat.set_train_function(model, steps.plain)

    def _on_make_train_function(self, model, force):
        """Keras makes the train step of `model` while the scaling is installed.

        With `force=False` that is the start of a `fit` or `train_on_batch`
        call, so the `fit` that installed the scaling has ended with an
        exception: it is removed and Keras makes (or reuses) its own step.
        With `force=True` someone asks for a new step during the `fit`: it
        is traced as a new function (see
        `keras_compat.trace_train_function_anew`).
        """
        owner = getattr(model, "optimizer", None)
        if not force or owner is None or (
            keras_compat.learning_rate_owner(owner) is not self.owner
        ):
            self._end_fit()
            keras_compat.intercept_make_train_function(model, None)
            return False
        keras_compat.trace_train_function_anew(model)
        return True

    def _steps_of(self, model):
        steps = self._steps.get(model)
        if steps is None:
            steps = self._steps[model] = _TrainSteps()
        return steps

    def _wrapper_variables(self):
        if self._wrapper is None:
            self._wrapper = ScaledLearningRate(
                self.base,
                keras_compat.raw_step_variable(self.owner),
                _scalar_variable("lrphase_scale", 1.0),
                _scalar_variable("lrphase_warmup_steps", 0.0),
                _scalar_variable("lrphase_warmup_initial_fraction", 1.0),
            )
        return self._wrapper

    def _scale(self):
        return float(ops.convert_to_numpy(self._wrapper.scale))

    @contextlib.contextmanager
    def float_learning_rate_saved_as(self, value):
        """Within it, a float learning rate holds `value` (to save a model).

        A model saved inside it records `value` as its learning rate (the
        optimizer's variable and config), then the variable gets its value
        back. A schedule is saved as it is.
        """
        if not self.is_float or value is None:
            yield
            return
        kept = ops.convert_to_numpy(self.base)
        self.base.assign(value)
        try:
            yield
        finally:
            self.base.assign(kept)

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
        wrapper = self._wrapper_variables()
        if self._scale() != scale:
            wrapper.scale.assign(scale)
            self.version += 1

    # -- warmup and base --------------------------------------------------------
    def set_warmup(self, steps, initial_fraction):
        """Sets up, for this `fit`, a linear warmup of `steps` raw steps.

        The ramp goes from `initial_fraction` at step 0 of the optimizer to 1
        at step `steps`; it applies in the `fit` that sets it up
        (`GradualWarmup` does at each `on_train_begin`), from the next
        `refresh`.
        """
        steps = check_integer("steps", steps, 0)
        initial_fraction = check_number(
            "initial_fraction", initial_fraction, minimum=0.0, maximum=1.0,
            exclusive_minimum=True,
        )
        wrapper = self._wrapper_variables()
        self._ramp_requested = steps > 0
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
        if self._wrapper is not None:
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

    def schedule_step_in(self, first, last):
        """The first step in `[first, last]` at which the schedule steps down.

        A step of the schedule is a drop after a flat step
        (`PiecewiseConstantDecay`, a staircase `ExponentialDecay`); smooth
        schedules (cosine, exponential) and warmup ramps have none. Found by
        bisection on the steps where the schedule is below its value at
        `first - 1` (about log2(last - first) evaluations).

        Returns:
            The raw step at which the lower value first applies, or None
            (also on a float learning rate).
        """
        if self.is_float or last < first:
            return None
        start = self._schedule_value(first - 1)
        if not self._schedule_value(last) < start:
            return None
        below, at = first - 1, last  # the schedule is below `start` at `at`
        while at - below > 1:
            middle = (below + at) // 2
            if self._schedule_value(middle) < start:
                at = middle
            else:
                below = middle
        before, after = self._schedule_value(at - 1), self._schedule_value(at)
        flat_before = at >= 2 and self._schedule_value(at - 2) == before
        if flat_before and before - after > _STEP_DROP_MIN * before:
            return at
        return None

    def drops_at_epoch_start(self, step, steps_per_epoch=None):
        """Whether the learning rate drops at the epoch start `step`.

        A stage of training ends before it when, since the previous recorded
        epoch start, the float variable or the controllers' factors dropped,
        or the schedule steps down at `step` or within the epoch starting
        there (its first `steps_per_epoch` steps: the epoch is not trained
        at one learning rate). With `steps_per_epoch=None` (unknown), a step
        inside the epoch that just ended is seen here instead.
        """
        if len(self._records) < 2 or self._records[-1][0] != step:
            return False
        (previous, before), (_, now) = self._records
        if now < before:
            return True
        if steps_per_epoch is None:
            return self.schedule_step_in(previous + 1, step) is not None
        return self.schedule_step_in(step, step + steps_per_epoch - 1) is not None

    def stage_learning_rate(self, step):
        """The float learning rate of the epoch that ended at step `step`.

        What the float variable held when that epoch started (recorded by
        `enter_epoch`), before the decisions of its end; None on a schedule
        or before two epoch starts are recorded.
        """
        if not self.is_float or len(self._records) < 2 or (
            self._records[-1][0] != step
        ):
            return None
        return self._records[-2][1]

    def correct_momentum(self, step):
        """Rescales the velocities at the epoch start `step` (Goyal et al.).

        The velocity v of SGD and LARS holds the learning rate
        (v = m v - lr g), so when the learning rate changes by r, v is
        multiplied by r. A change at this epoch start (a controller's decay,
        `ReduceLROnPlateau`, a step of the schedule here, one step of a
        smooth schedule) is corrected exactly so. A step of the schedule by
        r at step k inside the epoch that just ended is corrected here, n
        updates late: by `r / (r + m**n * (1 - r))`, the correction that for
        a constant gradient gives the velocity it would have had, corrected
        at step k (the part of v made before k has decayed by m**n).

        Idempotent per step. Applies to the slots the optimizer declares
        with `learning_rate_slots()` (the package's `LARS`, any optimizer
        that defines it) and to Keras' `SGD`'s `momentums`, directly or
        inside `LossScaleOptimizer` / `LARSWrapper`; see
        `velocity_variables`. For any other optimizer it raises
        `ValueError` rather than correcting nothing.

        Returns:
            The ratio applied (1.0 when the learning rate did not change).
        """
        velocities = velocity_variables(self.owner)
        if velocities is None:
            fail("optimizer", self.owner,
                 "must keep its learning rate in slots it declares with "
                 "`learning_rate_slots()` (as keras_lrphase.LARS does) or be "
                 "keras.optimizers.SGD, for momentum correction")
        if self._corrected_step == step:
            return 1.0
        self._corrected_step = step
        if len(self._records) < 2 or self._records[-1][0] != step:
            return 1.0
        (previous, before), (_, now) = self._records
        if before <= 0 or self._schedule_value(step - 1) <= 0:
            return 1.0
        ratio = (now / before) * (
            self._schedule_value(step) / self._schedule_value(step - 1))
        inside = self.schedule_step_in(previous + 1, step - 1)
        if inside is not None:
            drop = self._schedule_value(inside) / self._schedule_value(inside - 1)
            decayed = float(self.owner.momentum) ** self._updates_between(inside, step)
            ratio *= drop / (drop + decayed * (1.0 - drop))
        if ratio == 1.0:
            return 1.0
        for velocity in velocities:
            velocity.assign(velocity * ops.cast(ratio, velocity.dtype))
        return ratio

    def _updates_between(self, first, end):
        """The optimizer updates at raw steps `first` to `end - 1`."""
        every = self.owner.gradient_accumulation_steps or 1
        return (end // every) - (first // every)

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


class FrozenVariables:
    """The variables the `FreezeLayers` callbacks leave out of the updates.

    Part of the optimizer's `ControlledLearningRate` (`frozen`), so that one
    object per optimizer holds every change the package makes to it. While
    at least one `FreezeLayers` of a `fit` uses it, a filter in front of the
    `apply` of the optimizer that owns the slots leaves the frozen
    variables out (`keras_compat.filter_applied_variables`); it is removed
    when the last one leaves.
    """

    def __init__(self, owner):
        self.owner = owner
        self.users = []
        self.installed = False

    def join(self, user, model):
        """Adds the `FreezeLayers` `user` (its `on_train_begin`)."""
        # Every `on_train_begin` of a `fit` comes before its first
        # `on_epoch_begin`: a user frozen now belongs to a `fit` that an
        # exception stopped, and the train step was traced with its freeze.
        stale = [other for other in self.users if other.frozen]
        for other in stale:
            other.frozen = False
            self.users.remove(other)
        user.frozen = False
        if not self.installed:
            keras_compat.filter_applied_variables(self.owner, self.skipped)
            self.installed = True
        if user not in self.users:
            self.users.append(user)
        if stale:
            self.changed(model)

    def leave(self, user, model, retrace):
        """Removes `user` (its `on_train_end`), and the filter after the last."""
        if user in self.users:
            self.users.remove(user)
        if not self.users and self.installed:
            keras_compat.filter_applied_variables(self.owner, None)
            self.installed = False
        if retrace:
            keras_compat.drop_train_function(model)

    def skipped(self):
        """The variables left out of the updates, read at trace time."""
        return [
            variable for user in self.users if user.frozen
            for variable in user.frozen_variables
        ]

    def changed(self, model):
        """Makes the next train step see the current frozen variables."""
        if keras_compat.train_function(model) is not None:
            keras_compat.trace_train_function_anew(model)


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
    if control is not None and control.scalable:
        return control.last_step_value()
    rate = keras_compat.current_learning_rate_object(owner)
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        step = max(keras_compat.raw_step(owner) - 1, 0)
        return float(ops.convert_to_numpy(rate(step)))
    if callable(rate) and not isinstance(rate, keras.Variable):
        return float(ops.convert_to_numpy(rate()))
    return float(ops.convert_to_numpy(rate))


def velocity_variables(optimizer):
    """The slot variables that hold the learning rate, or None.

    What the optimizer declares with its `learning_rate_slots()` method
    (the package's `LARS`, or any optimizer that defines it, with its decay
    per update as the float attribute `momentum`), and for Keras' `SGD`
    its `momentums` (`keras_compat.learning_rate_slots`). None for any
    other optimizer: there is then nothing to correct, and the callbacks
    that correct momentum refuse it.
    """
    return keras_compat.learning_rate_slots(optimizer)


def supports_momentum_correction(optimizer):
    """Whether the optimizer's velocities (`velocity_variables`) are known."""
    return velocity_variables(optimizer) is not None


def _scalar_variable(name, value):
    return keras.Variable(
        float(value), name=name, dtype="float32", trainable=False,
        aggregation="only_first_replica",
    )
