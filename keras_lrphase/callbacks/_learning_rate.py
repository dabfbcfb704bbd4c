"""How the package's callbacks attach to the shared LR mechanism."""

from keras import ops

from keras_lrphase.schedules.controlled_learning_rate import (
    ControlledLearningRate,
)
from keras_lrphase.schedules.controlled_learning_rate import _learning_rate_owner


def install_on_model(model, caller):
    """Installs `ControlledLearningRate` on `model`'s optimizer.

    Called from `set_model`, which Keras runs before any `on_train_begin`
    and before the train function is built. When the wrapper is new and the
    model already has a built train function (an earlier `fit`), the train
    function is dropped so that the next `fit` traces it with the wrapper.

    Returns:
        The optimizer's `ControlledLearningRate`.
    """
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError(
            f"{caller} needs a compiled model with an optimizer. "
            f"Received a model without an optimizer: {model!r}. "
            "Call `model.compile(optimizer=...)` before `fit`."
        )
    owner = _learning_rate_owner(optimizer)
    was_installed = isinstance(owner._learning_rate, ControlledLearningRate)
    controlled = ControlledLearningRate.install(optimizer)
    if not was_installed and getattr(model, "train_function", None) is not None:
        model.train_function = None
    return controlled


def optimizer_step(optimizer):
    """The raw step counter the learning rate schedule is called with.

    Keras calls the schedule with `optimizer._iterations`, which counts
    batches (micro-steps under gradient accumulation), not parameter updates.
    """
    owner = _learning_rate_owner(optimizer)
    return int(ops.convert_to_numpy(owner._iterations))


def last_step_learning_rate(controlled, optimizer):
    """The learning rate the last completed batch was trained with."""
    return controlled.value_at(max(optimizer_step(optimizer) - 1, 0))

