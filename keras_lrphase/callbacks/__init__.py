"""Keras callbacks of keras_lrphase."""

from keras_lrphase.callbacks.auto_decay import AutoDecay
from keras_lrphase.callbacks.backup_and_restore import BackupAndRestore
from keras_lrphase.callbacks.controller_callback import ControllerCallback
from keras_lrphase.callbacks.gradual_warmup import GradualWarmup
from keras_lrphase.callbacks.hessian_monitor import HessianMonitor
from keras_lrphase.callbacks.momentum_correction import MomentumCorrection
from keras_lrphase.callbacks.stage_checkpoint import StageCheckpoint
from keras_lrphase.callbacks.two_phase_lr import TwoPhaseLR
