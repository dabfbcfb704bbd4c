"""Momentum correction at learning-rate changes (Goyal et al. 2017, Section 2.2)."""

from keras_lrphase._validation import fail
from keras_lrphase.backend import keras_compat
from keras_lrphase.callbacks.resumable_callback import ResumableCallback
from keras_lrphase.schedules.controlled_learning_rate import ControlledLearningRate
from keras_lrphase.schedules.controlled_learning_rate import (
    supports_momentum_correction,
)


class MomentumCorrection(ResumableCallback):
    """Rescales the momentum velocity when the learning rate changes between epochs.

    Keras' `SGD` and the package's `LARS` keep the learning rate inside
    their velocity (v = m v - lr g). After the learning rate is cut, the
    old velocity keeps the old step size for about 1 / (1 - m) steps: the
    training loss rises for a few epochs after a 10x step decay. Goyal et
    al. (2017) correct this by multiplying the velocity by lr_new / lr_old
    at the change. This callback does so at every epoch start where the
    learning rate in force changed: a step of a schedule
    (`PiecewiseConstantDecay`), `ReduceLROnPlateau`, the package's
    controllers (which also take `momentum_correction=True` themselves).
    A step of a schedule inside an epoch is corrected at the next epoch
    start, for the updates made since (see
    `ControlledLearningRate.correct_momentum`). The warmup ramp is not a
    change in this sense, and smooth schedules are corrected once per
    epoch, at the epoch boundary.

    Example:

    >>> import numpy as np, keras
    >>> from keras_lrphase import MomentumCorrection
    >>> schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
    ...     [1], [0.1, 0.01])  # 0.1 for the first 2 steps (1 epoch), then 0.01
    >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(
    ...     1, use_bias=False, kernel_initializer="ones")])
    >>> model.compile(keras.optimizers.SGD(schedule, momentum=0.9), "mse")
    >>> def velocity():
    ...     return float(model.optimizer.momentums[0].numpy()[0, 0])
    >>> seen = []
    >>> record = keras.callbacks.LambdaCallback(
    ...     on_epoch_end=lambda e, l: seen.append(velocity()),
    ...     on_epoch_begin=lambda e, l: seen.append(velocity()) if e else None)
    >>> _ = model.fit(np.ones((4, 1)), np.zeros((4, 1)), batch_size=2,
    ...               epochs=2, verbose=0,
    ...               callbacks=[MomentumCorrection(), record])
    >>> [round(v, 4) for v in seen[:2]]  # end of epoch 0, start of epoch 1
    [-0.34, -0.034]

    References:
        Goyal et al. 2017, "Accurate, Large Minibatch SGD: Training ImageNet
        in 1 Hour", Section 2.2 (momentum correction).
    """

    state_name = "momentum_correction"

    def __init__(self, state_path=None):
        super().__init__(state_path=state_path)
        self._control = None
        self._next = 0

    def set_model(self, model):
        super().set_model(model)
        optimizer = getattr(model, "optimizer", None)
        if optimizer is None or not supports_momentum_correction(optimizer):
            fail("model", model,
                 "must be compiled with keras.optimizers.SGD, keras_lrphase.LARS "
                 "or an optimizer that defines `learning_rate_slots()` for "
                 "MomentumCorrection (their velocity holds the learning "
                 f"rate); its optimizer is {type(optimizer).__name__}")
        check_momentum("model", model, optimizer, "for MomentumCorrection ")
        self._control = ControlledLearningRate.install(optimizer)
        self._control.acquire(model)

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        step = keras_compat.raw_step(self.model.optimizer)
        self._control.enter_epoch(step)
        self._control.correct_momentum(step)

    def on_epoch_end(self, epoch, logs=None):
        self._next = epoch + 1
        self._end_epoch(epoch)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        self._control.release(self.model)

    def _next_epoch(self):
        return self._next

    def _payload(self):
        return {"learning_rate": self._control.get_state()}

    def _restore(self, payload):
        self._next = payload["next_epoch"]
        self._control.set_state(payload["learning_rate"])

    def _start_new_run(self):
        self._next = 0


def check_momentum(name, value, optimizer, purpose=""):
    """Refuses an SGD or LARS without momentum: no velocity to rescale.

    Such an optimizer has no velocity (Keras' SGD) or one that the next
    step overwrites (LARS), so the correction would silently do nothing.
    """
    owner = keras_compat.learning_rate_owner(optimizer)
    momentum = getattr(owner, "momentum", None)
    if isinstance(momentum, (int, float)) and float(momentum) == 0.0:
        fail(name, value,
             f"needs an optimizer with momentum {purpose}(its "
             f"{type(owner).__name__} has momentum={float(momentum)}, so it "
             "keeps no velocity to rescale)")
