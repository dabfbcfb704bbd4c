"""keras-lrphase: large-batch training that reaches small-batch accuracy."""

from keras_lrphase.callbacks.auto_decay import AutoDecay
from keras_lrphase.callbacks.backup_and_restore import BackupAndRestore
from keras_lrphase.callbacks.controller_callback import ControllerCallback
from keras_lrphase.callbacks.gradual_warmup import GradualWarmup
from keras_lrphase.callbacks.hessian_monitor import HessianMonitor
from keras_lrphase.callbacks.momentum_correction import MomentumCorrection
from keras_lrphase.callbacks.stage_checkpoint import StageCheckpoint
from keras_lrphase.callbacks.two_phase_lr import TwoPhaseLR
from keras_lrphase.controllers.auto_decay_controller import AutoDecayController
from keras_lrphase.controllers.two_phase_controller import TwoPhaseController
from keras_lrphase.distributed.reduction import LocalReducer
from keras_lrphase.distributed.reduction import MetricReducer
from keras_lrphase.hessian.estimator import HessianEigenvalueEstimator
from keras_lrphase.hessian.estimator import HessianEigenvalueResult
from keras_lrphase.hessian.estimator import top_hessian_eigenvalue
from keras_lrphase.optimizers.lars import LARS
from keras_lrphase.optimizers.lars_wrapper import LARSWrapper
from keras_lrphase.schedules.controlled_learning_rate import ControlledLearningRate

__version__ = "0.1.0"
