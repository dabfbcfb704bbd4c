"""The controller protocol, its one Keras adapter and the shared providers."""

import dataclasses
import math
import warnings

import keras
import numpy as np
import pytest

from keras_lrphase import ControllerCallback
from keras_lrphase import HessianMonitor
from keras_lrphase import TwoPhaseController
from keras_lrphase import TwoPhaseLR
from keras_lrphase.controllers.controller import Controller
from keras_lrphase.controllers.controller import Decision
from scripted_training import TRACE_A_EIGENVALUES
from scripted_training import TRACE_A_LOSSES
from scripted_training import Crash
from scripted_training import Interrupted
from scripted_training import ScriptedEstimator
from scripted_training import ScriptedLoss
from scripted_training import regression_data
from scripted_training import tiny_model

pytestmark = pytest.mark.backend_neutral

F32 = np.float32


def fit(model, callbacks, epochs, batch_size=4, **kwargs):
    x, y = regression_data()
    return model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False,
                     verbose=0, callbacks=callbacks, **kwargs)


@dataclasses.dataclass(frozen=True)
class CountdownState:
    next_epoch: int = 0
    lr_factor: float = 1.0


class HalveThenStop(Controller):
    """Halves at the end of epoch 1, stops at the end of epoch 3."""

    name = "countdown"
    state_class = CountdownState
    FIELDS = {"next_epoch": "count", "lr_factor": "positive"}

    def required_metrics(self, epoch):
        return ("loss",)

    def _transition(self, state, epoch, metrics):
        state = dataclasses.replace(state, next_epoch=epoch + 1)
        if epoch == 1:
            return (dataclasses.replace(state, lr_factor=0.5),
                    Decision(0.5, False, ("decay",)))
        if epoch == 3:
            return state, Decision(1.0, True, ("stop",))
        return state, Decision()

    def get_config(self):
        return {}


def test_any_controller_runs_through_the_adapter():
    model = tiny_model(keras.optimizers.SGD(0.1))
    callback = ControllerCallback(HalveThenStop(), verbose=0)
    history = fit(model, [callback], 10)
    assert len(history.history["loss"]) == 4  # stopped after epoch 3
    assert history.history["learning_rate"] == [float(F32(0.1))] * 2 + [
        float(F32(0.05))] * 2
    assert callback._store.events_at(1) == [("countdown", "decay")]
    assert callback._store.events_at(3) == [("countdown", "stop")]


def test_adapter_arguments_are_checked():
    with pytest.raises(ValueError, match="`controller` must be a keras_lrphase"):
        ControllerCallback(TwoPhaseController)
    with pytest.raises(ValueError, match="`min_lr` must be a finite number >= 0. Received: min_lr=-1"):
        ControllerCallback(HalveThenStop(), min_lr=-1)
    with pytest.raises(ValueError, match="`momentum_correction` must be True or False. Received: momentum_correction=1"):
        ControllerCallback(HalveThenStop(), momentum_correction=1)
    with pytest.raises(ValueError, match="`monitor` must be a non-empty string"):
        ControllerCallback(HalveThenStop(), monitor=None)


def test_two_phase_and_monitor_compute_the_eigenvalue_once_per_epoch():
    estimator = ScriptedEstimator([float(v) for v in range(1, 20)])
    two_phase = TwoPhaseLR(regression_data(), 12, plateau_patience=2,
                           estimator=estimator)
    monitor = HessianMonitor(regression_data(), estimator=estimator)
    model = tiny_model(keras.optimizers.SGD(0.1))
    history = fit(model, [ScriptedLoss(TRACE_A_LOSSES), two_phase, monitor], 12)
    assert two_phase.providers[0] is monitor.providers[0]
    # One estimate per epoch (the monitor's), continuing one warm-start chain.
    assert len(estimator.initial_vectors) == 12
    assert history.history["hessian_max_eigenvalue"] == [float(v) for v in range(1, 13)]


@pytest.mark.tensorflow_backend
def test_a_non_finite_estimate_never_poisons_the_next_one():
    """NaN weights for one epoch: no decision, then a fresh warm start."""
    x, y = regression_data()
    calls = []

    class PoisonOnce(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 7:
                self.saved = self.model.get_weights()
                self.model.set_weights([np.full_like(w, np.nan) for w in self.saved])

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 8:
                self.model.set_weights(self.saved)

    class Recording:
        def __init__(self):
            from keras_lrphase import HessianEigenvalueEstimator
            self.inner = HessianEigenvalueEstimator(seed=0)

        def __call__(self, model, x, y, initial_vector=None):
            calls.append(initial_vector)
            return self.inner(model, x, y, initial_vector=initial_vector)

    estimator = Recording()
    two_phase = TwoPhaseLR((x, y), 12, plateau_patience=2, estimator=estimator)
    model = tiny_model(keras.optimizers.SGD(0.01))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit(model, [ScriptedLoss(TRACE_A_LOSSES), PoisonOnce(), two_phase,
                              HessianMonitor((x, y), estimator=estimator)], 12)
    values = history.history["hessian_max_eigenvalue"]
    assert math.isnan(values[7]) and all(math.isfinite(v) for v in values[8:])
    assert calls[8] is None  # the NaN vector of epoch 7 was dropped
    assert all(c is not None for c in calls[1:8] + calls[9:])
    assert sum("non-finite value at epoch 8" in str(w.message) for w in caught) == 1


def test_mistakes_the_estimator_would_catch_fail_before_the_first_epoch():
    model = tiny_model(keras.optimizers.SGD(0.1))
    epochs = []
    record = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, l: epochs.append(e))
    with pytest.raises(ValueError, match="`layer` names no layer.*Received: layer='dense_9'"):
        fit(model, [TwoPhaseLR(regression_data(), layer="dense_9"), record], 3)
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 1), "float32")
    with pytest.raises(ValueError, match="`hessian_data` cannot be used to estimate the Hessian"):
        fit(model, [TwoPhaseLR((x, y)), record], 3)
    assert epochs == []


def test_backup_and_restore_before_the_controller_warns_and_cannot_resume(tmp_path):
    def session(crash=None):
        model = tiny_model(keras.optimizers.SGD(0.1))
        callbacks = [ScriptedLoss(TRACE_A_LOSSES),
                     keras.callbacks.BackupAndRestore(str(tmp_path / "b")),
                     TwoPhaseLR(regression_data(), 12, plateau_patience=2,
                                estimator=ScriptedEstimator(TRACE_A_EIGENVALUES))]
        if crash is not None:
            callbacks.append(Crash(crash))
        fit(model, callbacks, 12)

    with pytest.warns(UserWarning, match="written at the end of epoch 1 before TwoPhaseLR made its decision.*Place BackupAndRestore after TwoPhaseLR"):
        with pytest.raises(Interrupted):
            session(crash=3)
    with pytest.raises(ValueError, match="the checkpoint restored into the model continues after 2 epochs.*BackupAndRestore comes before TwoPhaseLR"):
        session()


def test_set_state_refuses_bad_fields():
    state = TwoPhaseController(12).get_state()
    for field, value, message in [
        ("lr_factor", -1, "`lr_factor` must be a positive finite number"),
        ("next_epoch", "5", "Received: next_epoch='5'"),
        ("decay_epochs", [1.5], "`decay_epochs` must be a list of integers"),
    ]:
        bad = dict(state, state=dict(state["state"], **{field: value}))
        with pytest.raises(ValueError, match=message):
            TwoPhaseController(12).set_state(bad)


def test_silently_accepted_inputs_are_refused():
    """Inputs found to be accepted without a word (issue 10, bad input)."""
    from keras_lrphase import GradualWarmup, LARS, top_hessian_eigenvalue

    with pytest.raises(ValueError, match="Received: target_lr=1e\\+300"):
        GradualWarmup(2, target_lr=1e300)
    for value in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="`learning_rate` must be"):
            LARS(learning_rate=value)
    with pytest.raises(ValueError, match="at least 1.18e-38"):
        TwoPhaseController(10, decay_factor=1e-320)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(loss="mse")
    x, y = regression_data()
    with pytest.raises(ValueError, match="not finite"):
        top_hessian_eigenvalue(model, x * 1e20, y * 1e20, seed=0)
    with pytest.raises(ValueError, match="`estimator` must be callable as"):
        TwoPhaseLR((x, y), estimator=lambda model, x, y: None)
    # A list of lists is one array, as in Keras' fit.
    result = top_hessian_eigenvalue(model, x.tolist(), y.tolist(), seed=0)
    assert np.isfinite(result.value)


def test_a_reducer_that_drops_keys_is_named():
    from keras_lrphase import MetricReducer

    class Forgetful(MetricReducer):
        def reduce_mean(self, values):
            return {}

    model = tiny_model(keras.optimizers.SGD(0.1))
    with pytest.raises(ValueError, match="`reducer` must return a dict with the keys it was given \\['loss'\\]"):
        fit(model, [TwoPhaseLR(regression_data(), reducer=Forgetful())], 2)
