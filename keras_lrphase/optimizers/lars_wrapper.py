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

    The wrapper delegates, as `keras.optimizers.LossScaleOptimizer` does: its
    own `apply` and `stateless_apply` rescale the gradients and hand them to
    the inner optimizer's `apply` and `stateless_apply`. The optimizer passed
    in is left as it was: used on its own, it updates without the ratio. The
    ratio is computed from the gradient the inner optimizer is about to
    unscale (divided by the inner `loss_scale_factor`, if any) and, under a
    `tf.distribute` strategy, summed across replicas (one extra all-reduce
    per step), so that it is the same on every replica; `lr` is the inner
    learning rate of that step (schedules and `ControlledLearningRate`
    factors included). Weight decay, momentum and clipping stay the inner
    optimizer's business; its clipping (`clipnorm`, `clipvalue`,
    `global_clipnorm`) applies to the rescaled gradient. An inner optimizer
    with `gradient_accumulation_steps` is refused: it would accumulate the
    rescaled micro-batch gradients, not rescale the accumulated one.

    `learning_rate`, `iterations`, `variables` and `loss_scale_factor` are
    the inner optimizer's, and `inner_optimizer` is the wrapped object, so
    `keras.optimizers.LossScaleOptimizer` can wrap a `LARSWrapper` and
    `ControlledLearningRate.install` reaches the inner learning rate.
    Supported on the TensorFlow, JAX and torch backends.

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
        if optimizer.gradient_accumulation_steps:
            raise ValueError(
                "Argument `optimizer` must not accumulate gradients: it would "
                "accumulate the rescaled micro-batch gradients instead of "
                "rescaling the accumulated one. Use `LARS` with "
                "`gradient_accumulation_steps` instead. Received: "
                f"optimizer={optimizer!r} with gradient_accumulation_steps="
                f"{optimizer.gradient_accumulation_steps}"
            )
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = optimizer
        self.trust_coefficient = trust_coefficient
        self.clip = clip
        self.epsilon = epsilon
        self._adaptation_exclusion = exclusion
        self._adapts = None

    # -- building and applying -------------------------------------------
    def build(self, var_list):
        """Builds the inner optimizer and decides which variables adapt."""
        if self.built:
            return
        self.inner_optimizer.build(var_list)
        super().build(var_list)
        self._adapts = self._adaptation_mask()

    def _adaptation_mask(self):
        """Per variable index: whether its ratio applies."""
        return [
            not _exclusions.is_excluded(
                self._adaptation_exclusion, v, "exclude_from_adaptation"
            )
            for v in keras_compat.optimizer_variables_to_train(self)
        ]

    def apply(self, grads, trainable_variables=None):
        """Applies `grads` through the inner optimizer, rescaled per layer."""
        self._build_at_first_apply(trainable_variables)
        if trainable_variables is None:
            variables = keras_compat.optimizer_variables_to_train(self)
        else:
            variables = list(trainable_variables)
        indices = [keras_compat.variable_index(self, v) for v in variables]
        grads = self._rescaled(list(grads), variables, indices)
        self.inner_optimizer.apply(grads, trainable_variables)

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        """`apply` without side effects (JAX): new variable values.

        `optimizer_variables` matches `self.variables`: the wrapper's own
        variables, then the inner optimizer's, which the inner optimizer's
        `stateless_apply` updates.
        """
        if not self.built:
            raise ValueError(
                f"To call `stateless_apply`, {type(self).__name__} must be "
                "built (i.e. its variables must have been created). You can "
                "build it via `optimizer.build(trainable_variables)`."
            )
        own = len(super().variables)
        # `LossScaleOptimizer` passes the variables themselves, inside its
        # own stateless scope: their values are read there.
        optimizer_variables = [ops.convert_to_tensor(v)
                               for v in optimizer_variables]
        # The learning rate (a schedule of the step, the package's in-graph
        # scaling) is read from the variables' values passed in.
        mapping = list(zip(self.variables, optimizer_variables))
        with keras.StatelessScope(state_mapping=mapping):
            grads = self._rescaled(list(grads), list(trainable_variables),
                                   range(len(trainable_variables)))
        new_trainable, new_inner = self.inner_optimizer.stateless_apply(
            list(optimizer_variables[own:]), grads, trainable_variables
        )
        return new_trainable, list(optimizer_variables[:own]) + new_inner

    def _rescaled(self, grads, weights, indices):
        """Each gradient times the trust ratio of its variable.

        `weights` are the variables (or, in `stateless_apply`, their
        values) and `indices` their positions in the built variable list.
        """
        scale = self.inner_optimizer.loss_scale_factor
        dense = [None if g is None else dense_gradient(g, w)
                 for g, w in zip(grads, weights)]
        seen = dense
        if scale is not None:
            seen = [None if g is None else ops.divide(g, scale) for g in seen]
        seen = _summed_across_replicas(seen)
        learning_rate = self.inner_optimizer.learning_rate if self.clip else None
        built = keras_compat.optimizer_variables_to_train(self)
        out = []
        for g, d, s, w, i in zip(grads, dense, seen, weights, indices):
            # A variable with `overwrite_with_gradient` (float8 scales)
            # receives its new value as the gradient: never rescaled.
            if g is None or not self._adapts[i] or getattr(
                    built[i], "overwrite_with_gradient", False):
                out.append(g)
                continue
            ratio = self._ratio(s, w, learning_rate)
            out.append(ops.multiply(d, ops.cast(ratio, d.dtype)))
        return out

    def _ratio(self, gradient, variable, learning_rate):
        """The trust ratio of one variable, as a scalar."""
        dtype = variable.dtype
        variable = ops.stop_gradient(ops.convert_to_tensor(variable))
        gradient = ops.cast(ops.stop_gradient(gradient), dtype)
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
        return ops.where(valid, ratio, ops.ones_like(ratio))

    # -- delegation to the inner optimizer -------------------------------
    @property
    def variables(self):
        return super().variables + self.inner_optimizer.variables

    # -- serialisation ---------------------------------------------------
    def get_config(self):
        config = super().get_config()
        config.update({
            "trust_coefficient": self.trust_coefficient,
            "clip": self.clip,
            "epsilon": self.epsilon,
            "exclude_from_adaptation": _exclusions.serialize_exclusion(
                self._adaptation_exclusion, "exclude_from_adaptation"
            ),
        })
        return config

    @classmethod
    def _arguments_from_config(cls, config, custom_objects):
        config["exclude_from_adaptation"] = _exclusions.deserialize_exclusion(
            config.get("exclude_from_adaptation"), custom_objects
        )
        return config


def _summed_across_replicas(grads):
    """`grads` summed over the replicas of a `tf.distribute` strategy.

    Keras' optimizers sum the replicas' gradients inside their `apply`; the
    ratio must be that of the sum, identical on every replica. Outside a
    strategy (and on JAX and torch) `grads` are returned as they are.
    """
    if keras.backend.backend() != "tensorflow":
        return grads
    import tensorflow as tf

    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return grads
    present = [g for g in grads if g is not None]
    if not present:
        return grads
    summed = iter(tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, present))
    return [None if g is None else next(summed) for g in grads]
