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

Its three state variables are tracked by the optimizer, so they travel with
the optimizer's state: `BackupAndRestore` restores them, and on the JAX
backend they are passed into the jitted train step like any optimizer
variable (an untracked variable would be frozen into the trace).
"""

import math

import keras
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
        self._optimizer_ids = set()

    @property
    def variables(self):
        """The state variables, in the order the optimizer tracks them."""
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
        """Sets controller `name`'s multiplicative factor and updates `scale`."""
        _check_factor(name, value)
        self.factors[name] = float(value)
        self.scale.assign(math.prod(self.factors.values()))

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
        self.warmup_steps.assign(float(steps))
        self.warmup_initial_fraction.assign(float(initial_fraction))

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
        self.base.assign(value)

    def value_at(self, step):
        """The learning rate at optimizer step `step`, as a Python float."""
        return float(ops.convert_to_numpy(self(step)))

    # -- installation --------------------------------------------------------
    @classmethod
    def install(cls, optimizer):
        """Wraps `optimizer`'s learning rate (once) and returns the wrapper.

        Call it before training starts (the callbacks do so in `set_model`,
        which Keras runs before any `on_train_begin`, so `BackupAndRestore`
        finds the same optimizer variables in a resumed run).

        Args:
            optimizer: A `keras.optimizers.Optimizer`, or a wrapper exposing
                `inner_optimizer` (`LossScaleOptimizer`, `LARSWrapper`).

        Returns:
            The optimizer's `ControlledLearningRate`.
        """
        target = _learning_rate_owner(optimizer)
        current = target._learning_rate
        if isinstance(current, ControlledLearningRate):
            controlled = current
        else:
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
            target._learning_rate = controlled
        if id(target) not in controlled._optimizer_ids:
            tracked = {id(v) for v in target.variables}
            for variable in controlled.variables:
                if id(variable) not in tracked:
                    target._track_variable(variable)
            controlled._optimizer_ids.add(id(target))
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
