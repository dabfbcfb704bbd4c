"""A run with shuffled batches that kills itself once and is resumed.

Usage: python shuffle_resume_worker.py WORKDIR KILL_AT_EPOCH [package|keras]

Trains a small regression model for EPOCHS epochs with `shuffle=True` on
NumPy arrays, then for EPOCHS more on a shuffled `keras.utils.PyDataset`,
each `fit` with the package's BackupAndRestore (or Keras' own), whose
checkpoint is kept at the end. At the start of its epoch KILL_AT_EPOCH
(counted from the `fit`'s first; -1: never) each `fit` kills its own
process (SIGKILL: no clean-up runs), once: run it until
WORKDIR/result.json exists (three times). The result holds the weights at
the end of each `fit`.
"""

import json
import os
import signal
import sys

import keras
import numpy as np

import keras_lrphase as lrp

EPOCHS = 4


class Batches(keras.utils.PyDataset):
    """The same samples as a PyDataset, shuffled by Keras each epoch."""

    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return len(self.x) // self.batch_size

    def __getitem__(self, index):
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[part], self.y[part]


class KillAt(keras.callbacks.Callback):
    """Kills the process at the start of `epoch`, unless `marker` exists."""

    def __init__(self, epoch, marker):
        super().__init__()
        self.epoch, self.marker = epoch, marker

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)


def backup(workdir, kind, name):
    folder = os.path.join(workdir, name)
    # Kept at the end: a run that resumes the second `fit` restores the
    # first one's end from it instead of training it again.
    if kind == "package":
        return lrp.BackupAndRestore(folder, delete_checkpoint=False)
    return keras.callbacks.BackupAndRestore(folder, delete_checkpoint=False)


def main(workdir, kill_at, kind="package"):
    kill_at = int(kill_at)
    marker = os.path.join(workdir, "killed-{}")
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x @ rng.normal(size=(4, 1)) + 0.1 * rng.normal(size=(64, 1))).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "mse")
    model.fit(x, y, batch_size=8, epochs=EPOCHS, shuffle=True, verbose=0,
              callbacks=[backup(workdir, kind, "arrays"),
                         KillAt(kill_at, marker.format("arrays"))])
    results = {"arrays": [w.tolist() for w in model.get_weights()]}
    model.fit(Batches(x, y, 8), epochs=2 * EPOCHS, initial_epoch=EPOCHS,
              shuffle=True, verbose=0,
              callbacks=[backup(workdir, kind, "dataset"),
                         KillAt(-1 if kill_at < 0 else EPOCHS + kill_at,
                                marker.format("dataset"))])
    results["dataset"] = [w.tolist() for w in model.get_weights()]
    with open(os.path.join(workdir, "result.json"), "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
