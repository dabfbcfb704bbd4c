"""Agreeing on decision inputs across the processes of a JAX run.

With the JAX backend, a data-parallel run over several hosts (or several
processes on one host) starts every process with
`jax.distributed.initialize(...)` and trains with
`keras.distribution.DataParallel`. Keras all-reduces the gradients, so all
processes hold the same weights, and the epoch logs (`loss`, metrics) are
already means over the global batch. A Hessian eigenvalue, however, is
computed by each process on its own batch: the `hessian_data` each process
passes to `TwoPhaseLR` or `HessianMonitor` is its own shard (in the paper's
setting of 8 workers x 1024 samples, each worker's 1024), so the raw
eigenvalues differ between processes. `JaxProcessReducer` averages them
(and every other decision input) across processes with JAX's own
collectives before each decision, so every process decides alike, and
lets only process 0 write files.

`keras_lrphase.distributed.default_reducer()` picks it whenever the Keras
backend is JAX and `jax.process_count() > 1`, so the package's callbacks use
it without a `reducer` argument.
"""

import numpy as np

from keras_lrphase.distributed.reduction import MetricReducer
from keras_lrphase.distributed.reduction import numbers_of


class JaxProcessReducer(MetricReducer):
    """Averages decision inputs across the processes of `jax.distributed`.

    Use it in a multi-process JAX run (`jax.distributed.initialize` called
    in every process); the callbacks pick it by default there. Each
    `reduce_mean` is one `process_allgather` of the values (sent as their
    float64 bits, so the mean is exact and identical on every process), at
    epoch ends only. Every process must call it with the same keys in the
    same order, which the package's callbacks do.

    Raises:
        RuntimeError: at construction, when the Keras backend is not JAX or
            `jax.distributed` is not initialised.

    Example (in each of the run's processes):

    ```python
    import jax
    jax.distributed.initialize("host0:1234", num_processes=2, process_id=rank)
    import keras, keras_lrphase as lrp
    keras.distribution.set_distribution(keras.distribution.DataParallel())
    callback = lrp.TwoPhaseLR(own_shard)  # reducer: JaxProcessReducer()
    ```

    References:
        "Achieving Small-Batch Accuracy with Large-Batch Scalability via
        Adaptive Learning Rate Adjustment" (ICLR 2022 submission),
        Sections 2 and 4 (data-parallel SGD over P workers).
    """

    def __init__(self):
        import keras

        backend = keras.backend.backend()
        if backend != "jax":
            raise RuntimeError(
                "JaxProcessReducer averages across JAX processes and needs "
                f"the JAX backend. Received: KERAS_BACKEND={backend!r}. Use "
                "LocalReducer for one process, or a reducer of the engine "
                "that runs the workers."
            )
        import jax

        if not jax.distributed.is_initialized():
            raise RuntimeError(
                "JaxProcessReducer needs `jax.distributed.initialize(...)` to "
                "have been called in every process of the run. Received: "
                "jax.distributed.is_initialized()=False"
            )
        self._jax = jax

    @property
    def is_chief(self):
        """Whether this is process 0, the one that writes files."""
        return self._jax.process_index() == 0

    @property
    def process_count(self):
        """Number of processes the values are averaged over."""
        return self._jax.process_count()

    @property
    def world_size(self):
        """Number of processes the values are averaged over."""
        return self._jax.process_count()

    def reduce_mean(self, values):
        numbers = numbers_of(values)
        if not numbers:
            return {}
        from jax.experimental import multihost_utils

        # JAX computes in float32 unless x64 is enabled: gather the float64
        # bits as uint32 pairs instead, so no process rounds them.
        bits = np.asarray(numbers, dtype=np.float64).view(np.uint32)
        gathered = np.asarray(multihost_utils.process_allgather(bits))
        means = gathered.view(np.float64).mean(axis=0)
        return {name: float(mean) for name, mean in zip(values, means)}
