"""Pure decision logic (no Keras) behind the package's LR callbacks."""

from keras_lrphase.controllers.auto_decay_controller import AutoDecayController
from keras_lrphase.controllers.auto_decay_controller import AutoDecayState
from keras_lrphase.controllers.controller import Controller
from keras_lrphase.controllers.controller import Decision
from keras_lrphase.controllers.two_phase_controller import TwoPhaseController
from keras_lrphase.controllers.two_phase_controller import TwoPhaseState
