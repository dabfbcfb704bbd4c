"""Reaching Horovod lazily, and the rank-0-only helpers of a Horovod job.

The package's Horovod bridge imports `horovod.tensorflow` only when one of
its objects is used, so `import keras_lrphase.distributed.horovod` works
(and a model saved with `DistributedOptimizer` loads) where Horovod is not
installed. `horovod_module()` is that one import, with the checks every
user of it needs: the TensorFlow backend, and `hvd.init()` called.

In a Horovod job every rank runs the same script. Files and printed
progress belong to rank 0 only: `rank_zero_only(callbacks)` keeps
`ModelCheckpoint`, `CSVLogger`, `TensorBoard` (or any list) on rank 0 and
drops them elsewhere, and `verbose_on_rank_zero(verbose)` is the `verbose`
to pass to `fit` and to the package's callbacks.
"""

import sys

from keras_lrphase._validation import check_integer

INSTALL_HINT = (
    "Install it with the TensorFlow backend and Gloo, e.g. "
    "`pip install \"tensorflow-cpu==2.18.*\" wheel setuptools` then "
    "`HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 "
    "HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 pip install "
    "--no-build-isolation horovod==0.28.1`, and launch the script with "
    "`horovodrun`."
)


def horovod_module(user="The Horovod bridge"):
    """`horovod.tensorflow`, imported now, initialised and on TensorFlow.

    Args:
        user: String. Who needs Horovod, for the messages.

    Raises:
        ImportError: Horovod (with its TensorFlow ops) is not installed.
        RuntimeError: the Keras backend is not TensorFlow, or `hvd.init()`
            has not been called.

    Example:

    >>> from keras_lrphase.distributed.horovod_runtime import horovod_module
    >>> hvd = horovod_module()  # doctest: +SKIP
    """
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"{user} runs Horovod's TensorFlow collectives and needs the "
            f"TensorFlow backend. Received: KERAS_BACKEND={backend!r}"
        )
    try:
        import horovod.tensorflow as hvd
    except ImportError as error:
        raise ImportError(
            f"{user} needs the package `horovod` (horovod.tensorflow), which "
            f"cannot be imported ({error}). {INSTALL_HINT}"
        ) from error
    if not hvd.is_initialized():
        raise RuntimeError(
            f"{user} needs `hvd.init()` (import horovod.tensorflow as hvd) "
            "to have been called first, in every rank of the job. Received: "
            "horovod.tensorflow.is_initialized()=False"
        )
    return hvd


def running_horovod():
    """`horovod.tensorflow` if a job of more than one rank runs, else None.

    Imports nothing: a script that uses Horovod has imported it (and called
    `hvd.init()`) already.
    """
    import keras

    hvd = sys.modules.get("horovod.tensorflow")
    if hvd is None or keras.backend.backend() != "tensorflow":
        return None
    try:
        if hvd.is_initialized() and hvd.size() > 1:
            return hvd
    except (AttributeError, ValueError):
        pass
    return None


def rank_zero_only(callbacks):
    """The given callbacks on rank 0, an empty list on the other ranks.

    Use it for what writes files or prints: `ModelCheckpoint`,
    `CSVLogger`, `TensorBoard`, `StageCheckpoint`. Do not use it for the
    callbacks every rank must run (the package's LR controllers,
    `BackupAndRestore`, the broadcast and metric averaging): each rank keeps
    its own copy of their state, and the controllers write their
    `state_path` from rank 0 already.

    Args:
        callbacks: Iterable of `keras.callbacks.Callback`.

    Returns:
        A list: `list(callbacks)` on rank 0, `[]` elsewhere.

    Example (in a script launched with `horovodrun`):

    >>> from keras_lrphase.distributed.horovod import rank_zero_only
    >>> rank_zero_only([])
    []
    >>> callbacks = rank_zero_only([keras.callbacks.CSVLogger("log.csv")])  # doctest: +SKIP
    """
    callbacks = list(callbacks)
    if not callbacks:
        return callbacks
    hvd = horovod_module("rank_zero_only")
    return callbacks if hvd.rank() == 0 else []


def verbose_on_rank_zero(verbose=1):
    """`verbose` on rank 0, 0 on the other ranks (one progress bar).

    Args:
        verbose: Integer >= 0. The verbosity rank 0 prints with. Defaults
            to `1`.

    Example (in a script launched with `horovodrun`):

    >>> from keras_lrphase.distributed.horovod import verbose_on_rank_zero
    >>> verbose_on_rank_zero(-1)
    Traceback (most recent call last):
    ...
    ValueError: Argument `verbose` must be an integer >= 0. Received: verbose=-1
    >>> model.fit(x, y, verbose=verbose_on_rank_zero(2))  # doctest: +SKIP
    """
    verbose = check_integer("verbose", verbose, 0)
    hvd = horovod_module("verbose_on_rank_zero")
    return verbose if hvd.rank() == 0 else 0
