"""LARS: SGD with momentum and a layer-wise trust ratio (You et al., 2017)."""

import numbers

import keras
from keras import ops

from keras_lrphase._validation import check_bool
from keras_lrphase._validation import check_learning_rate
from keras_lrphase._validation import check_number
from keras_lrphase._validation import check_positive
from keras_lrphase.backend import keras_compat
from keras_lrphase.optimizers import _exclusions


@keras.saving.register_keras_serializable(package="keras_lrphase")
class LARS(keras.optimizers.Optimizer):
    """Layer-wise Adaptive Rate Scaling: momentum SGD with per-layer LRs.

    Use it for large-batch training of convolutional networks, where one
    global learning rate is too large for some layers and too small for
    others. Each variable `w` with gradient `g` gets its own "local" learning
    rate from the ratio of its weight norm to its gradient norm:

    ```python
    wd = weight_decay
    local_lr = trust_coefficient * ||w|| / (||g|| + wd * ||w|| + epsilon)
    # local_lr = 1 when ||w|| == 0 or ||g|| == 0 (never NaN)
    step = learning_rate * local_lr * (g + wd * w)
    velocity = momentum * velocity + step
    w = w - velocity
    ```

    With `nesterov=True` the last line becomes
    `w = w - (momentum * velocity + step)` with the updated `velocity`.

    Variables excluded from adaptation use `local_lr = 1` (plain momentum
    SGD); variables excluded from weight decay use `weight_decay = 0`. By
    default every variable with at most one dimension (biases and
    normalisation parameters) is excluded from both.

    The weight decay is the L2 term of the formula above, coupled to the
    gradient and scaled by the trust ratio. It is not Keras' decoupled weight
    decay: the base `Optimizer` step that subtracts
    `learning_rate * weight_decay * w` is disabled, so the decay is applied
    exactly once. The base method `exclude_from_weight_decay(var_list,
    var_names)` still works and adds to the `exclude_from_weight_decay`
    argument.

    Args:
        learning_rate: Float or
            `keras.optimizers.schedules.LearningRateSchedule`. The global
            learning rate, multiplied by each variable's local learning rate.
            Defaults to `0.1`.
        momentum: Float in [0, 1). Momentum of the velocity. Defaults to
            `0.9`.
        weight_decay: Float >= 0. L2 coefficient added to the gradient as
            `weight_decay * w`. Defaults to `0.0`.
        trust_coefficient: Float > 0. The LARS coefficient (eta); the paper
            uses 0.001 on ImageNet and SVHN, 0.01 on CIFAR. Defaults to
            `0.001`.
        epsilon: Float >= 0. Added to the denominator of the trust ratio.
            Defaults to `0.0`.
        nesterov: Bool. Whether to use Nesterov momentum. Defaults to
            `False`.
        exclude_from_adaptation: `None`, list of strings, or callable.
            Variables that use `local_lr = 1`. Strings are regular
            expressions searched in the variable path (`"bias"` matches every
            bias); a callable receives the variable and returns a bool;
            `None` excludes the variables with at most one dimension; `[]`
            excludes nothing. A callable is serialisable only when registered
            with `keras.saving.register_keras_serializable`; otherwise
            `get_config` (hence `model.save`) raises `ValueError`. Defaults
            to `None`.
        exclude_from_weight_decay: `None`, list of strings, or callable.
            Variables that use `weight_decay = 0`, in the same forms as
            `exclude_from_adaptation`. Defaults to `None`.
        **kwargs: The base optimizer arguments (`name`, `clipnorm`,
            `clipvalue`, `global_clipnorm`, `use_ema`, `ema_momentum`,
            `ema_overwrite_frequency`, `loss_scale_factor`,
            `gradient_accumulation_steps`).

    Example:

    >>> import numpy as np, keras
    >>> from keras_lrphase.optimizers.lars import LARS
    >>> w = keras.Variable(np.full((2, 2), 3.0, "float32"))
    >>> opt = LARS(learning_rate=1.0, momentum=0.0, trust_coefficient=0.1)
    >>> opt.apply([keras.ops.ones((2, 2))], [w])
    >>> # local_lr = 0.1 * 6 / 2 = 0.3, so w = 3 - 0.3 * 1
    >>> print(keras.ops.convert_to_numpy(w)[0, 0].round(4))
    2.7

    References:
        You, Gitman, Ginsburg, "Large Batch Training of Convolutional
        Networks", arXiv:1708.03888 (2017).
    """

    def __init__(
        self,
        learning_rate=0.1,
        momentum=0.9,
        weight_decay=0.0,
        trust_coefficient=0.001,
        epsilon=0.0,
        nesterov=False,
        exclude_from_adaptation=None,
        exclude_from_weight_decay=None,
        **kwargs,
    ):
        momentum = check_number("momentum", momentum, minimum=0.0, maximum=1.0,
                                exclusive_maximum=True)
        weight_decay = check_number("weight_decay", weight_decay, minimum=0.0)
        trust_coefficient, epsilon = check_trust_arguments(
            trust_coefficient, epsilon
        )
        check_bool("nesterov", nesterov)
        if isinstance(learning_rate, numbers.Real):
            learning_rate = check_learning_rate("learning_rate", learning_rate)
        # The base class would apply `weight_decay` a second time as
        # decoupled decay; `_apply_weight_decay` below disables that.
        super().__init__(
            learning_rate=learning_rate, weight_decay=weight_decay, **kwargs
        )
        self.momentum = momentum
        self.trust_coefficient = trust_coefficient
        self.epsilon = epsilon
        self.nesterov = nesterov
        self._adaptation_exclusion = _exclusions.check_exclusion(
            exclude_from_adaptation, "exclude_from_adaptation"
        )
        self._decay_exclusion = _exclusions.check_exclusion(
            exclude_from_weight_decay, "exclude_from_weight_decay"
        )

    def build(self, variables):
        """Creates one velocity per variable (none when `momentum == 0`)."""
        if self.built:
            return
        super().build(variables)
        self.velocities = []
        if self.momentum != 0:
            self.velocities = self.add_optimizer_variables(
                variables, "velocity"
            )
        # Per-variable decisions, taken once on the host.
        self._adapts = [
            not _exclusions.is_excluded(
                self._adaptation_exclusion, v, "exclude_from_adaptation"
            )
            for v in variables
        ]
        self._decays = [
            self.weight_decay > 0
            and keras_compat.uses_weight_decay(self, v)
            and not _exclusions.is_excluded(
                self._decay_exclusion, v, "exclude_from_weight_decay"
            )
            for v in variables
        ]

    def learning_rate_slots(self):
        """The velocities: they hold the learning rate (momentum correction).

        `ControlledLearningRate.correct_momentum` multiplies them by r when
        the learning rate changes by r. Empty before `build` and with
        `momentum=0`.
        """
        return list(getattr(self, "velocities", None) or [])

    def _apply_weight_decay(self, variables):
        # Weight decay is part of `update_step`; never decoupled.
        return

    def update_step(self, gradient, variable, learning_rate):
        """Applies the LARS update to one variable."""
        index = keras_compat.variable_index(self, variable)
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(dense_gradient(gradient, variable), dtype)
        weight_decay = self.weight_decay if self._decays[index] else 0.0

        step = gradient
        if weight_decay:
            step = ops.add(step, ops.multiply(variable, weight_decay))

        if self._adapts[index]:
            w_norm = ops.sqrt(ops.sum(ops.square(variable)))
            g_norm = ops.sqrt(ops.sum(ops.square(gradient)))
            denominator = ops.add(g_norm, self.epsilon)
            if weight_decay:
                denominator = ops.add(
                    denominator, ops.multiply(w_norm, weight_decay)
                )
            valid = ops.logical_and(
                ops.greater(w_norm, 0.0), ops.greater(g_norm, 0.0)
            )
            # Divide by a safe denominator so the unused branch holds no NaN.
            safe = ops.where(valid, denominator, ops.ones_like(denominator))
            local_lr = ops.where(
                valid,
                ops.divide(ops.multiply(w_norm, self.trust_coefficient), safe),
                ops.ones_like(w_norm),
            )
            lr = ops.multiply(lr, local_lr)
        scaled_step = ops.multiply(step, lr)

        if not self.velocities:
            self.assign_sub(variable, scaled_step)
            return
        velocity = self.velocities[index]
        momentum = ops.cast(self.momentum, dtype)
        new_velocity = ops.add(ops.multiply(velocity, momentum), scaled_step)
        self.assign(velocity, new_velocity)
        if self.nesterov:
            self.assign_sub(
                variable,
                ops.add(ops.multiply(new_velocity, momentum), scaled_step),
            )
        else:
            self.assign_sub(variable, new_velocity)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "trust_coefficient": self.trust_coefficient,
                "epsilon": self.epsilon,
                "nesterov": self.nesterov,
                "exclude_from_adaptation": _exclusions.serialize_exclusion(
                    self._adaptation_exclusion, "exclude_from_adaptation"
                ),
                "exclude_from_weight_decay": _exclusions.serialize_exclusion(
                    self._decay_exclusion, "exclude_from_weight_decay"
                ),
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        for key in ("exclude_from_adaptation", "exclude_from_weight_decay"):
            if key in config:
                config[key] = _exclusions.deserialize_exclusion(
                    config[key], custom_objects
                )
        return super().from_config(config, custom_objects=custom_objects)


def check_trust_arguments(trust_coefficient, epsilon):
    """Validated `(trust_coefficient, epsilon)` of a trust ratio, as floats."""
    return (
        check_positive("trust_coefficient", trust_coefficient),
        check_number("epsilon", epsilon, minimum=0.0),
    )


def dense_gradient(gradient, variable):
    """A sparse (`tf.IndexedSlices`) gradient as a dense tensor.

    Norms need the dense gradient: rows gathered more than once appear
    several times in the slices and are summed here.
    """
    if hasattr(gradient, "indices") and hasattr(gradient, "dense_shape"):
        return ops.scatter(
            ops.expand_dims(gradient.indices, -1),
            gradient.values,
            tuple(variable.shape),
        )
    return gradient
