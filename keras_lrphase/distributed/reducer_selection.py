"""`default_reducer`: which `MetricReducer` a run needs, found unasked.

Kept apart from `reduction.py`, whose `MetricReducer` the multi-worker
reducers import, so that no module imports one that imports it back.
"""

import sys

from keras_lrphase.distributed.reduction import LocalReducer


def default_reducer():
    """The reducer the callbacks use when given none.

    `JaxProcessReducer` when the Keras backend is JAX and the run has more
    than one JAX process (`jax.distributed.initialize` was called);
    `HorovodReducer` when the backend is TensorFlow and the script has
    imported `horovod.tensorflow` and initialised it with more than one rank
    (`hvd.init()` under `horovodrun`); `TfDistributeReducer` when the
    backend is TensorFlow and the current strategy
    (`tf.distribute.get_strategy()`: the one whose `scope()` is entered) is
    a `tf.distribute.MultiWorkerMirroredStrategy` of more than one worker;
    so a multi-worker run agrees on its decisions without configuration.
    Otherwise `LocalReducer` (one process: the default strategy and
    `MirroredStrategy` included). JAX excludes the other two; a Horovod job
    inside a multi-worker strategy's scope is ambiguous and raises. Nothing
    is imported to decide (TensorFlow and Horovod only if the script has
    imported them); checked when a callback is constructed: create
    callbacks after `jax.distributed.initialize` or `hvd.init()`, or inside
    the multi-worker `strategy.scope()`.

    Raises:
        RuntimeError: both a Horovod job of more than one rank and a
            multi-worker `tf.distribute` strategy are running; pass the
            callbacks a `reducer`.

    Example:

    >>> from keras_lrphase.distributed import default_reducer
    >>> type(default_reducer()).__name__  # a single process
    'LocalReducer'
    """
    import keras

    if keras.backend.backend() == "jax":
        # `jax` is imported already when it is the Keras backend; asking
        # whether `jax.distributed` is initialised does not start a backend.
        jax = sys.modules.get("jax")
        if (jax is not None and jax.distributed.is_initialized()
                and jax.process_count() > 1):
            from keras_lrphase.distributed.jax_process import JaxProcessReducer

            return JaxProcessReducer()
        return LocalReducer()
    from keras_lrphase.distributed.horovod_runtime import running_horovod
    from keras_lrphase.distributed.tf_distribute import (
        running_multi_worker_strategy,
    )

    horovod = running_horovod()
    strategy = running_multi_worker_strategy()
    if horovod is not None and strategy is not None:
        from keras_lrphase.distributed.tf_distribute import describe_strategy

        raise RuntimeError(
            "default_reducer: both a Horovod job of "
            f"{horovod.size()} ranks and {describe_strategy(strategy)} are "
            "running, so which workers to average over is ambiguous. Pass "
            "the callbacks `reducer=HorovodReducer()` or "
            "`reducer=TfDistributeReducer(strategy)`."
        )
    if horovod is not None:
        from keras_lrphase.distributed.horovod_reducer import HorovodReducer

        return HorovodReducer()
    if strategy is not None:
        from keras_lrphase.distributed.tf_distribute import TfDistributeReducer

        return TfDistributeReducer(strategy)
    return LocalReducer()
