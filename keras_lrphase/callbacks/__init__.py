"""Keras callbacks of keras_lrphase."""

from keras_lrphase.callbacks.auto_decay import AutoDecay
from keras_lrphase.callbacks import backup_and_restore as _backup_and_restore
from keras_lrphase.callbacks.backup_and_restore import AtomicBackupAndRestore
from keras_lrphase.callbacks.controller_callback import ControllerCallback
from keras_lrphase.callbacks.freeze_layers import FreezeLayers
from keras_lrphase.callbacks.gradual_warmup import GradualWarmup
from keras_lrphase.callbacks.hessian_monitor import HessianMonitor
from keras_lrphase.callbacks.hessian_spectrum_monitor import HessianSpectrumMonitor
from keras_lrphase.callbacks.margin_monitor import MarginMonitor
from keras_lrphase.callbacks.momentum_correction import MomentumCorrection
from keras_lrphase.callbacks.parameter_change_monitor import ParameterChangeMonitor
from keras_lrphase.callbacks.stage_checkpoint import StageCheckpoint
from keras_lrphase.callbacks.two_phase_lr import TwoPhaseLR


def __getattr__(name):
    # The deprecated `BackupAndRestore` (warns once).
    if name == "BackupAndRestore":
        return _backup_and_restore.BackupAndRestore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
