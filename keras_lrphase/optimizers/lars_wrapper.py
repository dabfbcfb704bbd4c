"""LARSWrapper: the LARS/LARC trust ratio in front of any Keras optimizer."""

import keras
from keras import ops

from keras_lrphase._validation import check_bool
from keras_lrphase._validation import fail
from keras_lrphase.backend import keras_compat
from keras_lrphase.optimizers import _exclusions
from keras_lrphase.optimizers.inner_optimizer import InnerOptimizerDelegation
from keras_lrphase.optimizers.lars import dense_gradient
from keras_lrphase.optimizers.lars import check_trust_arguments


@keras.saving.register_keras_serializable(package="keras_lrphase")
class LARSWrapper(InnerOptimizerDelegation, keras.optimizers.Optimizer):
    """Rescales each gradient by its layer-wise trust ratio, then optimises.

    Use it to give an existing optimizer (SGD, Adam, AdamW, ...) the
    layer-wise adaptation of LARS without changing its update rule, as NVIDIA
    Apex's LARC does for PyTorch. For each variable `w` with gradient `g`:

    ```python
    ratio = trust_coefficient * ||w|| / (||g|| + epsilon)
    # clip=True (LARC "clip" mode), with lr the inner learning rate:
    ratio = min(ratio / lr, 1)
    # ratio = 1 when ||w|| == 0 or ||g|| == 0, or the variable is excluded
    g = ratio * g    # then the inner optimizer's own update rule
    ```

    The ratio is computed from the gradient the inner optimizer's update rule
    receives, i.e. after cross-replica summation, loss-scale unscaling and
    the inner optimizer's clipping, and `lr` is the learning rate of that
    step (schedules and `ControlledLearningRate` factors included). Weight
    decay, momentum and clipping stay the inner optimizer's business.

    The wrapper takes the wrapped optimizer over: it installs the rescaling
    in front of that optimizer's update rule (`update_step`; on torch, the
    step that updates all variables at once, since Keras' torch optimizers
    bypass `update_step`), so it applies even when the inner optimizer's
    `apply` is called directly. It delegates
    `learning_rate`, `iterations`, `variables` and `loss_scale_factor` to it
    and exposes it as `inner_optimizer`, so
    `keras.optimizers.LossScaleOptimizer` can wrap a `LARSWrapper` and
    `ControlledLearningRate.install` reaches the inner learning rate. Works
    under `tf.distribute` strategies (the ratio is computed from the summed
    gradient, identically on every replica). Supported on the TensorFlow,
    JAX and torch backends.

    Args:
        optimizer: `keras.optimizers.Optimizer`. The optimizer to wrap. Wrap
            a `LARSWrapper` in a `LossScaleOptimizer`, not the other way
            round.
        trust_coefficient: Float > 0. The LARS coefficient (eta); with
            `clip=True` Apex's LARC default is 0.02. Defaults to `0.001`.
        clip: Bool. LARC clip mode: use `min(ratio / lr, 1)` so the
            effective learning rate `lr * ratio` never exceeds `lr`.
            Defaults to `False`.
        epsilon: Float >= 0. Added to the gradient norm. Defaults to `1e-8`.
        exclude_from_adaptation: `None`, list of strings, or callable.
            Variables whose gradient is left unscaled. Strings are regular
            expressions searched in the variable path; a callable receives
            the variable and returns a bool; `None` excludes the variables
            with at most one dimension (biases, normalisation parameters);
            `[]` excludes nothing. A callable must be registered with
            `keras.saving.register_keras_serializable` for `get_config`
            (hence `model.save`) to work. Defaults to `None`.
        name: String. The wrapper's name. Defaults to `None`.

    Example:

    >>> import numpy as np, keras
    >>> from keras_lrphase.optimizers.lars_wrapper import LARSWrapper
    >>> w = keras.Variable(np.full((2, 2), 3.0, "float32"))
    >>> opt = LARSWrapper(keras.optimizers.SGD(1.0), trust_coefficient=0.1)
    >>> opt.apply([keras.ops.ones((2, 2))], [w])
    >>> # ratio = 0.1 * 6 / 2 = 0.3, so w = 3 - 1.0 * 0.3 * 1
    >>> print(keras.ops.convert_to_numpy(w)[0, 0].round(4))
    2.7

    References:
        You, Gitman, Ginsburg, "Large Batch Training of Convolutional
        Networks", arXiv:1708.03888 (2017); NVIDIA Apex `LARC`.
    """

    def __init__(
        self,
        optimizer,
        trust_coefficient=0.001,
        *,
        clip=False,
        epsilon=1e-8,
        exclude_from_adaptation=None,
        name=None,
    ):
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            fail("optimizer", optimizer,
                 "must be a keras.optimizers.Optimizer instance")
        if hasattr(optimizer, "inner_optimizer"):
            raise ValueError(
                "Argument `optimizer` must not itself wrap an optimizer "
                f"({type(optimizer).__name__}); its update rule never sees "
                "the gradients. Wrap the LARSWrapper in it instead, e.g. "
                "`LossScaleOptimizer(LARSWrapper(SGD(...)))`. "
                f"Received: optimizer={optimizer!r}"
            )
        trust_coefficient, epsilon = check_trust_arguments(
            trust_coefficient, epsilon
        )
        check_bool("clip", clip)
        exclusion = _exclusions.check_exclusion(
            exclude_from_adaptation, "exclude_from_adaptation"
        )
        if keras_compat.update_rule_wrapped(optimizer):
            raise ValueError(
                "Argument `optimizer` is already wrapped by another "
                f"LARSWrapper. Received: optimizer={optimizer!r}"
            )
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = optimizer
        self.trust_coefficient = trust_coefficient
        self.clip = clip
        self.epsilon = epsilon
        self._adaptation_exclusion = exclusion
        self._adapts = None
        # The inner rule runs after the inner optimizer's cross-replica
        # summation, unscaling and clipping, so rescaling there sees the
        # final gradient on every replica. The hook is installed once (not
        # around each `apply`): under `tf.distribute` replicas call `apply`
        # from several threads and the update runs in a merge call.
        keras_compat.wrap_update_rule(optimizer, self._rescale)

    # -- building and applying -------------------------------------------
    def build(self, var_list):
        """Builds the inner optimizer and decides which variables adapt."""
        if self.built:
            return
        self.inner_optimizer.build(var_list)
        super().build(var_list)
        self._adapts = self._adaptation_mask()

    def _adaptation_mask(self):
        """Per inner-optimizer variable index: whether its ratio applies."""
        return [
            not _exclusions.is_excluded(
                self._adaptation_exclusion, v, "exclude_from_adaptation"
            )
            for v in keras_compat.optimizer_variables_to_train(self.inner_optimizer)
        ]

    def apply(self, grads, trainable_variables=None):
        """Applies `grads` through the inner optimizer, rescaled per layer."""
        if not self.built:
            if trainable_variables is None:
                raise ValueError(
                    "When passing `grads` without `variables`, the optimizer "
                    "must already be built on a list of variables. "
                    "Call `optimizer.build(trainable_variables)` first."
                )
            with keras.name_scope(self.name, caller=self):
                self.build(list(trainable_variables))
            self.built = True
        self.inner_optimizer.apply(grads, trainable_variables)

    def _rescale(self, gradient, variable, learning_rate):
        """`gradient` times the trust ratio of `variable`."""
        if self._adapts is None:  # the inner optimizer was applied directly
            self._adapts = self._adaptation_mask()
        index = keras_compat.variable_index(self.inner_optimizer, variable)
        if not self._adapts[index]:
            return gradient
        dtype = variable.dtype
        gradient = ops.cast(dense_gradient(gradient, variable), dtype)
        w_norm = ops.sqrt(ops.sum(ops.square(variable)))
        g_norm = ops.sqrt(ops.sum(ops.square(gradient)))
        ratio = ops.divide(
            ops.multiply(w_norm, self.trust_coefficient),
            ops.add(g_norm, self.epsilon),
        )
        valid = ops.logical_and(
            ops.greater(w_norm, 0.0), ops.greater(g_norm, 0.0)
        )
        if self.clip:
            lr = ops.cast(learning_rate, dtype)
            positive = ops.greater(lr, 0.0)
            safe_lr = ops.where(positive, lr, ops.ones_like(lr))
            ratio = ops.where(
                positive,
                ops.minimum(ops.divide(ratio, safe_lr), 1.0),
                ops.ones_like(ratio),
            )
        # With epsilon = 0 the unused branch may hold 0/0; `where` drops it.
        ratio = ops.where(valid, ratio, ops.ones_like(ratio))
        return ops.multiply(gradient, ratio)

    # -- delegation to the inner optimizer -------------------------------
    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    # -- serialisation ---------------------------------------------------
    def get_config(self):
        return {
            "name": self.name,
            "optimizer": keras.saving.serialize_keras_object(
                self.inner_optimizer
            ),
            "trust_coefficient": self.trust_coefficient,
            "clip": self.clip,
            "epsilon": self.epsilon,
            "exclude_from_adaptation": _exclusions.serialize_exclusion(
                self._adaptation_exclusion, "exclude_from_adaptation"
            ),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        optimizer = keras.saving.deserialize_keras_object(
            config.pop("optimizer"), custom_objects=custom_objects
        )
        config["exclude_from_adaptation"] = _exclusions.deserialize_exclusion(
            config.get("exclude_from_adaptation"), custom_objects
        )
        return cls(optimizer, **config)
