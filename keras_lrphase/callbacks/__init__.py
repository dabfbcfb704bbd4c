"""Keras callbacks of keras_lrphase."""

from keras_lrphase.callbacks.gradual_warmup import GradualWarmup
from keras_lrphase.callbacks.hessian_monitor import HessianMonitor
from keras_lrphase.callbacks.two_phase_lr import TwoPhaseLR
