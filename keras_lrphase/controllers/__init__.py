"""Pure decision logic (no Keras) behind the package's LR callbacks."""

from keras_lrphase.controllers.two_phase_controller import TwoPhaseController
from keras_lrphase.controllers.two_phase_controller import TwoPhaseState
