"""The package's BackupAndRestore: its arguments, and what it resumes."""

import json
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_lrphase import BackupAndRestore
from keras_lrphase import TwoPhaseLR
from scripted_training import TRACE_A_EIGENVALUES
from scripted_training import TRACE_A_LOSSES
from scripted_training import Crash
from scripted_training import Interrupted
from scripted_training import ScriptedEstimator
from scripted_training import ScriptedLoss
from scripted_training import regression_data
from scripted_training import tiny_model

pytestmark = pytest.mark.backend_neutral

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "shuffle_resume_worker.py")


def fit(model, callbacks, epochs, **kwargs):
    x, y = regression_data()
    return model.fit(x, y, batch_size=4, epochs=epochs, shuffle=False,
                     verbose=0, callbacks=callbacks, **kwargs)


def test_a_backup_dir_that_is_a_file_is_refused_at_construction(tmp_path):
    # Found after the first epoch before (when the checkpoint is written).
    notes = tmp_path / "notes.txt"
    notes.write_text("a file, not a folder")
    with pytest.raises(ValueError, match=r"Argument `backup_dir` must be a "
                       r"folder: .*notes.txt' is a file. Received: backup_dir="):
        BackupAndRestore(str(notes))
    with pytest.raises(ValueError, match=r"`backup_dir` must be a folder: "
                       r".*notes.txt' is a file"):
        BackupAndRestore(str(notes / "backup"))


@pytest.mark.parametrize("value", ["x", 1, None])
def test_delete_checkpoint_must_be_a_bool(tmp_path, value):
    with pytest.raises(ValueError, match=rf"Argument `delete_checkpoint` must be "
                       rf"True or False. Received: delete_checkpoint={value!r}"):
        BackupAndRestore(str(tmp_path / "backup"), delete_checkpoint=value)


def two_phase():
    return TwoPhaseLR(regression_data(), 12, plateau_patience=2,
                      estimator=ScriptedEstimator(TRACE_A_EIGENVALUES))


MISSING = ("it is missing: Keras' BackupAndRestore writes the weights and then "
           "that file, and a run killed in between leaves the weights without it.")
CUT_SHORT = ("a run killed while Keras' BackupAndRestore wrote that file leaves "
             "it empty or cut short.")


@pytest.mark.parametrize("content, cause", [
    (None, MISSING), ("", CUT_SHORT), ('{"epoch": ', CUT_SHORT)],
    ids=["missing", "empty", "cut_short"])
def test_an_unreadable_training_metadata_names_the_file_and_the_repair(
        tmp_path, content, cause):
    # A kill while Keras' own BackupAndRestore writes training_metadata.json
    # leaves it empty (or cut short), a kill just before leaves none; the
    # package's callback, which resumes Keras' folders too, reads it then:
    # a bare JSONDecodeError or FileNotFoundError before.
    backup = tmp_path / "backup"
    with pytest.raises(Interrupted):
        fit(tiny_model(keras.optimizers.SGD(0.1)),
            [ScriptedLoss(TRACE_A_LOSSES), two_phase(),
             keras.callbacks.BackupAndRestore(str(backup)), Crash(3)], 12)
    metadata = backup / "training_metadata.json"
    assert json.loads(metadata.read_text())["epoch"] == 3
    if content is None:
        metadata.unlink()
    else:
        metadata.write_text(content)
    begun = []
    record = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, l: begun.append(e))
    with pytest.raises(ValueError) as error:
        fit(tiny_model(keras.optimizers.SGD(0.1)),
            [ScriptedLoss(TRACE_A_LOSSES), two_phase(), record,
             BackupAndRestore(str(backup))], 12)
    assert str(error.value) == (
        f"BackupAndRestore cannot read {str(metadata)!r}, the epoch of the "
        f"checkpoint in backup_dir={str(backup)!r}: {cause} The state of the "
        "package's callbacks in the checkpoint says it was written at the end "
        'of epoch 3: write {"epoch": 3, "batch": 0} into that file to resume, '
        "or delete the folder to start a new run.")
    assert begun == []
    metadata.write_text('{"epoch": 3, "batch": 0}')  # the repair
    history = fit(tiny_model(keras.optimizers.SGD(0.1)),
                  [ScriptedLoss(TRACE_A_LOSSES), two_phase(), record,
                   BackupAndRestore(str(backup))], 12)
    assert begun == list(range(3, 12))
    assert len(history.history["loss"]) == 9


def run_shuffled(workdir, backend, kill_at):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.run(
        [sys.executable, WORKER, str(workdir), str(kill_at), "package"],
        env=env, capture_output=True, text=True, timeout=600)
    return process.returncode, process.stderr[-3000:]


@pytest.mark.parametrize("backend", [
    pytest.param("jax", marks=pytest.mark.jax),
    # The same on the other backends (torch's default generator, and
    # Python's for the PyDataset on TensorFlow), kept out of the default
    # suite for time.
    pytest.param("torch", marks=[pytest.mark.torch, pytest.mark.slow]),
    pytest.param("tensorflow", marks=pytest.mark.slow),
])
def test_a_shuffled_run_killed_and_resumed_ends_as_the_uninterrupted_one(
        tmp_path, backend):
    # fit(shuffle=True) draws each epoch's order from global generators that
    # Keras' BackupAndRestore does not save: a resumed run trained on the
    # orders of the first epochs again. Two `fit`s (NumPy arrays, then a
    # PyDataset), each killed (SIGKILL) once at its third epoch.
    pytest.importorskip(backend)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    reference.mkdir()
    killed.mkdir()
    code, err = run_shuffled(reference, backend, -1)
    assert code == 0, err
    codes = [run_shuffled(killed, backend, 2)[0] for _ in range(3)]
    assert codes == [-signal.SIGKILL, -signal.SIGKILL, 0]
    want = json.loads((reference / "result.json").read_text())
    got = json.loads((killed / "result.json").read_text())
    for data in ("arrays", "dataset"):
        for a, b in zip(got[data], want[data]):
            np.testing.assert_array_equal(np.array(a), np.array(b), err_msg=data)
