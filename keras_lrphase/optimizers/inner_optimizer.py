"""What an optimizer that wraps another reads and writes through to it."""


class InnerOptimizerDelegation:
    """Mixin of the wrapping optimizers: the inner optimizer's LR and steps.

    `LARSWrapper` and the Horovod `DistributedOptimizer` transform the
    gradients and let `self.inner_optimizer` apply them. Put before
    `keras.optimizers.Optimizer` in the bases, this mixin makes the
    wrapper's `learning_rate`, `iterations` and `loss_scale_factor` those of
    the inner optimizer, so Keras' LR callbacks and the package's
    controllers (which read and set them on `model.optimizer`) reach the
    optimizer that uses them. Each wrapper defines its own `variables`.
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
