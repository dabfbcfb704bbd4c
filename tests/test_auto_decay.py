import math

import keras
import numpy as np
import pytest

from keras_lrphase import AutoDecay
from keras_lrphase import GradualWarmup
from scripted_training import Crash
from scripted_training import EpochRecorder
from scripted_training import Interrupted
from scripted_training import ScriptedLoss
from scripted_training import StepLearningRates
from scripted_training import regression_data
from scripted_training import tiny_model
from test_auto_decay_controller import TRACE_B
from test_auto_decay_controller import TRACE_B_LOSSES
from test_auto_decay_controller import TRACE_B_SMOOTHED
from keras_lrphase.backend import keras_compat
from test_auto_decay_controller import warns_of_trace_b_nan

pytestmark = pytest.mark.backend_neutral

F32 = np.float32
NAN = math.nan


def fit(model, callbacks, epochs, batch_size=4, **kwargs):
    x, y = regression_data()
    return model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False,
                     verbose=0, callbacks=callbacks, **kwargs)


def trace_b_callback(**kwargs):
    return AutoDecay(**TRACE_B, **kwargs)


def test_exact_learning_rate_per_epoch_and_the_stop_epoch(capsys):
    model = tiny_model(keras.optimizers.SGD(0.1))
    callback = trace_b_callback(verbose=1)
    steps = StepLearningRates()
    with warns_of_trace_b_nan():
        history = fit(model, [ScriptedLoss(TRACE_B_LOSSES), callback, steps], 20)
    h = history.history
    # Decay at the end of epoch 5, stop at the end of epoch 7: 8 epochs.
    assert len(h["loss"]) == 8
    # The decay multiplies the float variable in place (in float64, stored
    # as float32), as ReduceLROnPlateau does.
    lr = [float(F32(0.1))] * 6 + [float(F32(float(F32(0.1)) * 0.1))] * 2
    assert h["learning_rate"] == lr
    assert steps.rates == list(np.repeat(lr, 2))
    np.testing.assert_allclose(
        h["autodecay_smoothed_loss"],
        [NAN, 2.0, 4 / 3, NAN, 8 / 7, 16 / 15, 0.5, 7 / 15], rtol=1e-6)
    assert h["autodecay_stage"] == [0] * 6 + [1] * 2
    assert callback.controller.stop_epoch == 7
    lines = [l for l in capsys.readouterr().out.splitlines() if "AutoDecay" in l]
    assert lines == [
        "Epoch 6: AutoDecay: stage 0 is stable (smoothed loss 1.067, 0.533 of "
        "its first value 2); decaying the learning rate by 0.1.",
        "Epoch 8: AutoDecay: stage 1 is stable without a significant drop "
        "(smoothed loss 0.4667, 0.933 of its first value); stopping training.",
    ]
    assert TRACE_B_SMOOTHED[5] == pytest.approx(16 / 15)


def test_decay_changes_the_training_itself():
    x, y = regression_data()
    model = tiny_model(keras.optimizers.SGD(0.1))
    weights = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, l: weights.append(model.get_weights()))
    with warns_of_trace_b_nan():
        fit(model, [ScriptedLoss(TRACE_B_LOSSES), trace_b_callback(), record],
            20, batch_size=8)
    w = [v.astype("float64") for v in tiny_model(keras.optimizers.SGD()).get_weights()]
    for epoch in range(8):
        lr = 0.1 if epoch < 6 else 0.01
        kernel, bias = w
        residual = x @ kernel + bias - y
        w = [kernel - lr * 2 * x.T @ residual / len(x),
             bias - lr * 2 * residual.mean(axis=0)]
        np.testing.assert_allclose(weights[epoch][0], w[0], rtol=1e-5, atol=1e-6)


def test_min_lr_clamps_the_decay():
    model = tiny_model(keras.optimizers.SGD(0.1))
    with warns_of_trace_b_nan():
        history = fit(model, [ScriptedLoss(TRACE_B_LOSSES),
                              trace_b_callback(min_lr=0.05)], 20)
    assert history.history["learning_rate"][-1] == float(F32(0.05))


def test_composes_with_warmup_and_a_schedule():
    schedule = keras.optimizers.schedules.CosineDecay(0.1, 100)
    model = tiny_model(keras.optimizers.SGD(schedule))
    steps = StepLearningRates()
    with warns_of_trace_b_nan():
        fit(model, [GradualWarmup(1), ScriptedLoss(TRACE_B_LOSSES),
                    trace_b_callback(), steps], 20)
    base = [float(keras.ops.convert_to_numpy(schedule(s))) for s in range(16)]
    ramp = [0.5, 0.75] + [1.0] * 14
    factor = [1.0] * 12 + [0.1] * 4
    np.testing.assert_allclose(
        steps.rates, [b * r * f for b, r, f in zip(base, ramp, factor)], rtol=1e-6)
    # Unscaled after fit.
    assert keras_compat.current_learning_rate_object(model.optimizer) is schedule


def test_takes_the_warmup_length_of_the_gradual_warmup_in_the_same_fit():
    trace = {k: v for k, v in TRACE_B.items() if k != "warmup_epochs"}  # 1
    callback = AutoDecay(**trace)
    model = tiny_model(keras.optimizers.SGD(0.1))
    with warns_of_trace_b_nan():
        fit(model, [ScriptedLoss(TRACE_B_LOSSES), callback, GradualWarmup(1)], 20)
    assert callback.controller.warmup_epochs == 1
    # TRACE_B's decisions (with 0 warmup epochs the loss 9.0 of epoch 0
    # would enter the smoothed loss).
    assert callback.controller.decay_epochs == [5]
    assert callback.controller.stop_epoch == 7
    # A new run without a GradualWarmup has none.
    fit(model, [ScriptedLoss([1.0] * 2), callback], 2)
    assert callback.controller.warmup_epochs == 0
    with pytest.raises(ValueError, match=(
            r"Argument `warmup_epochs` of AutoDecay must equal the `warmup_epochs` "
            r"of the GradualWarmup in the same `fit` \(1\), or be left unset "
            r"to take it. Received: warmup_epochs=2")):
        fit(model, [GradualWarmup(1), AutoDecay(**trace, warmup_epochs=2)], 2)


@pytest.mark.parametrize("crash_at", [2, 4, 6, 7])
def test_resume_with_backup_and_restore_is_exact(tmp_path, crash_at):
    """No state_path: the state rides in BackupAndRestore's checkpoint."""
    def session(rows, crash=None):
        model = tiny_model(keras.optimizers.SGD(0.1, momentum=0.9))
        callbacks = [ScriptedLoss(TRACE_B_LOSSES), trace_b_callback(),
                     EpochRecorder(rows),
                     keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))]
        if crash is not None:
            callbacks.append(Crash(crash))
        try:
            fit(model, callbacks, 20)
        except Interrupted:
            return None
        return model

    reference_rows = []
    with warns_of_trace_b_nan():
        reference = session(reference_rows)  # deletes its backup at the end
    rows = []
    # Epoch 4 runs once, before or after the crash, and warns there.
    with warns_of_trace_b_nan():
        assert session(rows, crash=crash_at) is None
        model = session(rows)
    assert rows == reference_rows
    for got, want in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(model.optimizer.variables, reference.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_a_monitor_missing_from_the_logs_stops_before_a_second_epoch():
    model = tiny_model(keras.optimizers.SGD(0.1))
    begun = []
    record = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, l: begun.append(e))
    with pytest.raises(ValueError, match=r"`val_loss` is not in the epoch logs "
                       r"\(available: \['loss'\]\).*Received: monitor='val_loss'"):
        fit(model, [record, AutoDecay(monitor="val_loss")], 5)
    assert begun == [0]
