"""The resume rules of the package's stateful callbacks (ResumableCallback)."""

import json

import keras
import pytest

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


def session(backup, crash=None, state_path=None, record=None):
    """Trace A's program with Keras' own BackupAndRestore after TwoPhaseLR."""
    model = tiny_model(keras.optimizers.SGD(0.1))
    two_phase = TwoPhaseLR(regression_data(), 12, plateau_patience=2,
                           state_path=state_path,
                           estimator=ScriptedEstimator(TRACE_A_EIGENVALUES))
    callbacks = [ScriptedLoss(TRACE_A_LOSSES), two_phase,
                 keras.callbacks.BackupAndRestore(str(backup))]
    if record is not None:
        callbacks.insert(0, record)
    if crash is not None:
        callbacks.append(Crash(crash))
    x, y = regression_data()
    model.fit(x, y, batch_size=4, epochs=12, shuffle=False, verbose=0,
              callbacks=callbacks)
    return two_phase


def test_a_kill_between_keras_two_writes_at_the_first_epoch_is_refused(tmp_path):
    # Killed after Keras' BackupAndRestore wrote the weights of the end of
    # the first epoch, before its first training_metadata.json: the next fit
    # starts at epoch 0 on weights trained one epoch. It started a new run
    # silently (the controller reset); it is refused like the same kill at
    # a later epoch, with the repair.
    backup = tmp_path / "backup"
    with pytest.raises(Interrupted):
        session(backup, crash=1)
    (backup / "training_metadata.json").unlink()
    begun = []
    record = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, l: begun.append(e))
    with pytest.raises(ValueError) as error:
        session(backup, record=record)
    assert str(error.value) == (
        "TwoPhaseLR: this `fit` starts after 0 completed epochs "
        "(initial_epoch=0), but no saved state of TwoPhaseLR continues from "
        "there: the checkpoint restored into the model continues after 1 "
        "epoch (its weights are from the end of epoch 1, but "
        "BackupAndRestore's training_metadata.json is missing: Keras writes "
        "the weights and that file one after the other, and the run was "
        'killed in between; write {"epoch": 1, "batch": 0} into that file to '
        "resume, or delete the backup folder to start a new run).")
    assert begun == [0]  # refused at the first epoch start, before any step
    (backup / "training_metadata.json").write_text('{"epoch": 1, "batch": 0}')
    resumed = session(backup)
    reference = session(tmp_path / "reference")
    assert resumed.controller.state == reference.controller.state


def test_the_same_kill_at_a_later_epoch_names_the_repair(tmp_path):
    backup = tmp_path / "backup"
    with pytest.raises(Interrupted):
        session(backup, crash=4)
    (backup / "training_metadata.json").write_text('{"epoch": 3, "batch": 0}')
    with pytest.raises(ValueError) as error:
        session(backup)
    assert str(error.value) == (
        "TwoPhaseLR: this `fit` starts after 3 completed epochs "
        "(initial_epoch=3), but no saved state of TwoPhaseLR continues from "
        "there: the checkpoint restored into the model continues after 4 "
        "epochs (its weights are from the end of epoch 4, but "
        "BackupAndRestore's training_metadata.json says 3: Keras writes the "
        "weights and that file one after the other, and the run was killed "
        'in between; write {"epoch": 4, "batch": 0} into that file to '
        "resume, or delete the backup folder to start a new run).")


def test_a_new_run_on_weights_loaded_before_fit_is_still_a_new_run(tmp_path):
    # Loading a checkpoint that holds the controller's state, then training
    # a new run from epoch 0 (fine-tuning): not an interrupted run.
    first = tiny_model(keras.optimizers.SGD(0.1))
    x, y = regression_data()
    first.fit(x, y, batch_size=4, epochs=3, shuffle=False, verbose=0,
              callbacks=[ScriptedLoss(TRACE_A_LOSSES), TwoPhaseLR(
                  regression_data(), plateau_patience=2,
                  estimator=ScriptedEstimator(TRACE_A_EIGENVALUES))])
    first.save_weights(str(tmp_path / "m.weights.h5"))
    model = tiny_model(keras.optimizers.SGD(0.1))
    model.load_weights(str(tmp_path / "m.weights.h5"))
    two_phase = TwoPhaseLR(regression_data(), plateau_patience=2,
                           estimator=ScriptedEstimator(TRACE_A_EIGENVALUES))
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0,
              callbacks=[ScriptedLoss(TRACE_A_LOSSES), two_phase])
    assert two_phase.controller.next_epoch == 2


def test_the_state_path_copy_keeps_the_state_it_resumed_from(tmp_path):
    # "The previous epoch's state kept beside it": after a resume from the
    # checkpoint, the copy dropped the state it resumed from.
    backup, path = tmp_path / "backup", tmp_path / "state.json"
    with pytest.raises(Interrupted):
        session(backup, crash=4, state_path=path)
    with pytest.raises(Interrupted):
        session(backup, crash=5, state_path=path)
    states = json.loads(path.read_text())["states"]
    assert [p["next_epoch"] for p in states] == [4, 5]
    # The state it resumed from is the one the checkpoint held.
    reference_path = tmp_path / "reference.json"
    with pytest.raises(Interrupted):
        session(tmp_path / "reference", crash=5, state_path=reference_path)
    assert states == json.loads(reference_path.read_text())["states"]
