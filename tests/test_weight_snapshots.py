"""`WeightSnapshots`: exact copies of the weights, also across a resume."""

import os
import pathlib

import keras
import numpy as np
import pytest

from keras_lrphase.callbacks.backup_and_restore import AtomicBackupAndRestore
from keras_lrphase.callbacks.weight_snapshots import WeightSnapshots

pytestmark = pytest.mark.backend_neutral


def _model(compiled=True):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(8, activation="relu"),
        keras.layers.BatchNormalization(),
        keras.layers.Dense(3),
    ])
    if not compiled:
        return model
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    return x, (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0).astype("int32")


def _loaded(path):
    model = _model(compiled=False)
    model.load_weights(path)
    return model.get_weights()


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b))


class _Record(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.weights = {}

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch + 1] = self.model.get_weights()


class _Crash(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


def test_snapshots_are_the_initial_weights_and_those_after_the_epoch(tmp_path):
    model = _model()
    initial = model.get_weights()
    record = _Record()
    snapshots = WeightSnapshots(str(tmp_path), [3, 0, 2])
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=4, verbose=0, shuffle=False,
              callbacks=[snapshots, record])
    assert sorted(os.listdir(tmp_path)) == [
        "epoch0.weights.h5", "epoch2.weights.h5", "epoch3.weights.h5"]
    assert snapshots.paths == {e: str(tmp_path / f"epoch{e}.weights.h5")
                               for e in (0, 2, 3)}
    # Bit for bit: the initialisation, and the weights (BatchNormalization
    # statistics included) at the end of epochs 2 and 3.
    assert _same(_loaded(snapshots.paths[0]), initial)
    assert _same(_loaded(snapshots.paths[2]), record.weights[2])
    assert _same(_loaded(snapshots.paths[3]), record.weights[3])
    assert not _same(record.weights[2], record.weights[3])


def test_a_resumed_fit_keeps_the_snapshots_of_the_uninterrupted_one(tmp_path):
    x, y = _data()
    whole = WeightSnapshots(str(tmp_path / "whole"), [0, 1, 3])
    _model().fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False,
                 callbacks=[whole])
    folder, backup = str(tmp_path / "cut"), str(tmp_path / "backup")
    # A stale snapshot of a future epoch is removed when the run starts.
    os.makedirs(folder)
    stale = os.path.join(folder, "epoch3.weights.h5")
    pathlib.Path(stale).write_text("not a snapshot")
    with pytest.raises(KeyboardInterrupt):
        _model().fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False,
                     callbacks=[AtomicBackupAndRestore(backup),
                                WeightSnapshots(folder, [0, 1, 3]), _Crash()])
    assert sorted(os.listdir(folder)) == ["epoch0.weights.h5",
                                          "epoch1.weights.h5"]
    # Resumed after epoch 1: BackupAndRestore (placed first) has restored
    # the checkpoint's weights before the snapshot callback sees them.
    resumed = WeightSnapshots(folder, [0, 1, 3])
    _model().fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False,
                 callbacks=[AtomicBackupAndRestore(backup), resumed])
    assert sorted(os.listdir(folder)) == [
        "epoch0.weights.h5", "epoch1.weights.h5", "epoch3.weights.h5"]
    for epoch in (0, 1, 3):
        assert _same(_loaded(resumed.paths[epoch]), _loaded(whole.paths[epoch]))


@pytest.mark.parametrize("kwargs, message", [
    (dict(folder="", epochs=[0]), "folder=''"),
    (dict(folder="f", epochs=[]), "epochs=[]"),
    (dict(folder="f", epochs=[1, -1]), "epochs=[1, -1]"),
    (dict(folder="f", epochs=[True]), "epochs=[True]"),
    (dict(folder="f", epochs="0"), "epochs='0'"),
    (dict(folder="f", epochs=[0], model="m"), "model='m'"),
])
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=None) as info:
        WeightSnapshots(**kwargs)
    assert message in str(info.value) and "Argument `" in str(info.value)
