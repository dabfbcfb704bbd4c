"""MetricAverageCallback: the epoch logs of a Horovod job, averaged over ranks."""

import numbers

import keras

from keras_lrphase.distributed.horovod_reducer import HorovodReducer


class MetricAverageCallback(keras.callbacks.Callback):
    """Replaces each numeric epoch log by its mean over the Horovod ranks.

    Use it in a Horovod job so that `History`, `CSVLogger`, `TensorBoard`,
    `ModelCheckpoint(monitor=...)`, `EarlyStopping` and the package's LR
    controllers see the job's loss and metrics rather than one rank's: each
    rank's epoch logs are computed on its own shard. Keras calls the
    callbacks in the order of the `callbacks` list (and its own `History`
    and progress bar after them), so place it first: callbacks before it
    see the rank's own values. Keys are averaged in sorted order with
    `HorovodReducer` (exact float64 mean, identical on every rank); values
    that are not numbers are left alone.

    Every rank must run it. Horovod's own `MetricAverageCallback` fails on
    Keras 3 (it calls `keras.backend.constant`, which Keras 3 removed).

    Example (in a script launched with `horovodrun`):

    >>> from keras_lrphase.distributed.horovod import MetricAverageCallback
    >>> callback = MetricAverageCallback()
    >>> model.fit(x, y, callbacks=[MetricAverageCallback(), ...])  # doctest: +SKIP

    References:
        "Achieving Small-Batch Accuracy with Large-Batch Scalability via
        Adaptive Learning Rate Adjustment" (ICLR 2022 submission),
        Sections 2 and 4 (experiments with Horovod).
    """

    def __init__(self):
        super().__init__()
        self._reducer = None

    def on_train_begin(self, logs=None):
        if self._reducer is None:
            self._reducer = HorovodReducer()

    def on_epoch_end(self, epoch, logs=None):
        if not logs:
            return
        if self._reducer is None:
            self._reducer = HorovodReducer()
        names = sorted(
            name for name, value in logs.items()
            if isinstance(value, numbers.Real) and not isinstance(value, bool)
        )
        logs.update(self._reducer.reduce_mean({n: logs[n] for n in names}))

