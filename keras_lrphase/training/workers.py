"""The workers of a `keras-lrphase train` run: one process, Horovod or JAX.

`keras-lrphase train --distributed horovod` (launched by `horovodrun`) and
`--distributed jax` (one command per process, with `--coordinator`,
`--num-processes` and `--process-id`) train one configuration data-parallel
on the existing engines: Horovod through the package's Keras 3 bridge
(`keras_lrphase.distributed.horovod`), JAX through
`keras.distribution.DataParallel`. `Workers` is what the runner needs to
know of them: this worker's rank, the number of workers, its shard of the
data, and the engine's optimizer wrapper and callbacks.

`--batch-size` stays the global batch: each of `N` workers trains on
`batch_size / N` examples per step from its own `1/N` of the training set
(the examples `rank, rank + N, ...`, the same number on every worker), so a
configuration means the same thing on any number of workers and the
learning rate needs no rescaling. The Hessian batch is split the same way:
each worker estimates the eigenvalue on its own share and the controllers
average the estimates (the paper's 8 workers x 1024 examples). Worker 0
writes the run's files; worker `r` > 0 writes only its `history.csv`, in
`OUT/workers/rank{r}/`, so that every worker's decisions can be compared.
"""

import dataclasses

LOCAL = "local"
HOROVOD = "horovod"
JAX = "jax"
ENGINES = (HOROVOD, JAX)
# Rank r > 0 shuffles and augments its shard with seed + r * SEED_STRIDE.
SEED_STRIDE = 7919


@dataclasses.dataclass(frozen=True)
class Workers:
    """This process's place in the run's group of workers.

    Attributes:
        engine: String. `"local"` (one process), `"horovod"` or `"jax"`.
        rank: Int. This worker's index, `0 <= rank < size`.
        size: Int. Number of workers.

    Example:

    >>> import numpy as np
    >>> workers = Workers("horovod", rank=1, size=2)
    >>> workers.shard(np.arange(7)).tolist()   # rank 1's share of 7
    [1, 3, 5]
    >>> workers.local_batch(256, "batch_size"), workers.is_chief
    (128, False)
    """

    engine: str = LOCAL
    rank: int = 0
    size: int = 1

    @property
    def is_chief(self):
        """Whether this worker writes the run's files (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self):
        """Whether the run has more than one worker."""
        return self.size > 1

    def shard(self, array):
        """This worker's share of `array`: every `size`-th row from `rank`.

        Every worker gets `len(array) // size` rows; the few left over are
        not used.
        """
        per_worker = len(array) // self.size
        return array[self.rank::self.size][:per_worker]

    def local_batch(self, batch_size, name):
        """The per-worker part of the global `batch_size`, or raises.

        Raises:
            ValueError: naming `name` when `size` does not divide it.
        """
        if batch_size % self.size:
            raise ValueError(
                f"Argument `{name}` is the global batch and must be a "
                f"multiple of the number of workers ({self.size}). "
                f"Received: {name}={batch_size}"
            )
        return batch_size // self.size

    def seed(self, seed):
        """The shuffle and augmentation seed of this worker's shard."""
        return seed + SEED_STRIDE * self.rank

    def wrap_optimizer(self, optimizer):
        """The optimizer this worker trains with (Horovod: averaged)."""
        if self.engine == HOROVOD:
            from keras_lrphase.distributed.horovod import DistributedOptimizer

            return DistributedOptimizer(optimizer)
        return optimizer

    def callbacks(self):
        """The engine's callbacks, to run before every other one.

        Horovod: the epoch logs averaged across ranks (so the history and
        the controllers see global numbers) and rank 0's initial weights
        and optimizer state broadcast. JAX: none (Keras all-reduces the
        gradients and its epoch logs are global already).
        """
        if self.engine == HOROVOD:
            from keras_lrphase.distributed.horovod import (
                BroadcastGlobalVariablesCallback, MetricAverageCallback)

            return [MetricAverageCallback(), BroadcastGlobalVariablesCallback(0)]
        return []


def start_workers(engine=None, coordinator=None, num_processes=None,
                  process_id=None):
    """Joins the run's group of workers and returns this worker's `Workers`.

    Call it before any model is built. `"horovod"`: `hvd.init()` (the
    process was started by `horovodrun`; TensorFlow backend). `"jax"`:
    `jax.distributed.initialize(coordinator, num_processes, process_id)`
    and `keras.distribution.DataParallel(auto_shard_dataset=False)` as the
    Keras distribution (JAX backend; each process feeds its own shard).

    Args:
        engine: `None` (one process), `"horovod"` or `"jax"`.
        coordinator: String `"host:port"` of process 0 (JAX only).
        num_processes: Int. Number of processes (JAX only).
        process_id: Int. This process's index (JAX only).

    Returns:
        A `Workers`.

    Raises:
        ValueError: naming the argument, for an unknown engine, JAX
            arguments missing or out of range, or JAX arguments given
            without `engine="jax"`.
        RuntimeError: when the Keras backend is not the engine's.
        ImportError: when Horovod is not installed.

    Example:

    >>> start_workers()
    Workers(engine='local', rank=0, size=1)
    """
    jax_args = {"coordinator": coordinator, "num_processes": num_processes,
                "process_id": process_id}
    given = [k for k, v in jax_args.items() if v is not None]
    if given and engine != JAX:
        # Horovod: horovodrun starts and numbers the ranks.
        raise ValueError(
            f"Argument `{given[0]}` is for distributed='jax' only. "
            f"Received: {given[0]}={jax_args[given[0]]!r} with "
            f"distributed={engine!r}"
        )
    if engine is None or engine == LOCAL:
        return Workers()
    if engine not in ENGINES:
        raise ValueError(
            f"Argument `distributed` must be one of {', '.join(ENGINES)}. "
            f"Received: distributed={engine!r}"
        )
    import keras

    backend = keras.backend.backend()
    wanted = "tensorflow" if engine == HOROVOD else "jax"
    if backend != wanted:
        raise RuntimeError(
            f"distributed={engine!r} needs KERAS_BACKEND={wanted!r}. "
            f"Received: KERAS_BACKEND={backend!r}"
        )
    if engine == HOROVOD:
        from keras_lrphase.distributed.horovod_runtime import INSTALL_HINT

        try:
            import horovod.tensorflow as hvd
        except ImportError as error:
            raise ImportError(
                "distributed='horovod' needs the package `horovod` "
                f"(horovod.tensorflow), which cannot be imported ({error}). "
                f"{INSTALL_HINT}"
            ) from error
        hvd.init()
        return Workers(HOROVOD, hvd.rank(), hvd.size())
    return _start_jax(coordinator, num_processes, process_id)


def _start_jax(coordinator, num_processes, process_id):
    for name, value in (("coordinator", coordinator),
                        ("num_processes", num_processes),
                        ("process_id", process_id)):
        if value is None:
            raise ValueError(
                f"Argument `{name}` is required with distributed='jax'. "
                f"Received: {name}=None"
            )
    if not isinstance(coordinator, str) or ":" not in coordinator:
        raise ValueError(
            "Argument `coordinator` must be 'host:port' of process 0. "
            f"Received: coordinator={coordinator!r}"
        )
    if int(num_processes) < 1:
        raise ValueError(
            "Argument `num_processes` must be at least 1. "
            f"Received: num_processes={num_processes}"
        )
    if not 0 <= int(process_id) < int(num_processes):
        raise ValueError(
            f"Argument `process_id` must be in [0, {int(num_processes) - 1}] "
            f"(num_processes={num_processes}). Received: "
            f"process_id={process_id}"
        )
    import jax
    import keras

    jax.distributed.initialize(coordinator, int(num_processes),
                               int(process_id))
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(auto_shard_dataset=False))
    return Workers(JAX, jax.process_index(), jax.process_count())
