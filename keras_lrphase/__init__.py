"""keras-lrphase: large-batch training that reaches small-batch accuracy.

Importing the package registers its serializable classes with Keras (so
models saved with them load after `import keras_lrphase`); the public names
are imported on first use (PEP 562). Nothing imports a Keras backend other
than the one Keras is configured with.
"""

import importlib
import os

__version__ = "0.1.0"

# Set by the `keras-lrphase` command while it imports the package: it builds
# its argument parser (and answers `--help`) without Keras, and calls
# `_register_serializables()` before a command runs.
_DEFER_KERAS = "_KERAS_LRPHASE_DEFER_KERAS"


def _register_serializables():
    """Imports the modules of the classes a saved model can name, which
    registers them with Keras (and imports Keras)."""
    import keras_lrphase.distributed.distributed_optimizer  # noqa: F401
    import keras_lrphase.optimizers.lars  # noqa: F401
    import keras_lrphase.optimizers.lars_wrapper  # noqa: F401
    import keras_lrphase.schedules.scaled_learning_rate  # noqa: F401
    import keras_lrphase.training.distillation  # noqa: F401


if os.environ.get(_DEFER_KERAS) != "1":
    _register_serializables()

_PUBLIC = {
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
    "top_hessian_eigenvalue": "keras_lrphase.hessian.estimator",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'keras_lrphase' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_PUBLIC))
