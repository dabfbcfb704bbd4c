import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_lrphase import AutoDecay
from keras_lrphase import GradualWarmup
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
    fit(model, [GradualWarmup(5), ScriptedLoss([1.0, 1.0, 1.1]),
                TwoPhaseLR(regression_data(), plateau_patience=1,
                           extra_epochs_fraction=0.0,
                           estimator=ScriptedEstimator([1.0, 2.0]), **PAPER_RULES), stages], 3)
    # Decay at the end of epoch 3 (1-based), the last: saved in the warmup.
    assert [(s["last_epoch"], s["ended_by"]) for s in stages.stages] == [
        (3, ["two_phase_lr:decay"])]
    script = tmp_path / "load.py"
    script.write_text(
        "import sys, keras\n"
        "m = keras.models.load_model(sys.argv[1])\n"
        "print('OK', type(m.optimizer._learning_rate).__name__, "
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

    reference = session("reference")
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
