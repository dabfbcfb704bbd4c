import csv
import math
import time

import keras
import numpy as np
import pytest

from keras_lrphase.training.epoch_recorder import COLUMNS
from keras_lrphase.training.epoch_recorder import EpochRecorder
from keras_lrphase.training.epoch_recorder import last_step_learning_rate

pytestmark = pytest.mark.backend_neutral


def _model(lr):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def test_recorder_rows_learning_rate_and_phase(tmp_path):
    path = str(tmp_path / "history.csv")
    # 8 samples, batch 2: 4 steps per epoch; the LR halves every 4 steps, so
    # the last step of epoch e (0-based) runs at 0.1 * 0.5 ** e.
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 4, 0.5, staircase=True)
    model = _model(schedule)
    x = np.random.default_rng(0).normal(size=(8, 2)).astype("float32")
    y = np.array([0, 1] * 4)
    recorder = EpochRecorder(path, phase_fn=lambda e, logs: "warmup" if e == 0 else "exploration")
    model.fit(x, y, batch_size=2, epochs=3, verbose=0, validation_data=(x, y),
              callbacks=[recorder])
    rows = EpochRecorder.read(path)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    np.testing.assert_allclose([r["learning_rate"] for r in rows], [0.1, 0.05, 0.025],
                               rtol=1e-6)
    assert [r["phase"] for r in rows] == ["warmup", "exploration", "exploration"]
    assert all(math.isnan(r["hessian_max_eigenvalue"]) for r in rows)
    assert all(0 < r["train_time"] <= r["epoch_time"] for r in rows)
    with open(path, newline="") as f:
        assert tuple(next(csv.reader(f))) == COLUMNS
    assert recorder.rows[2]["loss"] == rows[2]["loss"]


def test_recorder_prefers_logged_values(tmp_path):
    class Writes(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["learning_rate"] = 0.5
            logs["hessian_max_eigenvalue"] = 2.0 + epoch

    path = str(tmp_path / "h.csv")
    model = _model(0.1)
    model.fit(np.zeros((4, 2)), np.zeros(4), epochs=2, verbose=0,
              callbacks=[Writes(), EpochRecorder(path)])
    rows = EpochRecorder.read(path)
    assert [r["learning_rate"] for r in rows] == [0.5, 0.5]
    assert [r["hessian_max_eigenvalue"] for r in rows] == [2.0, 3.0]
    assert [r["phase"] for r in rows] == ["n/a", "n/a"]
    assert all(math.isnan(r["val_loss"]) for r in rows)  # no validation data


def test_last_step_learning_rate_of_float_and_schedule():
    opt = keras.optimizers.SGD(0.25)
    assert last_step_learning_rate(opt) == 0.25
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([2], [1.0, 0.1])
    opt = keras.optimizers.SGD(schedule)
    w = keras.Variable(np.ones(2, "float32"))
    values = []
    for _ in range(4):
        opt.apply([keras.ops.ones(2)], [w])
        values.append(last_step_learning_rate(opt))
    # Steps 0, 1, 2 use 1.0 (PiecewiseConstantDecay: step <= boundary), 3 uses 0.1.
    np.testing.assert_allclose(values, [1.0, 1.0, 1.0, 0.1], rtol=1e-6)


class _Sleeps(keras.callbacks.Callback):
    """Sleeps in every validation batch and at every epoch end."""

    def __init__(self, in_validation, at_epoch_end):
        super().__init__()
        self.in_validation, self.at_epoch_end = in_validation, at_epoch_end

    def on_test_batch_end(self, batch, logs=None):
        time.sleep(self.in_validation)

    def on_epoch_end(self, epoch, logs=None):
        time.sleep(self.at_epoch_end)


def test_recorder_splits_an_epoch_into_training_validation_and_the_rest(tmp_path):
    path = str(tmp_path / "history.csv")
    x = np.zeros((8, 2), "float32")
    y = np.zeros(8, "int32")
    # Two validation batches of 4: 0.2 s of validation; 0.3 s of epoch-end
    # work (an eigenvalue, say) before the recorder.
    _model(0.1).fit(x, y, batch_size=4, epochs=2, verbose=0,
                    validation_data=(x, y), validation_batch_size=4,
                    callbacks=[_Sleeps(0.1, 0.3), EpochRecorder(path)])
    for row in EpochRecorder.read(path):
        assert row["validation_time"] >= 0.2
        assert (row["train_time"] + row["validation_time"] + 0.3
                <= row["epoch_time"])
    _model(0.1).fit(x, y, epochs=1, verbose=0,
                    callbacks=[EpochRecorder(path)])
    assert math.isnan(EpochRecorder.read(path)[0]["validation_time"])


def test_recorder_resumes_a_history_written_before_the_validation_column(tmp_path):
    path = str(tmp_path / "history.csv")
    old = [c for c in COLUMNS if c != "validation_time"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(old)
        writer.writerow([1 if c == "epoch" else "n/a" if c == "phase" else 0.5
                         for c in old])
    model = _model(0.1)
    x = np.zeros((4, 2), "float32")
    model.fit(x, np.zeros(4, "int32"), epochs=2, initial_epoch=1, verbose=0,
              validation_data=(x, np.zeros(4, "int32")),
              callbacks=[EpochRecorder(path, resume=True)])
    rows = EpochRecorder.read(path)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0]["loss"] == 0.5 and math.isnan(rows[0]["validation_time"])
    assert rows[1]["validation_time"] > 0
    with open(path, newline="") as f:
        assert tuple(next(csv.reader(f))) == COLUMNS
