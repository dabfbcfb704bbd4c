"""Metric providers: what controllers ask for beyond the epoch logs."""

from keras_lrphase.providers.hessian_eigenvalue import HessianEigenvalueProvider
