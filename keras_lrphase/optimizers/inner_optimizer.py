"""What an optimizer that wraps another reads and writes through to it."""

import keras


class InnerOptimizerDelegation:
    """Mixin of the wrapping optimizers: the inner optimizer's LR and steps.

    `LARSWrapper` and the Horovod `DistributedOptimizer` transform the
    gradients and let `self.inner_optimizer` apply them. Put before
    `keras.optimizers.Optimizer` in the bases, this mixin makes the
    wrapper's `learning_rate`, `iterations` and `loss_scale_factor` those of
    the inner optimizer, so Keras' LR callbacks and the package's
    controllers (which read and set them on `model.optimizer`) reach the
    optimizer that uses them. Each wrapper defines its own `variables`.

    It also gives the wrappers Keras' build-at-first-`apply` and the
    serialisation of the inner optimizer: `get_config` holds the name and
    the serialized `optimizer`, to which a wrapper adds its own arguments;
    `from_config` deserializes the optimizer and passes the rest to the
    constructor (after `_arguments_from_config`, which a wrapper overrides
    to deserialize its own).
    """

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    @property
    def loss_scale_factor(self):
        inner = self.__dict__.get("inner_optimizer")
        return None if inner is None else inner.loss_scale_factor

    @loss_scale_factor.setter
    def loss_scale_factor(self, value):
        # The base constructor sets `None` before the inner optimizer exists;
        # afterwards (e.g. `LossScaleOptimizer` disabling it) it is the
        # inner optimizer's factor that is read and unscaled.
        inner = self.__dict__.get("inner_optimizer")
        if inner is not None:
            inner.loss_scale_factor = value

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def _build_at_first_apply(self, trainable_variables):
        """Builds on `trainable_variables` if not built, as Keras' `apply` does."""
        if self.built:
            return
        if trainable_variables is None:
            raise ValueError(
                "When passing `grads` without `variables`, the optimizer "
                "must already be built on a list of variables. "
                "Call `optimizer.build(trainable_variables)` first."
            )
        with keras.name_scope(self.name, caller=self):
            self.build(list(trainable_variables))
        self.built = True

    def get_config(self):
        return {
            "name": self.name,
            "optimizer": keras.saving.serialize_keras_object(
                self.inner_optimizer
            ),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        optimizer = keras.saving.deserialize_keras_object(
            config.pop("optimizer"), custom_objects=custom_objects
        )
        return cls(optimizer,
                   **cls._arguments_from_config(config, custom_objects))

    @classmethod
    def _arguments_from_config(cls, config, custom_objects):
        """The constructor's arguments other than the optimizer."""
        return config
