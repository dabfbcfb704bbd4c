"""A training run that a test kills at random instants and resumes.

Usage: python kill_resume_worker.py WORKDIR [package|keras]

Trains a small classifier for EPOCHS epochs with GradualWarmup, TwoPhaseLR
(scripted losses, the real Hessian estimator), StageCheckpoint, momentum
correction and the package's BackupAndRestore (or, with `keras`, Keras'
own with double_checkpoint=True) in WORKDIR. Writes
WORKDIR/ready once imports are done, appends one JSON line per finished
epoch to WORKDIR/epochs.jsonl (the learning rate of every step and the
decisions), and WORKDIR/result.json at the end.
"""

import json
import os
import sys

import keras
import numpy as np

import keras_lrphase as lrp

EPOCHS = 12
LOSSES = [2.0, 1.5, 1.2, 1.1, 1.1, 1.12, 1.15, 1.18, 1.21, 1.24, 1.27, 1.3]


class ScriptedLoss(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        logs["loss"] = LOSSES[epoch]


class Journal(keras.callbacks.Callback):
    """Appends each epoch's step learning rates and decisions to a file."""

    def __init__(self, path, two_phase):
        super().__init__()
        self.path, self.two_phase, self.rates = path, two_phase, []

    def on_epoch_begin(self, epoch, logs=None):
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(
            self.model.optimizer.learning_rate)))

    def on_epoch_end(self, epoch, logs=None):
        line = {"epoch": epoch, "rates": self.rates,
                "decays": self.two_phase.controller.decay_epochs,
                "eigenvalue": logs.get("hessian_max_eigenvalue")}
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")


def main(workdir, backup="package"):
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 16)).astype("float32")
    y = (x[:, :4].sum(axis=1) > 0).astype("int32") + (x[:, 4] > 0)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(3)])
    model.compile(keras.optimizers.SGD(0.2, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # decay_threshold=0: the noise-aware rule (and its state) with any rise
    # counting, so that the 12 epochs see decays.
    two_phase = lrp.TwoPhaseLR((x[:128], y[:128]), plateau_patience=1,
                               decay_threshold=0.0,
                               momentum_correction=True,
                               state_path=os.path.join(workdir, "state", "two_phase.json"),
                               eigen_kwargs={"method": "lanczos", "max_iterations": 30})
    callbacks = [
        lrp.GradualWarmup(2), ScriptedLoss(), two_phase,
        lrp.StageCheckpoint(os.path.join(workdir, "stages", "stage{stage}.keras")),
        Journal(os.path.join(workdir, "epochs.jsonl"), two_phase),
        (lrp.BackupAndRestore(os.path.join(workdir, "backup"))
         if backup == "package" else
         keras.callbacks.BackupAndRestore(os.path.join(workdir, "backup"),
                                          double_checkpoint=True)),
    ]
    open(os.path.join(workdir, "ready"), "w").close()
    model.fit(x, y, batch_size=16, epochs=EPOCHS, shuffle=False, verbose=0,
              callbacks=callbacks)
    result = {
        "weights": [w.tolist() for w in model.get_weights()],
        "optimizer": [np.asarray(v).tolist() for v in model.optimizer.variables],
        "controller": two_phase.controller.get_state(),
        "learning_rate": float(model.optimizer.learning_rate),
    }
    with open(os.path.join(workdir, "result.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
