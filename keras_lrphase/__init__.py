"""keras-lrphase: large-batch training that reaches small-batch accuracy.

Importing the package registers its serializable classes with Keras (so
models saved with them load after `import keras_lrphase`); the public names
are imported on first use (PEP 562). Nothing imports a Keras backend other
than the one Keras is configured with.
"""

import importlib
import os
import sys

__version__ = "0.1.0"

# Set to "1" (by a program that imports the package and loads Keras later):
# the package is imported without Keras, as under the `keras-lrphase`
# command, and `_register_serializables()` is left to the program.
_DEFER_KERAS = "_KERAS_LRPHASE_DEFER_KERAS"
# The `keras-lrphase` console script (`setup.cfg`), as `sys.argv[0]` names it.
_COMMAND_NAMES = ("keras-lrphase", "keras-lrphase.exe", "keras-lrphase-script.py")


def _started_by_the_command():
    """Whether the `keras-lrphase` command is importing the package.

    The console script and `python -m keras_lrphase` build the argument
    parser, answer `--help` and check the options without Keras
    (`keras_lrphase.cli_entry`), and register the serializable classes once
    they load it. While the console script imports its entry point,
    `sys.argv[0]` is its path; while `python -m keras_lrphase` imports the
    package, `sys.argv[0]` is `"-m"`.
    """
    if os.environ.get(_DEFER_KERAS) == "1":
        return True
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) in _COMMAND_NAMES:
        return True
    original = list(getattr(sys, "orig_argv", ()))
    return (argv0 == "-m" and "-m" in original[:-1]
            and original[original.index("-m") + 1] == "keras_lrphase")


def _register_serializables():
    """Imports the modules of the classes a saved model can name, which
    registers them with Keras (and imports Keras)."""
    import keras_lrphase.distributed.distributed_optimizer  # noqa: F401
    import keras_lrphase.optimizers.lars  # noqa: F401
    import keras_lrphase.optimizers.lars_wrapper  # noqa: F401
    import keras_lrphase.schedules.scaled_learning_rate  # noqa: F401
    import keras_lrphase.models.distiller  # noqa: F401
    import keras_lrphase.models.resnet  # noqa: F401  (ZeroPadShortcut)


if not _started_by_the_command():
    _register_serializables()

_PUBLIC = {
    "AtomicBackupAndRestore": "keras_lrphase.callbacks.backup_and_restore",
    "AutoDecay": "keras_lrphase.callbacks.auto_decay",
    "AutoDecayController": "keras_lrphase.controllers.auto_decay_controller",
    "BackupAndRestore": "keras_lrphase.callbacks.backup_and_restore",
    "ControlledLearningRate": "keras_lrphase.schedules.controlled_learning_rate",
    "ControllerCallback": "keras_lrphase.callbacks.controller_callback",
    "FreezeLayers": "keras_lrphase.callbacks.freeze_layers",
    "GradualWarmup": "keras_lrphase.callbacks.gradual_warmup",
    "HessianEigenvalueEstimator": "keras_lrphase.hessian.estimator",
    "HessianEigenvalueResult": "keras_lrphase.hessian.estimator",
    "HessianMonitor": "keras_lrphase.callbacks.hessian_monitor",
    "HessianOperator": "keras_lrphase.hessian.operator",
    "HessianSpectrumMonitor": "keras_lrphase.callbacks.hessian_spectrum_monitor",
    "LARS": "keras_lrphase.optimizers.lars",
    "JaxProcessReducer": "keras_lrphase.distributed.jax_process",
    "TfDistributeReducer": "keras_lrphase.distributed.tf_distribute",
    "LARSWrapper": "keras_lrphase.optimizers.lars_wrapper",
    "LocalReducer": "keras_lrphase.distributed.reduction",
    "MarginMonitor": "keras_lrphase.callbacks.margin_monitor",
    "MetricReducer": "keras_lrphase.distributed.reduction",
    "MomentumCorrection": "keras_lrphase.callbacks.momentum_correction",
    "ParameterChangeMonitor": "keras_lrphase.callbacks.parameter_change_monitor",
    "StageCheckpoint": "keras_lrphase.callbacks.stage_checkpoint",
    "TwoPhaseController": "keras_lrphase.controllers.two_phase_controller",
    "TwoPhaseLR": "keras_lrphase.callbacks.two_phase_lr",
    "hessian_density": "keras_lrphase.hessian.spectrum",
    "hessian_spectrum": "keras_lrphase.hessian.spectrum",
    "hessian_trace": "keras_lrphase.hessian.spectrum",
    "top_hessian_eigenvalue": "keras_lrphase.hessian.estimator",
    "top_hessian_eigenvalues": "keras_lrphase.hessian.spectrum",
}

# Old names, served (with a FutureWarning) but not exported by `*`.
_DEPRECATED = {"BackupAndRestore"}

__all__ = sorted(set(_PUBLIC) - _DEPRECATED)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'keras_lrphase' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__():
    # The deprecated names are served, not listed (listing them would make
    # every `dir()`-walking tool trigger their warning).
    return sorted(set(globals()) | (set(_PUBLIC) - _DEPRECATED))
