"""keras-lrphase: large-batch training that reaches small-batch accuracy."""

from keras_lrphase.callbacks.hessian_monitor import HessianMonitor
from keras_lrphase.hessian.estimator import HessianEigenvalueEstimator
from keras_lrphase.hessian.estimator import HessianEigenvalueResult
from keras_lrphase.hessian.estimator import top_hessian_eigenvalue
from keras_lrphase.optimizers.lars import LARS
from keras_lrphase.optimizers.lars_wrapper import LARSWrapper
from keras_lrphase.schedules.controlled_learning_rate import ControlledLearningRate

__version__ = "0.1.0"
