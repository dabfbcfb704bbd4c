"""Agreeing on decision inputs across the ranks of a Horovod job.

In a Horovod job (TensorFlow backend) each rank trains on its own shard.
With `DistributedOptimizer` the weights stay identical, but a rank's epoch
loss and its Hessian eigenvalue are computed on its own data: the
`hessian_data` each rank passes to `TwoPhaseLR` or `HessianMonitor` is its
own shard (in the paper's 8 workers x 1024 samples, each worker's 1024),
so the raw values differ between ranks, and so could the decisions.
`HorovodReducer` averages every decision input across the ranks before
each decision, and lets only rank 0 write files.

`keras_lrphase.distributed.default_reducer()` picks it whenever
`horovod.tensorflow` has been imported and initialised with more than one
rank, so the package's callbacks use it without a `reducer` argument:
create them after `hvd.init()`.
"""

import numpy as np

from keras_lrphase.distributed.horovod_runtime import horovod_module
from keras_lrphase.distributed.reduction import MetricReducer
from keras_lrphase.distributed.reduction import numbers_of


class HorovodReducer(MetricReducer):
    """Averages decision inputs across the ranks of a Horovod job.

    Each `reduce_mean` is one `hvd.allgather` of the values as float64, at
    epoch ends only; every rank then takes the mean of the same gathered
    array in the same order, so the result is identical on every rank and
    rounded once. Every rank must call it with the same keys in the same
    order, which the package's callbacks do.

    Raises:
        ImportError: at construction, when Horovod is not installed.
        RuntimeError: at construction, when the Keras backend is not
            TensorFlow or `hvd.init()` has not been called.

    Example (in each rank of a job launched with `horovodrun`):

    >>> from keras_lrphase.distributed.horovod import HorovodReducer
    >>> import horovod.tensorflow as hvd  # doctest: +SKIP
    >>> hvd.init()  # doctest: +SKIP
    >>> reducer = HorovodReducer()  # doctest: +SKIP
    >>> reducer.reduce_mean({"loss": 0.5 + hvd.rank()})  # doctest: +SKIP
    {'loss': 1.0}

    References:
        "Achieving Small-Batch Accuracy with Large-Batch Scalability via
        Adaptive Learning Rate Adjustment" (ICLR 2022 submission),
        Sections 2 and 4 (data-parallel SGD over P workers; experiments
        with Horovod).
    """

    def __init__(self):
        self._hvd = horovod_module("HorovodReducer")

    @property
    def is_chief(self):
        """Whether this is rank 0, the one that writes files."""
        return self._hvd.rank() == 0

    @property
    def world_size(self):
        """Number of ranks the values are averaged over."""
        return self._hvd.size()

    def reduce_mean(self, values):
        numbers = numbers_of(values)
        if not numbers:
            return {}
        import tensorflow as tf

        local = tf.constant([numbers], dtype=tf.float64)
        # One collective at a time (`numpy()` waits for it): a fixed name
        # matches the ranks' calls in order.
        gathered = self._hvd.allgather(
            local, name="keras_lrphase_reduce_mean"
        ).numpy()
        if gathered.shape != (self.world_size, len(numbers)):
            raise RuntimeError(
                "HorovodReducer: the ranks reduced different numbers of "
                f"values (this rank {len(numbers)}: {sorted(values)}); every "
                "rank must run the same callbacks. Received: gathered shape "
                f"{tuple(gathered.shape)}"
            )
        means = np.mean(gathered, axis=0)
        return {name: float(mean) for name, mean in zip(values, means)}
