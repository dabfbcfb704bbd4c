"""Copies of the weights at the initialisation and at given epoch ends."""

import os

import keras

from keras_lrphase._validation import fail
from keras_lrphase.backend import keras_compat

_PARTIAL = ".partial.weights.h5"


class WeightSnapshots(keras.callbacks.Callback):
    """Saves the model's weights before training and after given epochs.

    Use it to compare a network with itself at two moments of training, as
    the Heuristics paper does with SVCCA (`layer_similarity`) to see which
    layers warmup protects: the network at initialisation against the same
    network at the end of warmup (Figure 5). Epoch `0` is the
    initialisation (the weights before the first step); epoch `N >= 1` is
    the end of the `N`-th epoch. Each is written to
    `folder/epoch{N}.weights.h5` (`model.save_weights`: every weight,
    batch-normalisation statistics included), through a temporary file and
    a rename, so a file that exists is complete; load it with
    `model.load_weights(path)` into a model of the same architecture.

    Resume. With `BackupAndRestore` (anywhere in `callbacks`), a resumed
    `fit` keeps the snapshots of the epochs already done and writes the
    later ones: the initial weights are held back in a temporary file at
    `on_train_begin` and kept only when the first epoch of the `fit` is
    epoch 0 (a fresh run), since after a restore the model holds the
    checkpoint's weights. Snapshot files of epochs this `fit` has not yet
    reached are deleted when it starts, so the folder never mixes runs:
    a file exists for every snapshot epoch the current run has passed.

    Distillation: when the model being fit is a
    `keras.distillation.Distiller`, the student's weights are saved.

    Args:
        folder: String. Folder of the snapshot files (created).
        epochs: Sequence of ints >= 0. The epochs after which to save; `0`:
            the initialisation.
        model: `keras.Model` or None. The model whose weights are saved.
            Defaults to `None`: the model being fit (a `Distiller`'s
            student).

    Attributes:
        paths: Dict `epoch -> path` of the snapshots this run has written
            (or kept, when resumed).

    Example:

    >>> import os, tempfile
    >>> import numpy as np, keras
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(0.1), loss="mse")
    >>> initial = model.get_weights()
    >>> folder = tempfile.mkdtemp()
    >>> snapshots = WeightSnapshots(folder, [0, 2])
    >>> x, y = np.ones((8, 2), "float32"), np.zeros((8, 1), "float32")
    >>> _ = model.fit(x, y, epochs=3, verbose=0, callbacks=[snapshots])
    >>> sorted(os.listdir(folder))
    ['epoch0.weights.h5', 'epoch2.weights.h5']
    >>> model.load_weights(snapshots.paths[0])
    >>> all(np.array_equal(a, b) for a, b in zip(model.get_weights(), initial))
    True

    References:
        Gotmare et al., "A Closer Look at Deep Learning Heuristics: Learning
        Rate Restarts, Warmup and Distillation", ICLR 2019, Section 4
        (Figures 4c and 5: the network at iteration 0 against the end of
        warmup).
    """

    def __init__(self, folder, epochs, *, model=None):
        super().__init__()
        if not isinstance(folder, (str, os.PathLike)) or not str(folder):
            fail("folder", folder, "must be a folder path")
        if (isinstance(epochs, (str, bytes)) or not hasattr(epochs, "__iter__")):
            fail("epochs", epochs, "must be a sequence of integers >= 0")
        chosen = list(epochs)
        if not chosen or any(isinstance(e, bool) or not isinstance(e, int)
                             or e < 0 for e in chosen):
            fail("epochs", epochs, "must be a non-empty sequence of integers >= 0")
        if model is not None and not isinstance(model, keras.Model):
            fail("model", model, "must be a keras.Model or None")
        self.folder = os.fspath(folder)
        self.epochs = tuple(sorted(set(chosen)))
        self.target = model
        self.paths = {}
        self._started = False

    def path(self, epoch):
        """The file of the snapshot after `epoch` epochs."""
        return os.path.join(self.folder, f"epoch{epoch}.weights.h5")

    # -- Keras hooks -----------------------------------------------------
    def on_train_begin(self, logs=None):
        os.makedirs(self.folder, exist_ok=True)
        self.paths = {}
        self._started = False
        if 0 in self.epochs:
            self._weights_owner().save_weights(self._partial(0), overwrite=True)

    def on_epoch_begin(self, epoch, logs=None):
        if self._started:
            return
        self._started = True
        # The first epoch of this fit: epoch 0 for a fresh run, later for
        # one that BackupAndRestore resumed.
        for e in self.epochs:
            if e > epoch and os.path.exists(self.path(e)):
                os.remove(self.path(e))
        if 0 in self.epochs:
            if epoch == 0:
                os.replace(self._partial(0), self.path(0))
            elif os.path.exists(self._partial(0)):
                os.remove(self._partial(0))
        self.paths = {e: self.path(e) for e in self.epochs
                      if e <= epoch and os.path.exists(self.path(e))}

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 in self.epochs and epoch + 1 > 0:
            partial = self._partial(epoch + 1)
            self._weights_owner().save_weights(partial, overwrite=True)
            os.replace(partial, self.path(epoch + 1))
            self.paths[epoch + 1] = self.path(epoch + 1)

    # -- helpers -----------------------------------------------------------
    def _weights_owner(self):
        if self.target is not None:
            return self.target
        if keras_compat.is_distiller(self.model):
            return self.model.student
        return self.model

    def _partial(self, epoch):
        return os.path.join(self.folder, f"epoch{epoch}{_PARTIAL}")
