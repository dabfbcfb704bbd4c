"""Agreeing on decision inputs across the workers of a `tf.distribute` run.

With the TensorFlow backend, `tf.distribute.MirroredStrategy` trains on
several devices of one process: the epoch logs are already global, the
package's callbacks run once, and `LocalReducer` (the identity) is right.
`tf.distribute.MultiWorkerMirroredStrategy` (MWMS) runs one process per
worker (`TF_CONFIG`); each worker computes its own loss and its own Hessian
eigenvalue on its own shard, so a decision made from them could differ
between workers. `TfDistributeReducer` averages the decision inputs across
the workers with the strategy's own cross-worker collective (an all-gather
of the float64 values, the mean taken in NumPy: exact and identical on
every worker), and lets only the chief write files.

What Keras 3 breaks (checked with Keras 3.15.1 and TensorFlow 2.21, two
workers on localhost): `model.fit` does not run under a multi-worker MWMS,
keras-team/keras issue 20585. With the model built in `strategy.scope()`,
`fit` fails before any callback is called, in
`TensorFlowTrainer._maybe_symbolic_build`: `strategy.reduce("MEAN", batch,
axis=None)` on the `PerReplica` first batch raises `ValueError: Attempt to
convert a value (PerReplica:{...}) with an unsupported type (<class
'...values.PerReplica'>) to a Tensor.` With the model built outside the
scope and `fit` called inside it, the first train step fails in Keras'
optimizer (`AssertionError` in `_distributed_tf_update_step`). The package
does not patch Keras: its controller callbacks call `check_fit_strategy` at
`on_train_begin` and raise a `RuntimeError` naming the issue and the
alternatives there (the Horovod bridge `keras_lrphase.distributed.horovod`,
a multi-process JAX run, `MirroredStrategy` on one host). What does work
under MWMS is a custom training loop (`strategy.run` of a train step over
`strategy.experimental_distribute_dataset`) that drives the package's
callbacks by hand; `default_reducer()` then picks `TfDistributeReducer`.

Nothing here imports TensorFlow at import time: the package keeps it
optional.
"""

import sys

import numpy as np

from keras_lrphase.distributed.reduction import MetricReducer
from keras_lrphase.distributed.reduction import numbers_of

KERAS_ISSUE = "keras-team/keras issue 20585"
KERAS_ISSUE_URL = "https://github.com/keras-team/keras/issues/20585"

ALTERNATIVES = (
    "the Horovod bridge `keras_lrphase.distributed.horovod` (horovodrun, "
    "one process per worker), a multi-process JAX run "
    "(`jax.distributed.initialize` + `keras.distribution.DataParallel`, "
    "KERAS_BACKEND=jax), or `tf.distribute.MirroredStrategy` on one host; "
    "or keep MultiWorkerMirroredStrategy with a custom training loop "
    "(`strategy.run`) that calls the callbacks' hooks by hand, with "
    "`keras_lrphase.distributed.tf_distribute.TfDistributeReducer`"
)


class _Workers:
    """How a strategy's replicas are spread over processes (workers)."""

    def __init__(self, world_size=1, task_type=None, task_id=None,
                 local_replicas=1, is_chief=True):
        self.world_size = world_size
        self.task_type = task_type
        self.task_id = task_id
        self.local_replicas = local_replicas
        self.is_chief = is_chief


def _workers(tf, strategy):
    """The worker layout of `strategy`: one worker unless multi-worker MWMS.

    Only `MultiWorkerMirroredStrategy` runs its replicas in several
    processes that each run the whole training script (and so the
    callbacks); every other strategy (default, `OneDeviceStrategy`,
    `MirroredStrategy`, a TPU client) runs the callbacks in one process.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return _Workers()
    resolver = strategy.cluster_resolver
    cluster = resolver.cluster_spec().as_dict() if resolver is not None else {}
    chiefs = len(cluster.get("chief", ()))
    world_size = max(chiefs + len(cluster.get("worker", ())), 1)
    task_type = resolver.task_type if resolver is not None else None
    task_id = resolver.task_id if resolver is not None else None
    if world_size > 1 and task_type not in ("chief", "worker"):
        raise ValueError(
            "keras_lrphase averages decision inputs over the workers of a "
            "MultiWorkerMirroredStrategy (TF_CONFIG task type 'chief' or "
            "'worker'); a task of another type takes no part in their "
            "collectives: give its callbacks `reducer=LocalReducer()` and "
            f"create them outside the strategy's scope. Received: "
            f"task_type={task_type!r}"
        )
    if task_type == "chief":
        is_chief = True
    elif task_type == "worker":
        is_chief = chiefs == 0 and task_id == 0
    else:
        is_chief = True  # no cluster: one worker
    return _Workers(
        world_size=world_size,
        task_type=task_type,
        task_id=task_id,
        local_replicas=len(strategy.extended.worker_devices),
        is_chief=is_chief,
    )


def describe_strategy(strategy):
    """A short description of `strategy` for messages.

    E.g. "tf.distribute.MultiWorkerMirroredStrategy (2 workers; this task:
    worker 1)"; the class name for any other strategy.
    """
    tf = sys.modules.get("tensorflow")
    name = type(strategy).__name__
    if tf is None or not isinstance(
        strategy, tf.distribute.MultiWorkerMirroredStrategy
    ):
        return name
    workers = _workers(tf, strategy)
    return (
        f"tf.distribute.MultiWorkerMirroredStrategy ({workers.world_size} "
        f"workers; this task: {workers.task_type} {workers.task_id})"
    )


def running_multi_worker_strategy():
    """The current strategy if it is a MWMS of more than one worker, else None.

    Imports nothing: returns None unless the Keras backend is TensorFlow and
    `tensorflow` is imported already. The current strategy is
    `tf.distribute.get_strategy()`: the one whose `scope()` is entered.
    """
    import keras

    tf = sys.modules.get("tensorflow")
    if tf is None or keras.backend.backend() != "tensorflow":
        return None
    strategy = tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None
    return strategy if _workers(tf, strategy).world_size > 1 else None


def check_fit_strategy(model, user):
    """Raises if `model.fit` runs under a multi-worker MWMS (keras #20585).

    Called by the package's controller callbacks at `on_train_begin`, before
    the first epoch. Keras 3 (3.15.1 checked) cannot train under a
    `tf.distribute.MultiWorkerMirroredStrategy` of several workers
    (keras-team/keras issue 20585): rather than let the first train step
    fail inside Keras, the callback names the cause and the alternatives. A
    custom training loop under the strategy is not refused: there the model
    has no `train_function` (`fit` makes it just before `on_train_begin`).
    Imports nothing (returns at once unless the Keras backend is TensorFlow
    and `tensorflow` is imported) and patches nothing.

    Args:
        model: The `keras.Model` being trained.
        user: String. Who checks (the callback's class name), for the
            message.

    Raises:
        RuntimeError: `model.fit` runs under a MultiWorkerMirroredStrategy
            of more than one worker.

    Example:

    >>> import keras
    >>> from keras_lrphase.distributed.tf_distribute import check_fit_strategy
    >>> check_fit_strategy(keras.Sequential(), "TwoPhaseLR")  # no strategy
    """
    import keras

    tf = sys.modules.get("tensorflow")
    if tf is None or keras.backend.backend() != "tensorflow":
        return
    if getattr(model, "train_function", None) is None:
        return  # not inside `fit`: a custom training loop drives the callback
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is None:
        strategy = tf.distribute.get_strategy()
    if _workers(tf, strategy).world_size <= 1:
        return
    raise RuntimeError(
        f"{user} cannot run in `model.fit` under "
        f"{describe_strategy(strategy)}: Keras {keras.version()} does not "
        "train under a multi-worker MultiWorkerMirroredStrategy "
        f"({KERAS_ISSUE}, {KERAS_ISSUE_URL}; `fit` fails in Keras itself, "
        "e.g. `strategy.reduce` of a PerReplica batch in "
        "`_maybe_symbolic_build`). The package does not patch Keras. Use "
        f"instead {ALTERNATIVES}."
    )


class TfDistributeReducer(MetricReducer):
    """Averages decision inputs across the workers of a `tf.distribute` run.

    With a `tf.distribute.MultiWorkerMirroredStrategy` of several workers
    (processes, `TF_CONFIG`), each `reduce_mean` is one all-gather of the
    values as float64 over the strategy's cross-worker collectives
    (`strategy.gather`), at epoch ends only; every worker takes the mean of
    the same gathered array in NumPy, so the result is exact (rounded once)
    and identical on every worker. Every worker must call it with the same
    keys in the same order, which the package's callbacks do. With any
    strategy that runs in one process (the default one, `OneDeviceStrategy`,
    `MirroredStrategy`, a single-worker MWMS) it is the identity, with
    `world_size` 1: the logs are global there already.

    `world_size` counts workers (processes), not replicas: a worker with
    several devices contributes its values once. `is_chief` is the task of
    type "chief", or worker 0 when the cluster has no chief.

    `default_reducer()` returns it when the current strategy
    (`tf.distribute.get_strategy()`, i.e. inside `strategy.scope()`) is a
    MultiWorkerMirroredStrategy of more than one worker. `model.fit` does
    not run under such a strategy in Keras 3 (keras-team/keras issue 20585,
    see the module docstring): use it in a custom training loop that
    drives the callbacks by hand.

    Args:
        strategy: A `tf.distribute.Strategy` or None. Defaults to `None`:
            `tf.distribute.get_strategy()` at construction.

    Raises:
        RuntimeError: at construction, when the Keras backend is not
            TensorFlow.
        TypeError: at construction, when `strategy` is not a
            `tf.distribute.Strategy`.
        ValueError: at construction, on a task that is neither a chief nor
            a worker of a multi-worker cluster (e.g. an evaluator).

    Example:

    >>> import keras
    >>> from keras_lrphase.distributed.tf_distribute import TfDistributeReducer
    >>> if keras.backend.backend() == "tensorflow":  # one process
    ...     reducer = TfDistributeReducer()
    ...     print(reducer.reduce_mean({"loss": 0.5}), reducer.world_size)
    ... else:
    ...     print({'loss': 0.5}, 1)
    {'loss': 0.5} 1

    In each worker of a run with `TF_CONFIG` set:

    ```python
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    reducer = TfDistributeReducer(strategy)
    reducer.reduce_mean({"loss": 0.5 + task_index})  # 2 workers: 1.0
    ```

    References:
        "Achieving Small-Batch Accuracy with Large-Batch Scalability via
        Adaptive Learning Rate Adjustment" (ICLR 2022 submission),
        Sections 2 and 4 (data-parallel SGD over P workers).
    """

    def __init__(self, strategy=None):
        import keras

        backend = keras.backend.backend()
        if backend != "tensorflow":
            raise RuntimeError(
                "TfDistributeReducer averages across the workers of a "
                "tf.distribute strategy and needs the TensorFlow backend. "
                f"Received: KERAS_BACKEND={backend!r}. Use JaxProcessReducer "
                "in a multi-process JAX run, LocalReducer for one process."
            )
        import tensorflow as tf

        if strategy is None:
            strategy = tf.distribute.get_strategy()
        elif not isinstance(strategy, tf.distribute.Strategy):
            raise TypeError(
                "Argument `strategy` must be a tf.distribute.Strategy or "
                f"None. Received: strategy={strategy!r}"
            )
        self.strategy = strategy
        self._tf = tf
        self._workers = _workers(tf, strategy)

    @property
    def is_chief(self):
        """Whether this is the chief (or worker 0), the one that writes files."""
        return self._workers.is_chief

    @property
    def world_size(self):
        """Number of workers (processes) the values are averaged over."""
        return self._workers.world_size

    def reduce_mean(self, values):
        numbers = numbers_of(values)
        if self.world_size == 1:
            return {name: number for name, number in zip(values, numbers)}
        if not numbers:
            return {}
        tf = self._tf
        local = tf.constant([numbers], dtype=tf.float64)
        # One row per replica, every replica of this worker holding this
        # worker's values; the gather concatenates them in replica order
        # (worker 0's replicas first), the same array on every worker.
        per_replica = self.strategy.experimental_distribute_values_from_function(
            lambda context: local
        )
        gathered = self.strategy.gather(per_replica, axis=0).numpy()
        replicas = self.world_size * self._workers.local_replicas
        if gathered.shape != (replicas, len(numbers)):
            raise RuntimeError(
                "TfDistributeReducer: the workers reduced different numbers "
                f"of values (this worker {len(numbers)}: {sorted(values)}); "
                "every worker must run the same callbacks. Received: "
                f"gathered shape {tuple(gathered.shape)}"
            )
        rows = gathered.reshape(
            self.world_size, self._workers.local_replicas, len(numbers)
        )[:, 0, :]
        means = np.mean(rows, axis=0)
        return {name: float(mean) for name, mean in zip(values, means)}
