"""The loss Hessian of a Keras model: its largest eigenvalue in one layer
(the two-phase paper, Section 3.2), and its spectrum in any set of weights
(top eigenvalues, trace, density; `keras_lrphase.hessian.spectrum`)."""

from keras_lrphase.hessian.estimator import HessianEigenvalueEstimator
from keras_lrphase.hessian.estimator import HessianEigenvalueResult
from keras_lrphase.hessian.estimator import top_hessian_eigenvalue
from keras_lrphase.hessian.operator import HessianOperator
from keras_lrphase.hessian.spectrum import HessianDensityResult
from keras_lrphase.hessian.spectrum import HessianEigenvaluesResult
from keras_lrphase.hessian.spectrum import HessianSpectrumResult
from keras_lrphase.hessian.spectrum import HessianTraceResult
from keras_lrphase.hessian.spectrum import hessian_density
from keras_lrphase.hessian.spectrum import hessian_spectrum
from keras_lrphase.hessian.spectrum import hessian_trace
from keras_lrphase.hessian.spectrum import top_hessian_eigenvalues
from keras_lrphase.hessian.spectrum_records import load_spectrum_records
