"""Running and recording training configurations (what the CLI runs).

The names are imported on first use (PEP 562), so that `RunConfig` and the
command line's options load without Keras.
"""

import importlib

_PUBLIC = {
    "COLUMNS": "keras_lrphase.training.epoch_recorder",
    "EpochRecorder": "keras_lrphase.training.epoch_recorder",
    "RunConfig": "keras_lrphase.training.run_config",
    "plot_compare": "keras_lrphase.training.plots",
    "plot_curves": "keras_lrphase.training.plots",
    "run_training": "keras_lrphase.training.runner",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(
            f"module 'keras_lrphase.training' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
