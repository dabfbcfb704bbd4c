"""Per-step linear learning rate warmup, with no per-batch callback work."""

import keras

from keras_lrphase._validation import check_integer
from keras_lrphase._validation import check_optional_integer
from keras_lrphase._validation import check_learning_rate
from keras_lrphase.backend.keras_compat import raw_step
from keras_lrphase.schedules.controlled_learning_rate import ControlledLearningRate


class GradualWarmup(keras.callbacks.Callback):
    """Linear learning rate warmup over the first epochs (Goyal et al. 2017).

    Use it when training with a large batch and a learning rate scaled up
    with the batch size: the learning rate rises linearly, step by step,
    from `initial_lr` to the target over `warmup_epochs` epochs, then stays
    at whatever the optimizer's learning rate is (a float or any
    `LearningRateSchedule`, times the decays of the package's other
    controllers, e.g. `TwoPhaseLR`).

    The ramp is computed inside the train step by the package's
    `ControlledLearningRate` from the optimizer's step counter, so the
    callback does no per-batch work: at optimizer step `s` (counted from 0)
    the learning rate is
    `base(s) * scale * (f0 + (1 - f0) * s / warmup_steps)` for
    `s < warmup_steps`, and `base(s) * scale` after, with
    `f0 = initial_lr / target_lr` and
    `warmup_steps = warmup_epochs * steps_per_epoch`.

    Steps are the optimizer's raw step counter, which Keras passes to
    learning rate schedules: one per batch, including the micro-steps of
    gradient accumulation (`gradient_accumulation_steps`), so that the ramp
    spans `warmup_epochs` epochs in either case. The ramp starts at step 0
    of the optimizer, not of each `fit` call: a resumed run (with
    `keras.callbacks.BackupAndRestore`, which restores the counter)
    continues the ramp where it stopped. A `fit` that starts after the
    ramp's end trains with Keras' own train step, and the step with the ramp
    is traced once and kept, so a program that calls `fit` once per round
    pays no new trace per call.

    Args:
        warmup_epochs: Int >= 0. Epochs of warmup; `0` disables it.
        initial_lr: Float > 0 or None. Learning rate at step 0. Defaults to
            `None`: `target_lr / warmup_steps` (the ramp reaches the target
            one step after its end). With a schedule, the ramp is relative
            to the schedule: `f0 = initial_lr / schedule(0)`.
        target_lr: Float > 0 or None. Learning rate at the end of the ramp;
            when given, the optimizer's (float) learning rate is set to it
            at the start of training. Defaults to `None`: the optimizer's
            learning rate. An error if the optimizer's learning rate is a
            schedule.
        steps_per_epoch: Int >= 1 or None. Batches per epoch. Defaults to
            `None`: the `steps` Keras reports to callbacks (known for arrays
            and datasets of known cardinality). Required when those are
            unknown; when given it takes precedence.

    Example:

    >>> import numpy as np, keras
    >>> from keras_lrphase.callbacks import GradualWarmup
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(0.4), loss="mse")
    >>> x, y = np.ones((8, 2), "float32"), np.zeros((8, 1), "float32")
    >>> rates = []
    >>> record = keras.callbacks.LambdaCallback(on_train_batch_begin=lambda b,
    ...     logs: rates.append(round(float(model.optimizer.learning_rate), 6)))
    >>> _ = model.fit(x, y, batch_size=4, epochs=3, verbose=0,
    ...               callbacks=[GradualWarmup(2), record])  # 2 epochs = 4 steps
    >>> rates  # 0.4 * (1/4 + 3/4 * s/4) for s < 4
    [0.1, 0.175, 0.25, 0.325, 0.4, 0.4]
    >>> float(model.optimizer.learning_rate)  # after fit: the plain float
    0.4000000059604645

    References:
        Goyal et al. 2017, "Accurate, Large Minibatch SGD: Training ImageNet
        in 1 Hour", Section 2.2 (gradual warmup); the two-phase paper, Section 4
        (warmup over the first 10 epochs).
    """

    def __init__(
        self,
        warmup_epochs,
        *,
        initial_lr=None,
        target_lr=None,
        steps_per_epoch=None,
    ):
        super().__init__()
        warmup_epochs = check_integer("warmup_epochs", warmup_epochs, 0)
        if initial_lr is not None:
            initial_lr = check_learning_rate("initial_lr", initial_lr)
        if target_lr is not None:
            target_lr = check_learning_rate("target_lr", target_lr)
        if (
            initial_lr is not None
            and target_lr is not None
            and initial_lr > target_lr
        ):
            raise ValueError(
                "Argument `initial_lr` must not exceed `target_lr`. "
                f"Received: initial_lr={initial_lr}, target_lr={target_lr}"
            )
        self.warmup_epochs = warmup_epochs
        self.initial_lr = initial_lr
        self.target_lr = target_lr
        self.steps_per_epoch = check_optional_integer(
            "steps_per_epoch", steps_per_epoch, 1
        )
        self.warmup_steps = None
        self._controlled = None

    def set_model(self, model):
        super().set_model(model)
        if getattr(model, "optimizer", None) is None:
            raise ValueError(
                "GradualWarmup needs a compiled model with an optimizer. "
                f"Received a model without an optimizer: {model!r}. "
                "Call `model.compile(optimizer=...)` before `fit`."
            )
        self._controlled = ControlledLearningRate.install(model.optimizer)
        if self.target_lr is not None and not self._controlled.is_float:
            raise ValueError(
                "Argument `target_lr` can only be used with an optimizer "
                "built with a float learning rate; this optimizer's learning "
                f"rate is {self._controlled.base!r}. Leave `target_lr=None` "
                "to warm up to the schedule."
            )
        self._controlled.acquire(model)
        self._controlled.note_warmup(self)

    def on_train_begin(self, logs=None):
        steps = self.steps_per_epoch
        if steps is None:
            steps = (self.params or {}).get("steps")
        if steps is None and self.warmup_epochs > 0:
            raise ValueError(
                "GradualWarmup cannot tell the number of steps per epoch "
                "(the dataset's cardinality is unknown). Pass "
                "`steps_per_epoch` to GradualWarmup (and to `fit`)."
            )
        self.warmup_steps = self.warmup_epochs * int(steps or 0)
        controlled = self._controlled
        # Only on a fresh run: a BackupAndRestore placed after this callback
        # restores the checkpoint's (possibly decayed) learning rate after
        # this; one placed before it has already moved the step counter.
        if self.target_lr is not None and raw_step(self.model.optimizer) == 0:
            controlled.set_base(self.target_lr)
        if self.warmup_steps == 0:
            return
        if self.initial_lr is None:
            fraction = 1.0 / self.warmup_steps
        else:
            target = (
                self.target_lr if self.target_lr is not None
                else controlled.value_without_warmup_at(0)
            )
            fraction = self.initial_lr / target
            if not 0.0 < fraction <= 1.0:
                raise ValueError(
                    "Argument `initial_lr` must not exceed the target "
                    f"learning rate. Received: initial_lr={self.initial_lr}, "
                    f"target learning rate={target}"
                )
        controlled.set_warmup(self.warmup_steps, fraction)
        controlled.refresh(self.model)

    def on_train_end(self, logs=None):
        self._controlled.release(self.model)
