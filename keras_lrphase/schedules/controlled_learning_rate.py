"""The one mechanism through which every controller of the package moves the LR.

Keras lets a callback change the learning rate only by assigning a float to
`optimizer.learning_rate`, which raises `TypeError` when the optimizer was
built with a `LearningRateSchedule`, and which two controllers cannot share.
`ControlledLearningRate` wraps whatever learning rate is in force (a float or
any schedule) and multiplies it, inside the compiled train step, by

* `scale`: the product of named multiplicative factors, one per controller
  (`TwoPhaseLR`'s decays, later AutoDecay and plateau decays), set on the
  host at epoch ends with `set_factor(name, value)`;
* a linear warmup ramp driven by the optimizer's step counter (the in-graph
  half of `GradualWarmup`), so warmup costs no per-batch callback work.

It is installed with Keras' own `optimizer.learning_rate = schedule` setter,
so the optimizer's variables are exactly those of any optimizer with a
schedule: `model.save`/`keras.models.load_model` and `BackupAndRestore`
round-trip the optimizer state, and the control state travels in the
schedule's config (and in each controller's own state file). On TensorFlow
the compiled train step reads the control variables live. On JAX their values
are constants of the traced train step, so whoever changes them must retrace
it with `refresh(model)`: the package's callbacks do (`version` counts the
changes), once per change, which happens a handful of times per run.
"""

import math

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="keras_lrphase")
class ControlledLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """A learning rate = base(step) * scale * warmup(step).

    Users rarely build one: the package's callbacks call
    `ControlledLearningRate.install(optimizer)`, which wraps the optimizer's
    learning rate once and returns the same object to every later caller.

    Args:
        base: Float or `keras.optimizers.schedules.LearningRateSchedule`.
            The learning rate the controllers scale.
        scale: Float. Initial product of the controller factors.
            Defaults to `1.0`.
        warmup_steps: Int. Length of the linear warmup ramp in optimizer
            steps; `0` disables it. Defaults to `0`.
        warmup_initial_fraction: Float in (0, 1]. Fraction of the base
            learning rate at step 0 of the ramp. Defaults to `1.0`.
        factors: Dict of controller name to float factor whose product is
            `scale`. Defaults to `None` (no factor yet).

    Example:

    >>> import keras
    >>> from keras_lrphase import ControlledLearningRate
    >>> opt = keras.optimizers.SGD(
    ...     keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5))
    >>> lr = ControlledLearningRate.install(opt)
    >>> lr.set_factor("my_controller", 0.5)
    >>> round(float(opt.learning_rate), 6)
    0.05
    """

    def __init__(
        self,
        base,
        scale=1.0,
        warmup_steps=0,
        warmup_initial_fraction=1.0,
        factors=None,
    ):
        if isinstance(base, ControlledLearningRate):
            raise ValueError(
                "Argument `base` must not itself be a ControlledLearningRate. "
                f"Received: base={base}"
            )
        is_schedule = isinstance(
            base, keras.optimizers.schedules.LearningRateSchedule
        )
        if not is_schedule and not isinstance(base, keras.Variable):
            base = float(base)
            if not base > 0:
                raise ValueError(
                    f"Argument `base` must be positive. Received: base={base}"
                )
        self.base = base
        self.factors = dict(factors or {})
        for name, value in self.factors.items():
            _check_factor(name, value)
        self.scale = keras.Variable(
            float(scale), name="lrphase_scale", dtype="float32",
            trainable=False, aggregation="only_first_replica",
        )
        self.warmup_steps = keras.Variable(
            float(warmup_steps), name="lrphase_warmup_steps",
            dtype="float32", trainable=False,
            aggregation="only_first_replica",
        )
        self.warmup_initial_fraction = keras.Variable(
            float(warmup_initial_fraction),
            name="lrphase_warmup_initial_fraction", dtype="float32",
            trainable=False, aggregation="only_first_replica",
        )
        self.version = 0

    @property
    def variables(self):
        """The control state variables."""
        return [self.scale, self.warmup_steps, self.warmup_initial_fraction]

    # -- the schedule ------------------------------------------------------
    def base_learning_rate(self, step):
        """The wrapped learning rate at `step`, before scale and warmup."""
        if isinstance(self.base, keras.optimizers.schedules.LearningRateSchedule):
            return ops.cast(self.base(step), "float32")
        return ops.cast(ops.convert_to_tensor(self.base), "float32")

    def warmup_factor(self, step):
        """Linear ramp from `warmup_initial_fraction` at step 0 to 1."""
        step = ops.cast(step, "float32")
        steps = self.warmup_steps
        f0 = self.warmup_initial_fraction
        progress = step / ops.maximum(steps, 1.0)
        ramp = f0 + (1.0 - f0) * progress
        return ops.where(step < steps, ramp, ops.ones_like(ramp))

    def __call__(self, step):
        return (
            self.base_learning_rate(step) * self.scale * self.warmup_factor(step)
        )

    # -- host-side control ---------------------------------------------------
    def set_factor(self, name, value):
        """Sets controller `name`'s multiplicative factor and updates `scale`.

        On JAX, call `refresh(model)` before the next train step.
        """
        _check_factor(name, value)
        if self.factors.get(name) == float(value):
            return
        self.factors[name] = float(value)
        self.scale.assign(math.prod(self.factors.values()))
        self.version += 1

    def refresh(self, model):
        """Makes `model`'s next train step use the current control values.

        Call it after `set_factor`/`set_warmup`/`set_base` and before the
        next train step (the package's callbacks do, at epoch begin). On
        TensorFlow the compiled step reads the control variables live and
        this does nothing. On JAX they are constants of the traced step, so
        when `version` moved since `model`'s train function was made, it is
        made again (Keras' fit loop looks it up at every step): one retrace
        per change.
        """
        if keras.backend.backend() != "jax":
            return
        if getattr(model, "_lrphase_lr_version", None) == self.version:
            return
        if getattr(model, "train_function", None) is not None:
            model.make_train_function(force=True)
        model._lrphase_lr_version = self.version

    def factor(self, name):
        """The factor of controller `name` (1.0 when it has none)."""
        return self.factors.get(name, 1.0)

    def set_warmup(self, steps, initial_fraction):
        """Starts a linear warmup of `steps` optimizer steps."""
        steps = int(steps)
        if steps < 0:
            raise ValueError(
                f"Argument `steps` must be >= 0. Received: steps={steps}"
            )
        if not 0.0 < float(initial_fraction) <= 1.0:
            raise ValueError(
                "Argument `initial_fraction` must be in (0, 1]. "
                f"Received: initial_fraction={initial_fraction}"
            )
        current = (
            float(ops.convert_to_numpy(self.warmup_steps)),
            float(ops.convert_to_numpy(self.warmup_initial_fraction)),
        )
        wanted = (float(steps), float(np.float32(initial_fraction)))
        if current == wanted:
            return
        self.warmup_steps.assign(wanted[0])
        self.warmup_initial_fraction.assign(float(initial_fraction))
        self.version += 1

    def set_base(self, value):
        """Sets the wrapped learning rate when it is a float variable.

        Raises:
            TypeError: if the base is a `LearningRateSchedule` or a constant
                (a value baked into a traced train step cannot be changed).
        """
        if not isinstance(self.base, keras.Variable):
            raise TypeError(
                "The base learning rate can only be set when it is a float "
                "variable (an optimizer built with a float learning rate). "
                f"Received a base of type {type(self.base).__name__}: "
                f"base={self.base}"
            )
        value = float(value)
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(
                "Argument `value` must be a positive finite learning rate. "
                f"Received: value={value}"
            )
        if float(ops.convert_to_numpy(self.base)) == float(np.float32(value)):
            return
        self.base.assign(value)
        self.version += 1

    def value_at(self, step):
        """The learning rate at optimizer step `step`, as a Python float."""
        return float(ops.convert_to_numpy(self(step)))

    # -- installation --------------------------------------------------------
    @classmethod
    def install(cls, optimizer):
        """Wraps `optimizer`'s learning rate (once) and returns the wrapper.

        Uses Keras' `optimizer.learning_rate = schedule` setter, which also
        untracks the optimizer's float learning-rate variable (the wrapper
        keeps reading it as its base). Call it before training starts: the
        callbacks do so in `set_model`, which Keras runs before any
        `on_train_begin`.

        Args:
            optimizer: A `keras.optimizers.Optimizer`, or a wrapper exposing
                `inner_optimizer` (`LossScaleOptimizer`, `LARSWrapper`).

        Returns:
            The optimizer's `ControlledLearningRate`.
        """
        target = _learning_rate_owner(optimizer)
        current = target._learning_rate
        if isinstance(current, ControlledLearningRate):
            return current
        if callable(current) and not isinstance(
            current,
            (keras.optimizers.schedules.LearningRateSchedule, keras.Variable),
        ):
            raise TypeError(
                "The optimizer's learning rate is a plain callable, which "
                "cannot be scaled in the train step. Use a float or a "
                "`keras.optimizers.schedules.LearningRateSchedule`. "
                f"Received: learning_rate={current}"
            )
        controlled = cls(current)
        target.learning_rate = controlled
        return controlled

    # -- serialisation -------------------------------------------------------
    def get_config(self):
        base = self.base
        if isinstance(base, keras.Variable):
            base = float(ops.convert_to_numpy(base))
        elif isinstance(base, keras.optimizers.schedules.LearningRateSchedule):
            base = keras.saving.serialize_keras_object(base)
        return {
            "base": base,
            "scale": float(ops.convert_to_numpy(self.scale)),
            "warmup_steps": int(ops.convert_to_numpy(self.warmup_steps)),
            "warmup_initial_fraction": float(
                ops.convert_to_numpy(self.warmup_initial_fraction)
            ),
            "factors": dict(self.factors),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config["base"], dict):
            config["base"] = keras.saving.deserialize_keras_object(
                config["base"]
            )
        return cls(**config)


def _check_factor(name, value):
    if not isinstance(name, str) or not name:
        raise ValueError(
            f"Argument `name` must be a non-empty string. Received: name={name!r}"
        )
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(
            "Argument `value` must be a positive finite factor. "
            f"Received: value={value} (for factor {name!r})"
        )


def _learning_rate_owner(optimizer):
    """The optimizer object whose `_learning_rate` is used in the update."""
    seen = optimizer
    while hasattr(seen, "inner_optimizer"):
        seen = seen.inner_optimizer
    if not isinstance(seen, keras.optimizers.Optimizer):
        raise TypeError(
            "Argument `optimizer` must be a keras.optimizers.Optimizer. "
            f"Received: optimizer={optimizer!r}"
        )
    return seen
