"""BroadcastGlobalVariablesCallback: every rank starts from rank 0's state."""

import keras

from keras_lrphase._validation import check_integer
from keras_lrphase.distributed.horovod_runtime import horovod_module


class BroadcastGlobalVariablesCallback(keras.callbacks.Callback):
    """Copies the model and optimizer variables of one rank to all ranks.

    Use it in every rank of a Horovod job, so that the ranks start training
    from the same weights and optimizer state (different random
    initialisations, or a checkpoint loaded on one rank only). At the
    beginning of each `fit` it builds the optimizer if Keras has not (its
    slots are created lazily), then broadcasts `model.variables` and the
    optimizer's variables from `root_rank` (Horovod's broadcast, one per
    dtype, on the TensorFlow variables underneath the Keras ones). Together with
    `DistributedOptimizer` the ranks then hold identical variables at every
    step.

    Keras calls the callbacks' `on_train_begin` in the order of the
    `callbacks` list: a callback that loads weights there
    (`BackupAndRestore`) loads after the broadcast when it comes later in
    the list, so let every rank restore the same checkpoint. Horovod's own
    callback fails on Keras 3 (`'Variable' object has no attribute 'ref'`).

    Args:
        root_rank: Integer >= 0. The rank whose variables every rank
            receives. Defaults to `0`.

    Example (in a script launched with `horovodrun`):

    >>> from keras_lrphase.distributed.horovod import (
    ...     BroadcastGlobalVariablesCallback)
    >>> BroadcastGlobalVariablesCallback(root_rank=-1)
    Traceback (most recent call last):
    ...
    ValueError: Argument `root_rank` must be an integer >= 0. Received: root_rank=-1
    >>> model.fit(x, y, callbacks=[BroadcastGlobalVariablesCallback(0)])  # doctest: +SKIP

    References:
        "Achieving Small-Batch Accuracy with Large-Batch Scalability via
        Adaptive Learning Rate Adjustment" (ICLR 2022 submission),
        Sections 2 and 4 (experiments with Horovod).
    """

    def __init__(self, root_rank=0):
        super().__init__()
        self.root_rank = check_integer("root_rank", root_rank, 0)

    def on_train_begin(self, logs=None):
        hvd = horovod_module("BroadcastGlobalVariablesCallback")
        if self.root_rank >= hvd.size():
            raise ValueError(
                f"Argument `root_rank` must be a rank of this job (0 to "
                f"{hvd.size() - 1}). Received: root_rank={self.root_rank}"
            )
        model = self.model
        variables = list(model.variables)
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None:
            if not optimizer.built:
                optimizer.build(model.trainable_variables)
            variables += list(optimizer.variables)
        unique, seen = [], set()
        for variable in variables:
            if id(variable) not in seen:
                seen.add(id(variable))
                unique.append(variable.value)
        broadcast_variables(hvd, unique, self.root_rank)


def broadcast_variables(hvd, variables, root_rank):
    """Assigns root_rank's values to `variables` (tf.Variables).

    One broadcast per dtype, of all the variables of that dtype flattened
    into one tensor, named by the dtype. (`hvd.broadcast_variables` names
    each broadcast after its variable, and Horovod matches the ranks'
    collectives by name: Keras prefixes variable names with layer names,
    `dense_3/kernel`, which differ between ranks that created different
    numbers of layers, and the job then hangs.)
    """
    import tensorflow as tf

    groups = {}
    for variable in variables:
        groups.setdefault(variable.dtype, []).append(variable)
    for dtype, group in groups.items():
        flat = tf.concat([tf.reshape(v, [-1]) for v in group], axis=0)
        flat = hvd.broadcast(flat, root_rank,
                             name=f"keras_lrphase_broadcast_{dtype.name}")
        sizes = [int(tf.size(v)) for v in group]
        for variable, value in zip(group, tf.split(flat, sizes)):
            variable.assign(tf.reshape(value, variable.shape))
