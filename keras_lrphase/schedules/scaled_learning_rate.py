"""The in-graph half of the LR mechanism: `base(step) * scale * warmup(step)`.

`ScaledLearningRate` is what an optimizer's `_learning_rate` holds while one
of the package's callbacks needs something a float variable cannot express
inside the train step: a per-step warmup ramp (`GradualWarmup`) or a factor
on top of a `LearningRateSchedule`. It is a plain callable (Keras calls it
with no argument and it reads the optimizer's raw step counter), not a
`LearningRateSchedule`, so that Keras' setter `optimizer.learning_rate = x`
(used by `ReduceLROnPlateau` and `LearningRateScheduler`) reaches its
`assign` instead of raising: on a float base it sets the base variable, the
learning rate the warmup ramps up to.

It is installed and removed by `ControlledLearningRate`; users do not build
one. While it is installed, the optimizer's config records the optimizer's
own learning rate in its place (a float carrying the controllers' factors,
a schedule as given), so a model saved during training loads anywhere,
as one saved after `fit` does. Files written by earlier versions of the
package recorded it: loading them needs `import keras_lrphase`, and gives
the same plain learning rate (`from_config`), because a loaded optimizer
has no warmup or controller to continue.
"""

import keras
from keras import ops

from keras_lrphase._validation import fail


@keras.saving.register_keras_serializable(package="keras_lrphase")
class ScaledLearningRate:
    """A learning rate = base(step) * scale * warmup(step), read per step.

    Args:
        base: The optimizer's float learning-rate `keras.Variable`, or a
            `keras.optimizers.schedules.LearningRateSchedule`.
        step: The optimizer's raw step counter variable.
        scale: `keras.Variable` (float32 scalar). Product of the package's
            controller factors; used on schedule bases only (on a float
            base the factors are applied to the variable itself).
        warmup_steps: `keras.Variable`. Length of the linear ramp in raw
            steps; 0 disables it.
        warmup_initial_fraction: `keras.Variable`. Ramp value at step 0.

    References:
        Goyal et al. 2017, "Accurate, Large Minibatch SGD", Section 2.2.
    """

    def __init__(self, base, step, scale, warmup_steps, warmup_initial_fraction):
        self.base = base
        self.step = step
        self.scale = scale
        self.warmup_steps = warmup_steps
        self.warmup_initial_fraction = warmup_initial_fraction

    def base_value(self, step):
        """The base learning rate at `step`, as float32."""
        if isinstance(self.base, keras.optimizers.schedules.LearningRateSchedule):
            return ops.cast(self.base(step), "float32")
        return ops.cast(self.base, "float32")

    def warmup_factor(self, step):
        """Linear ramp from the initial fraction at step 0 to 1."""
        step = ops.cast(step, "float32")
        steps = ops.cast(self.warmup_steps, "float32")
        f0 = ops.cast(self.warmup_initial_fraction, "float32")
        ramp = f0 + (1.0 - f0) * (step / ops.maximum(steps, 1.0))
        return ops.where(step < steps, ramp, ops.ones_like(ramp))

    def value(self, step):
        """The learning rate at raw step `step`."""
        return self.base_value(step) * self.scale * self.warmup_factor(step)

    def __call__(self):
        return self.value(self.step)

    def assign(self, value):
        """Keras' setter path: sets the base learning rate (float bases)."""
        if not isinstance(self.base, keras.Variable):
            fail(
                "learning_rate",
                value,
                "cannot be set: the optimizer's learning rate is the schedule "
                f"{type(self.base).__name__}, scaled by keras_lrphase's "
                "controllers (Keras cannot set a schedule's learning rate "
                "either). Use a float learning rate to combine Keras' "
                "ReduceLROnPlateau or LearningRateScheduler with the "
                "package's callbacks",
            )
        self.base.assign(value)

    def get_config(self):
        if isinstance(self.base, keras.Variable):
            base = float(ops.convert_to_numpy(self.base))
        else:
            base = keras.saving.serialize_keras_object(self.base)
        return {
            "base": base,
            "scale": float(ops.convert_to_numpy(self.scale)),
        }

    @classmethod
    def from_config(cls, config):
        """Returns the plain learning rate in force (see the module docstring)."""
        base = config["base"]
        if isinstance(base, dict):
            return keras.saving.deserialize_keras_object(base)
        return float(base) * float(config.get("scale", 1.0))
