"""Largest Hessian eigenvalue of one layer (the two-phase paper, Section 3.2)."""

from keras_lrphase.hessian.estimator import HessianEigenvalueEstimator
from keras_lrphase.hessian.estimator import HessianEigenvalueResult
from keras_lrphase.hessian.estimator import top_hessian_eigenvalue
