import json
import os
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest

from keras_lrphase.callbacks import GradualWarmup
from keras_lrphase.callbacks import TwoPhaseLR
from keras_lrphase.distributed.reduction import LocalReducer
from keras_lrphase.distributed.reduction import MetricReducer
from keras_lrphase.schedules.controlled_learning_rate import ControlledLearningRate
from scripted_training import PAPER_RULES
from scripted_training import TRACE_A
from scripted_training import TRACE_A_EIGENVALUES
from scripted_training import TRACE_A_FACTORS
from scripted_training import TRACE_A_LOSSES
from scripted_training import Crash
from scripted_training import EpochRecorder
from scripted_training import Interrupted
from scripted_training import ScriptedEstimator
from scripted_training import ScriptedLoss
from scripted_training import StepLearningRates
from scripted_training import regression_data
from scripted_training import tiny_model
from scripted_training import warmup_ramp
from scripted_training import warns_nothing_learned
from keras_lrphase.backend import keras_compat

pytestmark = pytest.mark.backend_neutral

F32 = np.float32

# Composition trace: epochs=8, warmup_epochs=2, plateau_patience=1. Epochs
# 0-1 ignored; best=1.0 at 2; no improvement at 3 -> plateau at 3, n=4,
# alpha=1 -> switch at 4 (h0=1, f0=1). Epoch 5: 2>1, 1.1>1 -> decay.
# Epoch 6: blocked (h0=0) -> h0=3, f0=1.2. Epoch 7: 4>3, 1.3>1.2 -> decay.
COMPOSE_LOSSES = [9.0, 9.0, 1.0, 1.1, 1.0, 1.1, 1.2, 1.3]
COMPOSE_EIGENVALUES = [1.0, 2.0, 3.0, 4.0]
COMPOSE_SCALES_PER_EPOCH = [1.0] * 6 + [0.5] * 2


def fit(model, callbacks, epochs, x=None, y=None, batch_size=4, **kwargs):
    if x is None:
        x, y = regression_data()
    return model.fit(
        x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0,
        callbacks=callbacks, **kwargs,
    )


def budget_differs(epochs):
    """Trace A's budget is 12 epochs: a `fit` that runs another number says
    so (the tests that cut the trace or run it in pieces)."""
    return pytest.warns(UserWarning, match=(
        "TwoPhaseLR: its epoch budget is epochs=12, but `fit` runs "
        f"epochs={epochs}\\. Pass the same budget"))


def no_plateau_by_half_of(epochs):
    """Trace A's plateau is at epoch 5 (from 1): half of an 8-epoch `fit`
    runs before it."""
    return pytest.warns(UserWarning, match=(
        f"TwoPhaseLR: half of the {epochs} epochs have run \\(epoch "
        f"{epochs // 2}\\) and no loss plateau has been detected"))


def flat_loss_learned_nothing():
    """A scripted flat loss plateaus at epoch 2 (from 1) at its first level."""
    return pytest.warns(UserWarning, match=(
        "TwoPhaseController: loss plateau detected at epoch 2 while the loss "
        "\\(best 1\\) is still within 10% of its level in the first epochs"))


def trace_a_callback(**kwargs):
    estimator = ScriptedEstimator(TRACE_A_EIGENVALUES)
    callback = TwoPhaseLR(
        regression_data(), TRACE_A["epochs"],
        plateau_patience=TRACE_A["plateau_patience"], estimator=estimator,
        **kwargs, **PAPER_RULES
    )
    return callback, estimator


def test_exact_learning_rate_in_every_epoch(capsys):
    model = tiny_model(keras.optimizers.SGD(0.1))
    callback, estimator = trace_a_callback(verbose=1)
    history = fit(model, [ScriptedLoss(TRACE_A_LOSSES), callback], 12)
    h = history.history
    expected = [float(F32(0.1) * F32(f)) for f in TRACE_A_FACTORS]
    assert h["learning_rate"] == expected
    # The phase each epoch was trained in: the switch is at the end of
    # epoch 6, so epochs 7-11 are the convergence phase.
    assert h["lrphase_phase"] == [0] * 7 + [1] * 5
    # Every key at every epoch (CSVLogger fixes its columns at epoch 0).
    np.testing.assert_array_equal(
        h["hessian_max_eigenvalue"], [np.nan] * 6 + TRACE_A_EIGENVALUES
    )
    np.testing.assert_array_equal(
        h["hessian_iterations"], [np.nan] * 6 + [3, 4, 5, 6, 7, 8]
    )
    assert callback.controller.decay_epochs == [7, 9]
    # No Hessian work before the switch epoch; each estimate warm-starts
    # from the previous eigenvector.
    assert len(estimator.initial_vectors) == 6
    assert estimator.initial_vectors[0] is None
    assert [v[0][0] for v in estimator.initial_vectors[1:]] == [1, 2, 3, 4, 5]
    # After fit the optimizer holds a plain float variable carrying the
    # decays (0.1 x 0.25), settable like any Keras learning rate.
    assert isinstance(keras_compat.current_learning_rate_object(model.optimizer), keras.Variable)
    assert float(model.optimizer.learning_rate) == float(F32(0.025))
    controlled = ControlledLearningRate.install(model.optimizer)
    assert controlled.factor("two_phase_lr") == 0.25
    lines = [l for l in capsys.readouterr().out.splitlines() if "TwoPhaseLR" in l]
    assert lines == [
        "Epoch 7: TwoPhaseLR switching to the convergence phase (loss plateau "
        "at epoch 5, 2 extra epochs); h0=1, f0=0.72.",
        "Epoch 8: TwoPhaseLR decaying the learning rate by 0.5 (total factor "
        "0.5) (h=1.2 > h0=1, f=0.74 > f0=0.72).",
        "Epoch 10: TwoPhaseLR decaying the learning rate by 0.5 (total factor "
        "0.25) (h=1.6 > h0=1.5, f=0.77 > f0=0.76).",
    ]


def test_every_printed_decision_is_in_the_summary_numbered_as_printed(capsys):
    # Trace A cut at 10 epochs: the second decay is decided at the end of
    # the last epoch (index 9, printed "Epoch 10").
    model = tiny_model(keras.optimizers.SGD(0.1))
    callback, _ = trace_a_callback(verbose=1)
    with budget_differs(10):
        fit(model, [ScriptedLoss(TRACE_A_LOSSES), callback], 10)
    printed = [int(line.split(":")[0].split()[1])
               for line in capsys.readouterr().out.splitlines()
               if "TwoPhaseLR decaying" in line]
    assert printed == [8, 10]
    assert callback.decay_epochs == printed
    assert callback.summary() == {"decay_epochs": [8, 10],
                                  "plateau_epoch": 5,
                                  "exploration_epochs": 7}
    assert (callback.plateau_epoch, callback.switch_epoch) == (5, 7)
    # The controller itself speaks Keras' 0-based epoch indices.
    assert callback.controller.decay_epochs == [7, 9]


def test_decay_changes_the_training_itself():
    """The decayed LR reaches the update: plain SGD, one batch per epoch."""
    x, y = regression_data()
    model = tiny_model(keras.optimizers.SGD(0.1))
    weights = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, l: weights.append(model.get_weights())
    )
    callback, _ = trace_a_callback()
    fit(model, [ScriptedLoss(TRACE_A_LOSSES), callback, record], 12, batch_size=8)
    reference = tiny_model(keras.optimizers.SGD(0.1))
    w = [v.astype("float64") for v in reference.get_weights()]
    for epoch, factor in enumerate(TRACE_A_FACTORS):
        kernel, bias = w
        residual = x @ kernel + bias - y
        grad_k = 2 * x.T @ residual / len(x)
        grad_b = 2 * residual.mean(axis=0)
        lr = 0.1 * factor
        w = [kernel - lr * grad_k, bias - lr * grad_b]
        np.testing.assert_allclose(weights[epoch][0], w[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(weights[epoch][1], w[1], rtol=1e-5, atol=1e-6)


def test_composes_with_gradual_warmup_exact_per_step():
    model = tiny_model(keras.optimizers.SGD(0.1))
    steps = StepLearningRates()
    callback = TwoPhaseLR(
        regression_data(), 8, warmup_epochs=2, plateau_patience=1,
        estimator=ScriptedEstimator(COMPOSE_EIGENVALUES), **PAPER_RULES
    )
    history = fit(
        model,
        [GradualWarmup(2), ScriptedLoss(COMPOSE_LOSSES), callback, steps], 8,
    )
    # 8 samples / batch 4 = 2 steps per epoch; warmup 4 steps from 0.1/4.
    scales = np.repeat(COMPOSE_SCALES_PER_EPOCH, 2)
    expected = warmup_ramp(0.1, 16, 4, 0.25, scales)
    assert steps.rates == expected
    assert expected[:4] == [float(F32(0.1) * r) for r in F32([0.25, 0.4375, 0.625, 0.8125])]
    assert history.history["learning_rate"] == expected[1::2]
    assert callback.controller.decay_epochs == [5, 7]
    assert float(model.optimizer.learning_rate) == float(F32(0.1) * F32(0.25))


@pytest.mark.parametrize("warmup_first", [True, False])
def test_takes_the_warmup_length_of_the_gradual_warmup_in_the_same_fit(warmup_first):
    """`warmup_epochs` unset: GradualWarmup's 2 epochs, wherever it is listed."""
    model = tiny_model(keras.optimizers.SGD(0.1))
    steps = StepLearningRates()
    callback = TwoPhaseLR(
        regression_data(), 8, plateau_patience=1,
        estimator=ScriptedEstimator(COMPOSE_EIGENVALUES), **PAPER_RULES
    )
    warmup = [GradualWarmup(2)]
    others = [ScriptedLoss(COMPOSE_LOSSES), callback, steps]
    fit(model, warmup + others if warmup_first else others + warmup, 8)
    # The trace of the test above, which passes warmup_epochs=2: with 0 the
    # loss 9.0 of epoch 1 would be a plateau at epoch 1.
    assert callback.controller.warmup_epochs == 2
    assert callback.controller.decay_epochs == [5, 7]
    assert steps.rates == warmup_ramp(0.1, 16, 4, 0.25,
                                      np.repeat(COMPOSE_SCALES_PER_EPOCH, 2))


@pytest.mark.parametrize("given", [0, 3])
def test_a_warmup_length_that_contradicts_gradual_warmup_is_refused(given):
    begun = []
    record = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, l: begun.append(e))
    callback = TwoPhaseLR(regression_data(), warmup_epochs=given,
                          plateau_patience=1, estimator=ScriptedEstimator([1.0]))
    with pytest.raises(ValueError, match=(
            rf"Argument `warmup_epochs` of TwoPhaseLR must equal the "
            rf"`warmup_epochs` of the GradualWarmup in the same `fit` \(2\), or "
            rf"be left unset to take it. Received: warmup_epochs={given}")):
        fit(tiny_model(keras.optimizers.SGD(0.1)),
            [record, callback, GradualWarmup(2)], 8)
    assert begun == []
    # The same value is accepted.
    callback = TwoPhaseLR(regression_data(), warmup_epochs=2,
                          plateau_patience=1, estimator=ScriptedEstimator([1.0] * 8))
    fit(tiny_model(keras.optimizers.SGD(0.1)),
        [ScriptedLoss([1.0] * 3), GradualWarmup(2), callback], 3)
    assert callback.controller.warmup_epochs == 2


def test_composes_with_cosine_decay_restarts():
    schedule = keras.optimizers.schedules.CosineDecayRestarts(0.1, 6)
    model = tiny_model(keras.optimizers.SGD(schedule))
    steps = StepLearningRates()
    callback = TwoPhaseLR(
        regression_data(), 8, warmup_epochs=2, plateau_patience=1,
        estimator=ScriptedEstimator(COMPOSE_EIGENVALUES), **PAPER_RULES
    )
    history = fit(model, [ScriptedLoss(COMPOSE_LOSSES), callback, steps], 8)
    scales = np.repeat(COMPOSE_SCALES_PER_EPOCH, 2)
    base = [F32(keras.ops.convert_to_numpy(schedule(s))) for s in range(16)]
    expected = [float(b * F32(s)) for b, s in zip(base, scales)]
    np.testing.assert_allclose(steps.rates, expected, rtol=1e-6)
    np.testing.assert_allclose(
        history.history["learning_rate"], expected[1::2], rtol=1e-6
    )
    # The warm restart at step 6 (first period 6 steps) is kept.
    assert steps.rates[5] < steps.rates[6] == float(F32(0.1))
    # Inside fit the schedule was scaled in the train step; after fit the
    # optimizer has its schedule back, unscaled (a schedule cannot carry
    # the decays; the controller applies them again if it continues).
    assert keras_compat.current_learning_rate_object(model.optimizer) is schedule


def test_composes_with_lars():
    lars = pytest.importorskip("keras_lrphase.optimizers.lars")
    eta = 0.01
    optimizer = lars.LARS(0.1, momentum=0.0, trust_coefficient=eta)
    model = tiny_model(optimizer)
    kernels = []
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda e, l: kernels.append(model.get_weights()[0])
    )
    callback, _ = trace_a_callback()
    history = fit(
        model, [ScriptedLoss(TRACE_A_LOSSES), callback, record], 12,
        batch_size=8,
    )
    expected = [float(F32(0.1) * F32(f)) for f in TRACE_A_FACTORS]
    assert history.history["learning_rate"] == expected
    # LARS step on the kernel: ||dw|| = lr * eta * ||w|| (no weight decay).
    previous = tiny_model(keras.optimizers.SGD()).get_weights()[0]
    for epoch, kernel in enumerate(kernels):
        ratio = np.linalg.norm(kernel - previous) / np.linalg.norm(previous)
        np.testing.assert_allclose(ratio, expected[epoch] * eta, rtol=1e-4)
        previous = kernel


def test_resume_with_backup_and_restore_makes_identical_decisions(tmp_path):
    x, y = regression_data(samples=16)

    def session(backup, state_path, crash_at, rows):
        model = tiny_model(keras.optimizers.SGD(0.1, momentum=0.9))
        callback = TwoPhaseLR(
            (x, y), 12, plateau_patience=2, state_path=state_path,
            estimator=ScriptedEstimator(TRACE_A_EIGENVALUES), **PAPER_RULES
        )
        callbacks = [
            GradualWarmup(2), ScriptedLoss(TRACE_A_LOSSES), callback,
            EpochRecorder(rows), keras.callbacks.BackupAndRestore(backup),
        ]
        if crash_at is not None:
            callbacks.append(Crash(crash_at))
        try:
            fit(model, callbacks, 12, x=x, y=y)
        except Interrupted:
            return None, None
        return model, callback

    uninterrupted_rows = []
    reference, reference_callback = session(
        str(tmp_path / "b0"), str(tmp_path / "s0.json"), None,
        uninterrupted_rows,
    )
    rows = []
    backup, state_path = str(tmp_path / "b1"), str(tmp_path / "s1.json")
    # Interrupted during the warmup, before the plateau, during the
    # extension (plateau at 4, switch at 6) and in convergence right after
    # the decay at 7.
    for crash_at in (1, 3, 6, 8):
        assert session(backup, state_path, crash_at, rows) == (None, None)
        assert [r[0] for r in rows] == list(range(crash_at))
    model, callback = session(backup, state_path, None, rows)

    assert rows == uninterrupted_rows
    assert [r[1] for r in rows][2:] == [
        float(F32(0.1) * F32(f)) for f in TRACE_A_FACTORS
    ][2:]
    assert callback.controller.decay_epochs == [7, 9]
    assert callback.controller.state == reference_callback.controller.state
    for got, want in zip(model.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(
        model.optimizer.variables, reference.optimizer.variables
    ):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_state_file_is_json_with_the_eigenvector(tmp_path):
    path = tmp_path / "sub" / "state.json"
    model = tiny_model(keras.optimizers.SGD(0.1))
    callback, _ = trace_a_callback(state_path=path)
    with budget_differs(8), no_plateau_by_half_of(8):
        fit(model, [ScriptedLoss(TRACE_A_LOSSES), callback], 8)
    content = json.loads(path.read_text())
    assert content["version"] == 1 and content["callback"] == "two_phase_lr"
    # The last two epoch ends, so a checkpoint one epoch behind can resume.
    previous, latest = content["states"]
    assert (previous["next_epoch"], latest["next_epoch"]) == (7, 8)
    assert latest["controller"] == callback.controller.get_state()
    assert latest["controller"]["state"]["decay_epochs"] == [7]
    assert previous["controller"]["state"]["decay_epochs"] == []
    vector = latest["providers"]["hessian_max_eigenvalue"]["vector"]
    assert [e["shape"] for e in vector] == [[1], [2, 2]]
    assert [e["dtype"] for e in vector] == ["<f4", "<f4"]
    assert latest["learning_rate"]["factors"] == {"two_phase_lr": 0.5}
    assert os.listdir(path.parent) == ["state.json"]  # no temp file left
    saved = path.read_text()
    # Rolled back one epoch: the state the file kept for epoch 7.
    third, _ = trace_a_callback(state_path=path)
    with budget_differs(8):
        fit(tiny_model(keras.optimizers.SGD(0.1)),
            [ScriptedLoss(TRACE_A_LOSSES), third], 8, initial_epoch=7)
    assert third.controller.decay_epochs == [7]
    path.write_text(saved)
    # A fresh callback reads it back, eigenvector included.
    again, estimator = trace_a_callback(state_path=path)
    model2 = tiny_model(keras.optimizers.SGD(0.1))
    with budget_differs(9):
        fit(model2, [ScriptedLoss(TRACE_A_LOSSES), again], 9, initial_epoch=8)
    assert again.controller.decay_epochs == [7]
    assert estimator.initial_vectors[0][0][0] == 2.0  # warm start restored
    assert again.controller.state.h0 == 1.5  # epoch 8, from the 3rd value


def test_a_new_run_at_epoch_zero_replaces_a_stale_state_file(tmp_path):
    path = tmp_path / "state.json"
    callback, _ = trace_a_callback(state_path=path)
    with budget_differs(3):
        fit(tiny_model(keras.optimizers.SGD(0.1)), [ScriptedLoss(TRACE_A_LOSSES), callback], 3)
    stale, _ = trace_a_callback(state_path=path)
    with budget_differs(2), pytest.warns(UserWarning, match="starts a new run at epoch 0; the state in state_path=.*next epoch 3"):
        fit(tiny_model(keras.optimizers.SGD(0.1)), [ScriptedLoss(TRACE_A_LOSSES), stale], 2)
    states = json.loads(path.read_text())["states"]
    assert [p["next_epoch"] for p in states] == [1, 2]


def test_resuming_at_an_epoch_no_state_expects_is_an_error(tmp_path):
    path = tmp_path / "state.json"
    callback, _ = trace_a_callback(state_path=path)
    with budget_differs(3):
        fit(tiny_model(keras.optimizers.SGD(0.1)), [ScriptedLoss(TRACE_A_LOSSES), callback], 3)
    other, _ = trace_a_callback(state_path=path)
    with pytest.raises(ValueError, match=r"starts after 5 completed epochs \(initial_epoch=5\), but no saved state of TwoPhaseLR continues from there: state_path=.* holds the states after epochs \[2, 3\]\.$"), budget_differs(6):
        fit(tiny_model(keras.optimizers.SGD(0.1)), [other], 6, initial_epoch=5)
    fresh, _ = trace_a_callback()
    with pytest.raises(ValueError, match="continues from there: nothing was restored; resume with keras_lrphase.AtomicBackupAndRestore"), budget_differs(6):
        fit(tiny_model(keras.optimizers.SGD(0.1)), [fresh], 6, initial_epoch=5)
    path.write_text("{not json")
    damaged, _ = trace_a_callback(state_path=path)
    with pytest.raises(ValueError, match="`state_path` must name a TwoPhaseLR state file.*cannot be read"), budget_differs(6):
        fit(tiny_model(keras.optimizers.SGD(0.1)), [damaged], 6, initial_epoch=5)


def test_continues_across_fit_calls_and_restarts_at_epoch_zero():
    model = tiny_model(keras.optimizers.SGD(0.1))
    callback, _ = trace_a_callback()
    script = ScriptedLoss(TRACE_A_LOSSES)
    with budget_differs(8), no_plateau_by_half_of(8):
        fit(model, [script, callback], 8)
    assert callback.controller.decay_epochs == [7]
    history = fit(model, [script, callback], 12, initial_epoch=8)
    assert callback.controller.decay_epochs == [7, 9]
    assert history.history["learning_rate"] == [
        float(F32(0.1) * F32(f)) for f in TRACE_A_FACTORS[8:]
    ]
    with pytest.raises(ValueError, match="has seen 12 epochs"), budget_differs(14):
        fit(model, [script, callback], 14, initial_epoch=13)
    # A new run from epoch 0 starts the controller afresh; the optimizer's
    # float learning rate keeps its value, as after ReduceLROnPlateau.
    with budget_differs(2):
        history = fit(model, [script, callback], 2)
    assert history.history["learning_rate"] == [float(F32(0.025))] * 2
    assert callback.controller.next_epoch == 2
    assert callback.controller.lr_factor == 1.0


def test_reducer_is_the_decision_input():
    class OtherWorker(MetricReducer):
        """Averages the eigenvalue with a scripted second worker's."""

        def __init__(self, others):
            self.others = list(others)
            self.calls = []

        def reduce_mean(self, values):
            self.calls.append(dict(values))
            out = dict(values)
            if "hessian_max_eigenvalue" in out:
                other = self.others.pop(0)
                out["hessian_max_eigenvalue"] = (out["hessian_max_eigenvalue"] + other) / 2
            return out

    reducer = OtherWorker([5.0, 3.0, 3.0])
    model = tiny_model(keras.optimizers.SGD(0.1))
    # Local eigenvalues 1.0, 1.2, 1.3 at epochs 6-8 would decay at 7 (1.2 >
    # 1.0) and block 8. Agreed: 3.0, 2.1, 2.15: no decay at 7 (2.1 < 3.0),
    # decay at 8 (2.15 > 2.1 and loss 0.76 > 0.74).
    callback = TwoPhaseLR(
        regression_data(), 12, plateau_patience=2, reducer=reducer,
        estimator=ScriptedEstimator([1.0, 1.2, 1.3]), **PAPER_RULES
    )
    with budget_differs(9):
        history = fit(model, [ScriptedLoss(TRACE_A_LOSSES), callback], 9)
    assert reducer.calls[0] == {"loss": 1.0}
    assert reducer.calls[6] == {"loss": 0.72, "hessian_max_eigenvalue": 1.0}
    assert history.history["hessian_max_eigenvalue"][6:] == pytest.approx([3.0, 2.1, 2.15])
    assert callback.controller.decay_epochs == [8]
    assert LocalReducer().reduce_mean({"loss": np.float32(0.5)}) == {"loss": 0.5}


def test_a_monitor_missing_from_the_first_epoch_logs_is_an_error():
    model = tiny_model(keras.optimizers.SGD(0.1))
    callback = TwoPhaseLR(
        regression_data(), 4, plateau_patience=1, monitor="val_loss",
        estimator=ScriptedEstimator([1.0]), **PAPER_RULES
    )
    with pytest.raises(ValueError, match=r"`val_loss` is not in the epoch logs \(available: \['loss'\]\).*Received: monitor='val_loss'"):
        fit(model, [callback], 4)
    assert callback.controller.next_epoch == 0


def test_a_monitor_missing_later_warns_and_makes_no_decision():
    class DropLoss(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:
                del logs["loss"]

    model = tiny_model(keras.optimizers.SGD(0.1))
    callback = TwoPhaseLR(
        regression_data(), 6, plateau_patience=1,
        estimator=ScriptedEstimator([1.0] * 4), **PAPER_RULES
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(model, [ScriptedLoss([1.0, 0.5, 0.4, 0.3]), DropLoss(), callback], 4)
    messages = [str(w.message) for w in caught if w.category is UserWarning]
    assert sum("`loss` is not in the epoch logs" in m for m in messages) == 1
    assert sum("non-finite value at epoch 3" in m for m in messages) == 1
    assert callback.controller.state.best == 0.3  # epoch 2 changed nothing
    assert callback.controller.state.wait == 0


@pytest.mark.tensorflow_backend
def test_hessian_batch_is_the_first_batch_of_a_dataset():
    import tensorflow as tf

    x, y = regression_data()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(3)
    estimator = ScriptedEstimator([1.0, 1.0])
    callback = TwoPhaseLR(dataset, 4, plateau_patience=1, estimator=estimator, **PAPER_RULES)
    with flat_loss_learned_nothing():
        fit(tiny_model(keras.optimizers.SGD(0.1)), [ScriptedLoss([1.0] * 4), callback], 4)
    # Plateau at epoch 1 -> switch at 2: two estimates, on the same batch.
    assert len(estimator.batches) == 2
    for bx, by in estimator.batches:
        np.testing.assert_array_equal(bx, x[:3])
        np.testing.assert_array_equal(by, y[:3])


def test_real_estimator_on_a_linear_model():
    """Hessian of MSE w.r.t. a Dense layer: 2/(N K) [X 1]^T [X 1] per output."""
    x, y = regression_data(samples=8, features=2, seed=3)
    model = tiny_model(keras.optimizers.SGD(0.01))
    callback = TwoPhaseLR(
        (x, y), 4, plateau_patience=1,
        eigen_kwargs={"method": "lanczos", "tolerance": 1e-6}, **PAPER_RULES
    )
    with flat_loss_learned_nothing():
        history = fit(model, [ScriptedLoss([1.0] * 4), callback], 4)
    a = np.concatenate([x, np.ones((8, 1), "float32")], axis=1).astype("float64")
    expected = np.linalg.eigvalsh(2.0 / 8 * a.T @ a)[-1]
    # Plateau at epoch 1 -> switch at 2: estimates at epochs 2 and 3.
    np.testing.assert_allclose(
        history.history["hessian_max_eigenvalue"], [np.nan] * 2 + [expected] * 2,
        rtol=1e-5,
    )
    assert callback.controller.decay_epochs == []


def test_no_per_batch_hooks():
    for cls in (TwoPhaseLR, GradualWarmup):
        for name in (
            "on_batch_begin", "on_batch_end",
            "on_train_batch_begin", "on_train_batch_end",
        ):
            assert getattr(cls, name) is getattr(keras.callbacks.Callback, name), (
                cls, name,
            )
            assert name not in cls.__dict__


def test_the_optimizer_keeps_its_float_learning_rate_variable():
    model = tiny_model(keras.optimizers.SGD(0.1, momentum=0.9))
    fit(model, [], 1)  # builds the train function with the plain LR
    optimizer = model.optimizer
    names = [v.name for v in optimizer.variables]
    assert names[:2] == ["iteration", "learning_rate"]
    callback, _ = trace_a_callback()
    callback.set_model(model)
    # On a float learning rate, a controller changes nothing in the
    # optimizer: its variable stays the learning rate (and is checkpointed).
    assert isinstance(keras_compat.current_learning_rate_object(optimizer), keras.Variable)
    assert [v.name for v in optimizer.variables] == names
    plain_step = model.train_function
    assert plain_step is not None
    # A warmup ramp needs the in-graph wrapper, in a fit that starts before
    # the ramp's end only; this one starts at step 2, the end of a ramp of 2
    # steps: the optimizer and Keras' own train step stay as they are.
    warmup = GradualWarmup(1)
    warmup.set_model(model)
    assert keras_compat.current_learning_rate_object(optimizer) is optimizer.variables[1]
    steps = StepLearningRates()
    callback.controller.step(0, 1.0)  # so that it continues at epoch 1
    with budget_differs(3), warns_nothing_learned(epoch=3):  # a flat loss
        history = fit(model, [warmup, ScriptedLoss([1.0] * 3), callback, steps],
                      3, initial_epoch=1)
    # Epoch 1 and 2 of the optimizer's life: steps 2-5; the factor is 1
    # (the controller's new run).
    assert steps.rates == [float(F32(0.1))] * 4
    assert history.history["learning_rate"] == [float(F32(0.1))] * 2
    assert keras_compat.current_learning_rate_object(optimizer) is optimizer.variables[1]
    assert model.train_function is plain_step  # not traced again


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(monitor=""), ValueError, "`monitor` must be a non-empty string"),
        (dict(verbose=2), ValueError, "`verbose` must be 0 or 1. Received: verbose=2"),
        (dict(eigen_kwargs=[1]), ValueError, "`eigen_kwargs` must be a dict"),
        (dict(eigen_kwargs={"layer": "d"}), ValueError, "as the `layer` argument"),
        (dict(estimator=3), ValueError, "`estimator` must be callable"),
        (dict(estimator=lambda *a, **k: None, layer="dense"), ValueError, "cannot be combined"),
        (dict(reducer=object()), ValueError, "`reducer` must be a"),
        (dict(state_path=3), ValueError, "`state_path` must be a path"),
        (dict(decay_factor=1.5), ValueError, "Received: decay_factor=1.5"),
        (dict(epochs=0), ValueError, "Received: epochs=0"),
        (dict(hessian_data=None), ValueError, "Received: hessian_data of type NoneType"),
        (dict(hessian_data=np.zeros((4, 2))), ValueError, "hessian_data of type ndarray"),
    ],
)
def test_argument_validation(kwargs, error, message):
    kwargs = dict(kwargs)
    data = kwargs.pop("hessian_data", regression_data())
    epochs = kwargs.pop("epochs", 10)
    with pytest.raises(error, match=message):
        TwoPhaseLR(data, epochs, **kwargs, **PAPER_RULES)


def test_uncompiled_model_is_an_error():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    callback, _ = trace_a_callback()
    with pytest.raises(ValueError, match="needs a compiled model"):
        callback.set_model(model)


JAX_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import keras, numpy as np
    sys.path.insert(0, sys.argv[1])
    from keras_lrphase.callbacks import GradualWarmup, TwoPhaseLR
    from scripted_training import (PAPER_RULES, ScriptedEstimator,
        ScriptedLoss, StepLearningRates, regression_data, tiny_model)
    model = tiny_model(keras.optimizers.SGD(0.1))
    initial = [w.tolist() for w in model.get_weights()]
    steps = StepLearningRates()
    callback = TwoPhaseLR(regression_data(), 8, warmup_epochs=2,
        plateau_patience=1, estimator=ScriptedEstimator(%r), **PAPER_RULES)
    x, y = regression_data()
    history = model.fit(x, y, batch_size=4, epochs=8, shuffle=False,
        verbose=0, callbacks=[GradualWarmup(2), ScriptedLoss(%r), callback,
        steps])
    print(json.dumps({
        "backend": keras.backend.backend(),
        "steps": steps.rates,
        "learning_rate": history.history["learning_rate"],
        "decay_epochs": callback.controller.decay_epochs,
        "final": float(model.optimizer.learning_rate),
        "initial": initial,
        "weights": [w.tolist() for w in model.get_weights()],
    }))
    """
) % (COMPOSE_EIGENVALUES, COMPOSE_LOSSES)


@pytest.mark.jax
def test_jax_backend_composition(tmp_path):
    pytest.importorskip("jax")
    script = tmp_path / "run.py"
    script.write_text(JAX_SCRIPT)
    env = dict(os.environ, KERAS_BACKEND="jax")
    out = subprocess.run(
        [sys.executable, str(script), os.path.dirname(__file__)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["backend"] == "jax"
    scales = np.repeat(COMPOSE_SCALES_PER_EPOCH, 2)
    expected = warmup_ramp(0.1, 16, 4, 0.25, scales)
    np.testing.assert_allclose(result["steps"], expected, rtol=1e-7)
    np.testing.assert_allclose(result["learning_rate"], expected[1::2], rtol=1e-7)
    assert result["decay_epochs"] == [5, 7]
    assert result["final"] == pytest.approx(0.025, rel=1e-7)
    # The jitted train step used those rates (scale and ramp are optimizer
    # variables, not constants frozen into the trace): NumPy SGD reference.
    x, y = regression_data()
    kernel, bias = (np.array(w, "float64") for w in result["initial"])
    for step, lr in enumerate(expected):
        batch = slice(4 * (step % 2), 4 * (step % 2) + 4)
        residual = x[batch] @ kernel + bias - y[batch]
        kernel = kernel - lr * 2 * x[batch].T @ residual / 4
        bias = bias - lr * 2 * residual.mean(axis=0)
    np.testing.assert_allclose(result["weights"][0], kernel, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result["weights"][1], bias, rtol=1e-5, atol=1e-6)


def test_bad_eigen_kwargs_fail_at_construction():
    x = np.zeros((4, 2), "float32")
    y = np.zeros((4,), "int32")
    with pytest.raises(ValueError, match="method='svd'"):
        TwoPhaseLR((x, y), 10, eigen_kwargs={"method": "svd"}, **PAPER_RULES)
    with pytest.raises(ValueError, match="max_iterations=0"):
        TwoPhaseLR((x, y), 10, eigen_kwargs={"max_iterations": 0}, **PAPER_RULES)
