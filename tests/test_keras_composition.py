"""The package's callbacks inside ordinary Keras programs: Keras' own
callbacks in the same fit, tf.data and PyDataset inputs, string losses,
mixed precision, and models saved and loaded in a fresh process.

Backend-neutral: the JAX-only and torch-only CI jobs run it too, without
the `tf.data` input and Keras' `TensorBoard` (both need TensorFlow)."""

import csv
import importlib.util
import math
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

import keras_lrphase as lrp
from keras_lrphase.backend import keras_compat

pytestmark = pytest.mark.backend_neutral
HAS_TENSORFLOW = importlib.util.find_spec("tensorflow") is not None

N, D, C = 96, 6, 3


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, D)).astype("float32")
    y = (x[:, 0] > 0).astype("int32") + (x[:, 1] > 0.5).astype("int32")
    return x, y


def classifier(optimizer):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(C, activation="softmax")])
    model.compile(optimizer, loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


class Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index):
        s = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[s], self.y[s]


@pytest.mark.parametrize("inputs", [
    "arrays", pytest.param("tf.data", marks=pytest.mark.tensorflow_backend),
    "PyDataset"])
def test_controllers_with_keras_callbacks_and_inputs(tmp_path, inputs):
    x, y = data()
    model = classifier(keras.optimizers.SGD(0.2, momentum=0.9))
    if inputs == "arrays":
        fit_args = dict(x=x, y=y, batch_size=16)
    elif inputs == "tf.data":
        import tensorflow as tf

        fit_args = dict(x=tf.data.Dataset.from_tensor_slices((x, y)).batch(16),
                        shuffle=False)
    else:
        fit_args = dict(x=Batches(x, y, 16))
    log = tmp_path / "log.csv"
    callbacks = [
        lrp.GradualWarmup(1),
        lrp.TwoPhaseLR((x, y), plateau_patience=1, momentum_correction=True),
        lrp.HessianMonitor((x, y), frequency=2),
        lrp.StageCheckpoint(str(tmp_path / "stages" / "s{stage}.keras")),
        keras.callbacks.CSVLogger(str(log)),
        # Keras' TensorBoard writes with tf.summary.
        *([keras.callbacks.TensorBoard(str(tmp_path / "tb"))]
          if HAS_TENSORFLOW else []),
        keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"), monitor="loss",
                                        save_best_only=True),
        keras.callbacks.ReduceLROnPlateau("loss", factor=0.5, patience=1),
        keras.callbacks.TerminateOnNaN(),
        lrp.AtomicBackupAndRestore(str(tmp_path / "backup")),
    ]
    # 8 epochs are short for this problem: where its loss plateaus (it
    # differs with the inputs' order and the backend) the schedule notes that
    # none was found by half of the budget, or that the phase switch falls
    # past it. The composition, not the plateau, is under test: those notes
    # are the only warnings the package may give here (its warnings name the
    # line that called `fit`, this file's).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        history = model.fit(epochs=8, verbose=0, callbacks=callbacks,
                            **fit_args)
    notes = ("TwoPhaseLR: half of the 8 epochs have run (epoch 4) and no loss "
             "plateau", "TwoPhaseController: loss plateau detected at epoch ")
    for w in caught:
        if w.filename == __file__:
            assert str(w.message).startswith(notes), w.message
    with open(log) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    for key in ("learning_rate", "lrphase_phase", "hessian_max_eigenvalue",
                "hessian_iterations"):
        assert all(key in row for row in rows), key
    # The monitor estimates at the end of every second epoch.
    assert np.isfinite(float(rows[1]["hessian_max_eigenvalue"]))
    if HAS_TENSORFLOW:
        assert os.listdir(tmp_path / "tb")  # TensorBoard wrote its events
    assert (tmp_path / "best.keras").exists()
    assert not (tmp_path / "backup").exists()
    assert isinstance(keras_compat.current_learning_rate_object(model.optimizer), keras.Variable)
    assert 0 < float(model.optimizer.learning_rate) <= 0.2 + 1e-7


def test_mixed_precision_and_a_string_loss(tmp_path):
    if keras.backend.backend() == "torch":
        pytest.skip("on torch AutoDecay reaches no stage within these 6 epochs "
                    "at lr 0.05 (known open: the setting needs tuning there)")
    x, y = data()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((D,)), keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(C, dtype="float32")])
        # At 0.05 the loss falls after the warmup epoch 0, which AutoDecay
        # ignores (at 0.5 it is flat from epoch 1 on: a stop, not a decay).
        model.compile(lrp.LARS(0.05, trust_coefficient=0.01), "sparse_categorical_crossentropy")
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        history = model.fit(x, y, batch_size=16, epochs=6, verbose=0, callbacks=[
            lrp.GradualWarmup(1), lrp.AutoDecay(window=2, tolerance=0.5,
                                                drop_threshold=0.99),
            lrp.HessianMonitor((x, y))])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert all(np.isfinite(history.history["hessian_max_eigenvalue"]))
    assert history.history["autodecay_stage"][-1] >= 1
    path = tmp_path / "model.keras"
    model.save(path)
    script = ("import sys, keras\n"
              "m = keras.models.load_model(sys.argv[1])\n"
              "print('OK', 'keras_lrphase' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", script, str(path)],
                         capture_output=True, text=True, timeout=300)
    # LARS is the package's optimizer: loading needs it to be importable,
    # and Keras imports nothing itself, so the error names it.
    assert out.returncode != 0 and "LARS" in out.stderr
    out = subprocess.run([sys.executable, "-c", "import keras_lrphase\n" + script,
                          str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["OK", "True"]
