import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_lrphase import AutoDecay
from keras_lrphase import GradualWarmup
from keras_lrphase import MomentumCorrection
from keras_lrphase import StageCheckpoint
from keras_lrphase import TwoPhaseLR
from scripted_training import PAPER_RULES
from scripted_training import TRACE_A_EIGENVALUES
from scripted_training import TRACE_A_LOSSES
from scripted_training import Crash
from scripted_training import Interrupted
from scripted_training import ScriptedEstimator
from scripted_training import ScriptedLoss
from scripted_training import regression_data
from scripted_training import tiny_model
from test_auto_decay_controller import TRACE_B
from test_auto_decay_controller import TRACE_B_LOSSES
from test_auto_decay_controller import warns_of_trace_b_nan

pytestmark = pytest.mark.backend_neutral

F32 = np.float32


def fit(model, callbacks, epochs, batch_size=4, **kwargs):
    x, y = regression_data()
    return model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False,
                     verbose=0, callbacks=callbacks, **kwargs)


def sidecars(folder):
    return [json.loads((folder / name).read_text())
            for name in sorted(os.listdir(folder)) if name.endswith(".json")]


@pytest.mark.parametrize("stage_first", [True, False])
def test_autodecay_stages_and_sidecars(tmp_path, stage_first):
    model = tiny_model(keras.optimizers.SGD(0.1))
    stages = StageCheckpoint(str(tmp_path / "s{stage}-e{epoch}.keras"))
    autodecay = AutoDecay(**TRACE_B)
    ordered = [stages, autodecay] if stage_first else [autodecay, stages]
    with warns_of_trace_b_nan():
        fit(model, [ScriptedLoss(TRACE_B_LOSSES)] + ordered, 20)
    # Decay at the end of epoch 6 (1-based), stop at the end of epoch 8.
    assert sorted(os.listdir(tmp_path)) == [
        "s1-e6.json", "s1-e6.keras", "s2-e8.json", "s2-e8.keras"]
    first, second = sidecars(tmp_path)
    assert first == {
        "stage": 1, "first_epoch": 1, "last_epoch": 6,
        "learning_rate": float(F32(0.1)), "logs": first["logs"],
        "ended_by": ["autodecay:decay"], "path": str(tmp_path / "s1-e6.keras"),
    }
    assert first["logs"]["loss"] == 1.0
    assert second["stage"] == 2 and (second["first_epoch"], second["last_epoch"]) == (7, 8)
    assert second["ended_by"] == ["end of training"]
    assert second["learning_rate"] == float(F32(float(F32(0.1)) * 0.1))
    assert stages.stages == [first, second]
    # The saved model is the model at the end of the stage.
    saved = keras.models.load_model(tmp_path / "s2-e8.keras")
    for got, want in zip(saved.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_two_phase_decays_end_stages(tmp_path):
    model = tiny_model(keras.optimizers.SGD(0.1))
    stages = StageCheckpoint(str(tmp_path / "stage{stage}.weights.h5"),
                             save_weights_only=True)
    two_phase = TwoPhaseLR(regression_data(), 12, plateau_patience=2,
                           estimator=ScriptedEstimator(TRACE_A_EIGENVALUES), **PAPER_RULES)
    fit(model, [ScriptedLoss(TRACE_A_LOSSES), two_phase, stages], 12)
    # Trace A decays at the ends of epochs 8 and 10 (1-based).
    assert [(s["first_epoch"], s["last_epoch"], s["ended_by"]) for s in stages.stages] == [
        (1, 8, ["two_phase_lr:decay"]), (9, 10, ["two_phase_lr:decay"]),
        (11, 12, ["end of training"])]
    assert sorted(os.listdir(tmp_path))[:2] == ["stage1.json", "stage1.weights.h5"]


def test_step_schedule_and_reduce_lr_on_plateau_end_stages(tmp_path):
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([3, 5], [0.1, 0.01, 0.001])
    model = tiny_model(keras.optimizers.SGD(schedule))
    stages = StageCheckpoint(str(tmp_path / "a" / "stage{stage}.keras"))
    fit(model, [stages], 5)  # 2 steps per epoch: steps 4 and 6 are new rates
    assert [(s["last_epoch"], s["ended_by"], round(s["learning_rate"], 6))
            for s in stages.stages] == [
        (2, ["learning rate drop"], 0.1), (3, ["learning rate drop"], 0.01),
        (5, ["end of training"], 0.001)]
    model = tiny_model(keras.optimizers.SGD(0.1))
    stages = StageCheckpoint(str(tmp_path / "b" / "stage{stage}.keras"))
    plateau = keras.callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=0,
                                                min_delta=1.0)
    fit(model, [ScriptedLoss([1.0] * 4), stages, plateau], 4)
    assert [s["last_epoch"] for s in stages.stages] == [2, 3, 4]


def test_warmup_and_smooth_schedules_are_not_stage_ends(tmp_path):
    schedule = keras.optimizers.schedules.CosineDecay(0.1, 12)
    model = tiny_model(keras.optimizers.SGD(schedule))
    stages = StageCheckpoint(str(tmp_path / "stage{stage}.keras"))
    fit(model, [GradualWarmup(2), stages], 6)
    assert [(s["first_epoch"], s["last_epoch"]) for s in stages.stages] == [(1, 6)]


def test_a_stage_saved_during_warmup_loads_without_the_package(tmp_path):
    model = tiny_model(keras.optimizers.SGD(0.1))
    stages = StageCheckpoint(str(tmp_path / "stage{stage}.keras"))
    # TwoPhaseLR takes GradualWarmup's 5 epochs, more than the fit's 3.
    with pytest.warns(UserWarning, match=r"`warmup_epochs=5` is not below the "
                      r"budget `epochs=3`"):
        fit(model, [GradualWarmup(5), ScriptedLoss([1.0, 1.0, 1.1]),
                    TwoPhaseLR(regression_data(), plateau_patience=1,
                               extra_epochs_fraction=0.0,
                               estimator=ScriptedEstimator([1.0, 2.0]), **PAPER_RULES),
                    stages], 3)
    # The end of training, epoch 3 (1-based), is in the ramp: saved in it.
    assert [(s["last_epoch"], s["ended_by"]) for s in stages.stages] == [
        (3, ["end of training"])]
    script = tmp_path / "load.py"
    script.write_text(
        "import sys, keras\n"
        "m = keras.models.load_model(sys.argv[1])\n"
        "print('OK', type(m.optimizer.learning_rate).__name__, "
        "'keras_lrphase' in sys.modules)\n")
    out = subprocess.run([sys.executable, str(script), str(tmp_path / "stage1.keras")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-3:] == ["OK", "Variable", "False"]


def test_resumes_with_backup_and_restore(tmp_path):
    def session(folder, crash=None):
        model = tiny_model(keras.optimizers.SGD(0.1))
        stages = StageCheckpoint(str(tmp_path / folder / "stage{stage}.keras"))
        callbacks = [ScriptedLoss(TRACE_B_LOSSES), AutoDecay(**TRACE_B), stages,
                     keras.callbacks.BackupAndRestore(str(tmp_path / (folder + "-b")))]
        if crash is not None:
            callbacks.append(Crash(crash))
        try:
            fit(model, callbacks, 20)
        except Interrupted:
            return None
        return stages

    with warns_of_trace_b_nan():
        reference = session("reference")
    with warns_of_trace_b_nan():
        assert session("resumed", crash=6) is None  # killed after the decay
    resumed = session("resumed")
    strip = [{k: v for k, v in s.items() if k != "path"} for s in reference.stages]
    assert [{k: v for k, v in s.items() if k != "path"} for s in resumed.stages] == strip
    assert sorted(os.listdir(tmp_path / "resumed")) == sorted(os.listdir(tmp_path / "reference"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(filepath=3), "`filepath` must be a path"),
        (dict(filepath="m.h5"), "`filepath` must end in '.keras'"),
        (dict(filepath="m.keras", save_weights_only=True), "must end in '.weights.h5'"),
        (dict(filepath="m{stage.keras"), "must be a valid format string"),
        (dict(filepath="m.keras", save_weights_only=1), "`save_weights_only` must be True or False"),
    ],
)
def test_argument_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StageCheckpoint(**kwargs)


def test_a_log_key_missing_from_the_logs_names_the_filepath(tmp_path):
    model = tiny_model(keras.optimizers.SGD(0.1))
    stages = StageCheckpoint(str(tmp_path / "m{stage}-{val_loss}.keras"))
    with pytest.raises(ValueError, match="`filepath` names 'val_loss'.*available: \\['loss'"):
        fit(model, [stages], 1)


def test_a_run_killed_after_its_last_epoch_ends_as_it_would_have(tmp_path):
    """Resumed into a fit with no epoch left: the state is still restored."""
    def session(stages_dir):
        model = tiny_model(keras.optimizers.SGD(0.1))
        two_phase = TwoPhaseLR(regression_data(), 12, plateau_patience=2,
                               estimator=ScriptedEstimator(TRACE_A_EIGENVALUES), **PAPER_RULES)
        stages = StageCheckpoint(str(tmp_path / stages_dir / "stage{stage}.keras"))
        backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"),
                                                  delete_checkpoint=False)
        history = fit(model, [ScriptedLoss(TRACE_A_LOSSES), two_phase, stages, backup], 12)
        return model, two_phase, stages, history

    model, two_phase, stages, _ = session("first")
    # As if killed after the last epoch, before the checkpoint was deleted:
    # the next fit starts at epoch 12 and runs no epoch.
    again, two_phase_again, stages_again, history = session("second")
    assert history.history == {}
    assert two_phase_again.controller.state == two_phase.controller.state
    final = [{k: v for k, v in s.items() if k != "path"} for s in stages.stages]
    assert [{k: v for k, v in s.items() if k != "path"}
            for s in stages_again.stages] == final
    # Only the last stage is saved again (the others were saved before).
    assert sorted(os.listdir(tmp_path / "second")) == ["stage3.json", "stage3.keras"]


# == steps of a schedule anywhere in an epoch ==========================
STEPS_PER_EPOCH = 22
EPOCHS = 8
PLACEMENTS = {
    # boundaries of PiecewiseConstantDecay, whose lower value starts one
    # step after the boundary: at the epoch start (66, 132), one step
    # into the epoch (67, 133), two steps into it, and 11 steps into it.
    "one before": [3 * 22 - 1, 6 * 22 - 1],
    "at": [3 * 22, 6 * 22],
    "one after": [3 * 22 + 1, 6 * 22 + 1],
    "inside": [3 * 22 + 10, 6 * 22 + 10],
}
VALUES = [0.1, 0.01, 0.001]


def schedule_rate(boundaries, step):
    """PiecewiseConstantDecay's value at raw step `step`, as float32."""
    index = sum(step > b for b in boundaries)
    return F32(VALUES[index])


def velocity_reference(boundaries, momentum=0.9):
    """SGD's velocity for a gradient of 1 at every step, with the correction.

    At each epoch start s after the first, the velocity is multiplied by
    lr(s) / lr(s - 1) and, for a step of the schedule by r at step k inside
    the epoch before, by r / (r + m**(s - k) * (1 - r)). Returns the
    velocity at each epoch start (after the correction) and end.
    """
    v, starts, ends = F32(0.0), [], []
    for epoch in range(EPOCHS):
        s = epoch * STEPS_PER_EPOCH
        if epoch:
            lr = [float(schedule_rate(boundaries, j)) for j in range(s + 1)]
            ratio = lr[s] / lr[s - 1]
            inside = [k for k in range(s - STEPS_PER_EPOCH + 1, s)
                      if lr[k] < lr[k - 1]]
            if inside:
                k = inside[0]
                r = lr[k] / lr[k - 1]
                ratio *= r / (r + momentum ** (s - k) * (1.0 - r))
            v = F32(v * F32(ratio))
        starts.append(v)
        for j in range(s, s + STEPS_PER_EPOCH):
            v = F32(-F32(1.0) * schedule_rate(boundaries, j) + v * F32(momentum))
        ends.append(v)
    return starts, ends


@pytest.mark.parametrize("placement", sorted(PLACEMENTS))
def test_a_schedule_step_anywhere_in_an_epoch_ends_a_stage_and_rescales_the_velocity(
        tmp_path, placement):
    """22 steps per epoch; the lower rates start in epochs 4 and 7 (from 1)."""
    boundaries = PLACEMENTS[placement]
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, VALUES)
    keras.utils.set_random_seed(0)
    # A loss whose gradient is 1 at every step: mean |w x - y| with
    # x = 1 and y far below w.
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(
        1, use_bias=False, kernel_initializer="ones")])
    model.compile(keras.optimizers.SGD(schedule, momentum=0.9), "mae")
    x = np.ones((STEPS_PER_EPOCH, 1), "float32")
    y = np.full((STEPS_PER_EPOCH, 1), -1e4, "float32")

    def velocity():
        return F32(keras.ops.convert_to_numpy(model.optimizer.momentums[0])[0, 0])

    starts, ends = [], []
    record = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda e, l: starts.append(velocity() if e else F32(0.0)),
        on_epoch_end=lambda e, l: ends.append(velocity()))
    stages = StageCheckpoint(str(tmp_path / "stage{stage}.keras"))
    model.fit(x, y, batch_size=1, epochs=EPOCHS, shuffle=False, verbose=0,
              callbacks=[MomentumCorrection(), stages, record])
    assert [(s["first_epoch"], s["last_epoch"], s["ended_by"], s["learning_rate"])
            for s in stages.stages] == [
        (1, 3, ["learning rate drop"], float(F32(0.1))),
        (4, 6, ["learning rate drop"], float(F32(0.01))),
        (7, 8, ["end of training"], float(F32(0.001)))]
    want_starts, want_ends = velocity_reference(boundaries)
    np.testing.assert_allclose(starts[1:], want_starts[1:], rtol=2e-6)
    np.testing.assert_allclose(ends, want_ends, rtol=2e-6)
    # The correction at the start of epoch 5 (from 1) for a step at step k
    # of epoch 4 is the one Goyal et al.'s correction at step k would have
    # made: the velocity is then close to the new steady state -0.01 / 0.1
    # (the velocity before k was within 0.9**66 of -0.1 / 0.1).
    if placement != "one before":
        assert starts[4] == pytest.approx(-0.1, rel=2e-3)
        assert abs(ends[3] - -0.1) > 0.01  # not yet corrected at the end


def test_the_stage_model_holds_the_learning_rate_of_its_stage(tmp_path):
    """A decay at the end of a stage is not in the model saved for it."""
    model = tiny_model(keras.optimizers.SGD(0.05))
    stages = StageCheckpoint(str(tmp_path / "stage{stage}.keras"))
    with warns_of_trace_b_nan():
        fit(model, [ScriptedLoss(TRACE_B_LOSSES), AutoDecay(**TRACE_B), stages],
            20)
    # AutoDecay decays by 0.1 at the end of epoch 6 and stops after epoch 8.
    decayed = F32(float(F32(0.05)) * 0.1)
    assert [s["learning_rate"] for s in stages.stages] == [
        float(F32(0.05)), float(decayed)]
    for stage, rate in zip(stages.stages, (F32(0.05), decayed)):
        saved = keras.models.load_model(stage["path"])
        assert float(saved.optimizer.learning_rate) == float(rate)
    # The optimizer goes on with its own, decayed learning rate.
    assert float(model.optimizer.learning_rate) == float(decayed)

def test_a_field_missing_from_the_logs_stops_before_a_second_epoch(tmp_path):
    # The first stage is saved at its end, here the end of training: the
    # fields are checked against the logs of the first epoch instead.
    begun = []
    record = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, l: begun.append(e))
    stages = StageCheckpoint(str(tmp_path / "s{stage}-{foo}.keras"))
    with pytest.raises(ValueError, match=r"`filepath` names 'foo' which is not in "
                       r"the epoch logs \(available: \['loss'\]\)"):
        fit(tiny_model(keras.optimizers.SGD(0.1)), [record, stages], 4)
    assert begun == [0]
    assert not os.listdir(tmp_path)
    # A format that no log value takes (they are floats) fails at once.
    with pytest.raises(ValueError, match=r"`filepath` must be a valid format "
                       r"string \(Unknown format code 'd'"):
        StageCheckpoint(str(tmp_path / "s{stage}-{loss:d}.keras"))


def test_a_filepath_below_a_regular_file_is_refused_at_construction(tmp_path):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    for filepath in (tmp_path / "notes.txt" / "s{stage}.keras",
                     tmp_path / "notes.txt" / "deeper" / "s{stage}.keras"):
        with pytest.raises(ValueError, match=r"`filepath` must be in a folder: "
                           r".*notes.txt' is a file.*Received: filepath="):
            StageCheckpoint(str(filepath))


def test_a_filepath_without_the_stage_is_refused(tmp_path):
    # Every stage would overwrite the previous stage's file.
    with pytest.raises(ValueError, match=r"`filepath` must contain `\{stage\}` or "
                       r"`\{epoch\}`.*Received: filepath=.*model-\{loss:.2f\}.keras"):
        StageCheckpoint(str(tmp_path / "model-{loss:.2f}.keras"))
    StageCheckpoint(str(tmp_path / "model-{epoch:03d}.keras"))  # one file per stage
