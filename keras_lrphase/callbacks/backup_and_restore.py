"""`keras.callbacks.BackupAndRestore`, written so that no kill can break it."""

import json
import os

import keras

from keras_lrphase._validation import check_bool
from keras_lrphase._validation import check_folder_usable
from keras_lrphase._validation import fail
from keras_lrphase._warnings import warn
from keras_lrphase.backend import keras_compat
from keras_lrphase.callbacks.model_state import model_state

STATE_NAME = "backup_and_restore"


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' `BackupAndRestore` with one checkpoint file, replaced atomically.

    Keras' own callback writes the weights (`latest.weights.h5`) and then
    the epoch (`training_metadata.json`), each in place. A process killed
    while the first weights file is being written leaves a run that cannot
    resume; killed between the two files, it resumes one epoch off. This
    subclass keeps the epoch inside the weights file (with the package's
    callbacks' state) and writes that file under a temporary name, then
    renames it over the previous one, so at any instant the folder holds
    one complete checkpoint. `training_metadata.json` is still written
    (after the rename) for tools that read it. Use it where you would use
    Keras' callback, after the package's callbacks in `callbacks`.

    Named apart from Keras' class so that a program can import both; the
    old name `keras_lrphase.BackupAndRestore` still works for one release,
    with a `FutureWarning`.

    A run resumes at the start of the epoch after the last completed one;
    checkpoints are written at epoch ends only (Keras restarts an
    interrupted epoch from its first batch, so a mid-epoch checkpoint could
    not resume exactly). The checkpoint also holds the state of the random
    generators that `fit(shuffle=True)` draws each epoch's order of NumPy
    arrays or of a `keras.utils.PyDataset` from, which Keras' own callback
    does not restore: a resumed run trains on the batches of the
    uninterrupted one (the order of a `tf.data.Dataset.shuffle` is the
    dataset's own, and is not restored).

    It also resumes a folder written by Keras' own callback; a
    `training_metadata.json` missing or cut short by a kill is refused with
    the repair.

    Args:
        backup_dir: String. Folder of the checkpoint (used by this run
            only).
        delete_checkpoint: Bool. Delete the folder when training ends.
            Defaults to `True`.

    Example:

    >>> import os, tempfile, numpy as np, keras
    >>> from keras_lrphase import AtomicBackupAndRestore
    >>> folder = os.path.join(tempfile.mkdtemp(), "backup")
    >>> class Interrupt(keras.callbacks.Callback):
    ...     def on_epoch_begin(self, epoch, logs=None):
    ...         if epoch == 2:
    ...             raise RuntimeError("interrupted")
    >>> def train(callbacks):
    ...     keras.utils.set_random_seed(0)
    ...     model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    ...     model.compile(keras.optimizers.SGD(0.1), "mse")
    ...     return model.fit(np.ones((4, 2)), np.zeros((4, 1)), epochs=4,
    ...                      verbose=0, callbacks=callbacks)
    >>> try:
    ...     _ = train([AtomicBackupAndRestore(folder), Interrupt()])
    ... except RuntimeError:
    ...     pass
    >>> sorted(os.listdir(folder))
    ['latest.weights.h5', 'training_metadata.json']
    >>> len(train([AtomicBackupAndRestore(folder)]).history["loss"])  # 2, 3
    2

    References:
        `keras.callbacks.BackupAndRestore`, which it subclasses.
    """

    def __init__(self, backup_dir, delete_checkpoint=True):
        if not isinstance(backup_dir, (str, os.PathLike)) or not os.fspath(backup_dir):
            fail("backup_dir", backup_dir, "must be a folder path")
        check_folder_usable("backup_dir", backup_dir, os.fspath(backup_dir),
                            requirement="must be a folder")
        check_bool("delete_checkpoint", delete_checkpoint)
        super().__init__(os.fspath(backup_dir), save_freq="epoch",
                         double_checkpoint=False,
                         delete_checkpoint=delete_checkpoint)
        self._temp_path = os.path.join(self.backup_dir, "writing.weights.h5")
        self._weights_file, self._metadata_file = (
            keras_compat.backup_file_paths(self))
        self._store = None
        self._key = STATE_NAME

    def set_model(self, model):
        super().set_model(model)
        self._store = model_state(model)
        self._key = self._store.register(STATE_NAME, self, self._checkpoint_payload)

    def _checkpoint_payload(self):
        return {"epoch": self._current_epoch,
                "shuffle_random_state": keras_compat.shuffle_random_state()}

    def on_train_begin(self, logs=None):
        self._store.seal()
        for temp in (self._temp_path, self._metadata_file + ".tmp"):
            if os.path.exists(temp):
                os.remove(temp)  # a write that a kill cut short
        self._load_model()

    def _load_model(self):
        if not self.model.built:
            raise ValueError(
                "To use the BackupAndRestore callback, the model must be built "
                f"before you call `fit()`. Model {self.model.name!r} is "
                "unbuilt: call it on a batch of data first."
            )
        if not os.path.exists(self._weights_file):
            # Not the epoch a `fit` resumed by an earlier BackupAndRestore
            # started at (Keras keeps it on the model): this fit's own.
            keras_compat.set_initial_epoch(self.model, None)
            return
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        self.model.load_weights(self._weights_file)
        saved = self._store.loaded.get(self._key)
        if saved is None:  # a checkpoint written by Keras' own callback
            saved = {"epoch": self._keras_metadata_epoch()}
        self._current_epoch = int(saved["epoch"])
        keras_compat.set_initial_epoch(self.model, self._current_epoch)
        if "shuffle_random_state" in saved:
            keras_compat.set_shuffle_random_state(saved["shuffle_random_state"])

    def _keras_metadata_epoch(self):
        """The epoch in `training_metadata.json`, or an error with the repair."""
        path = self._metadata_file
        try:
            with open(path) as f:
                epoch = json.load(f)["epoch"]
            if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
                raise ValueError(f"epoch={epoch!r}")
            return epoch
        except FileNotFoundError:
            cause = (
                "it is missing: Keras' BackupAndRestore writes the weights and "
                "then that file, and a run killed in between leaves the "
                "weights without it."
            )
        except (OSError, ValueError, KeyError, TypeError):
            cause = (
                "a run killed while Keras' BackupAndRestore wrote that file "
                "leaves it empty or cut short."
            )
        # The package's callbacks saved their next epoch with the weights.
        epochs = {
            state.get("next_epoch") for state in self._store.loaded.values()
            if isinstance(state, dict) and isinstance(state.get("next_epoch"), int)
        }
        if len(epochs) == 1:
            (epoch,) = epochs
            repair = (
                "The state of the package's callbacks in the checkpoint says "
                f"it was written at the end of epoch {epoch}: write "
                f'{{"epoch": {epoch}, "batch": 0}}'
            )
        else:
            repair = (
                'Write {"epoch": N, "batch": 0}, N the number of epochs the '
                "weights were trained for,"
            )
        raise ValueError(
            f"BackupAndRestore cannot read {path!r}, the epoch of the "
            f"checkpoint in backup_dir={self.backup_dir!r}: {cause} {repair} "
            "into that file to resume, or delete the folder to start a new run."
        )

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        # A later `fit` starts at its own `initial_epoch`, not at this one's.
        keras_compat.set_initial_epoch(self.model, None)

    def _save_model(self):
        os.makedirs(self.backup_dir, exist_ok=True)
        self.model.save_weights(self._temp_path, overwrite=True)
        _fsync(self._temp_path)
        os.replace(self._temp_path, self._weights_file)
        metadata = self._metadata_file + ".tmp"
        with open(metadata, "w") as f:
            json.dump({"epoch": self._current_epoch, "batch": 0}, f)
        os.replace(metadata, self._metadata_file)


def _fsync(path):
    with open(path, "rb") as f:
        os.fsync(f.fileno())


# The class's name before it was renamed apart from Keras' `BackupAndRestore`.
_DEPRECATED_NAME = "BackupAndRestore"
_warned = False


def __getattr__(name):
    # `BackupAndRestore`, the deprecated alias (PEP 562): warns once.
    global _warned
    if name != _DEPRECATED_NAME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if not _warned:
        _warned = True
        warn("keras_lrphase.BackupAndRestore is renamed "
             "keras_lrphase.AtomicBackupAndRestore (apart from "
             "keras.callbacks.BackupAndRestore); the old name will be removed "
             "in the next release.", FutureWarning)
    return AtomicBackupAndRestore
