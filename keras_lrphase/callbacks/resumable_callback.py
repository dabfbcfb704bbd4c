"""The resume rules every stateful callback of the package follows.

A run killed at any instant must resume to exactly the result of an
uninterrupted run. The state of the package's callbacks therefore lives in
the model's weight checkpoints (see `model_state`): `BackupAndRestore`
saves it in the same file, at the same moment, as the weights and the
optimizer, and restores it with them. At the start of the first epoch of a
`fit` (after every callback's `on_train_begin`, so after
`BackupAndRestore` restored its checkpoint, whatever the callback order),
a callback picks, among

1. the state in the checkpoint just restored into the model (when one was
   restored, it is the only candidate: the weights belong with it),
2. its own state in memory (a `fit` that continues an earlier one), and
3. the copies in `state_path` (the last two epoch ends), if given,

the one that expects exactly the epoch training starts at. A `fit` that
starts at epoch 0 with none of them starts a new run. Anything else is an
error that says what was found, rather than a silent restart. Each saved
state records the number of workers of the run that saved it
(`world_size`, from the callback's reducer); a state saved by another
number of workers is refused with an error: the steps per epoch, and so
the learning-rate records, depend on it. States saved without it (one
worker) are accepted.

One order matters: `BackupAndRestore` must come after the package's
callbacks in `callbacks`, so that its checkpoint at an epoch end includes
their decisions at that epoch end. The other order is detected at the
first epoch end (a warning), and a checkpoint written that way is refused
at resume with the same explanation, because the decision it lacks cannot
be recomputed.

A run killed after its last epoch, before `BackupAndRestore` deleted its
checkpoint, resumes into a `fit` with no epoch left; the state is then
restored at `on_train_end`, so the end-of-training work (the last stage of
`StageCheckpoint`) is done as it would have been. One case stays inexact,
by Keras' design: a run that a controller stopped early (AutoDecay) and that
is killed in that same window resumes at the next epoch, and Keras trains
one batch before it can stop again.
"""

import abc
import json
import os

import keras

from keras_lrphase import _warnings
from keras_lrphase._validation import check_path
from keras_lrphase.backend import keras_compat
from keras_lrphase.callbacks.model_state import model_state

FILE_VERSION = 1


class ResumableCallback(keras.callbacks.Callback, abc.ABC):
    """Base class of the package's callbacks that carry state across epochs.

    Subclasses set `state_name` and implement `_next_epoch()`,
    `_payload()` (a JSON-serialisable dict, `next_epoch` included by the
    base), `_restore(payload)` and `_start_new_run()`; they call
    `_end_epoch(epoch)` at the end of their `on_epoch_end`.

    Args:
        state_path: Path or None. A JSON copy of the state, written
            atomically at every epoch end (by the chief worker only), with
            the previous epoch's state kept beside it. Not needed to resume
            with `BackupAndRestore`; useful to inspect the state, or to
            resume when the weights come from elsewhere. Defaults to `None`.
    """

    state_name = None

    def __init__(self, state_path=None):
        super().__init__()
        self.state_path = check_path("state_path", state_path)
        self._store = None
        self._state_key = None
        self._started = False
        self._seen_loads = 0
        self._loads_before_fit = 0
        self._epoch_open = None
        self._saved_during_epoch_at = None
        self._warned_order = False
        self._file_states = []

    # -- subclass interface ------------------------------------------------------
    @abc.abstractmethod
    def _next_epoch(self):
        """The epoch the state expects next."""

    @abc.abstractmethod
    def _payload(self):
        """The state to save, a JSON-serialisable dict."""

    @abc.abstractmethod
    def _restore(self, payload):
        """Restores a state saved by `_payload`."""

    @abc.abstractmethod
    def _start_new_run(self):
        """Forgets all progress (a `fit` starting a new run at epoch 0)."""

    def _is_chief(self):
        return True

    def _world_size(self):
        """Number of workers of this run, recorded with the state."""
        return 1

    # -- Keras hooks -------------------------------------------------------------
    def set_model(self, model):
        super().set_model(model)
        self._store = model_state(model)
        self._state_key = self._store.register(
            self.state_name, self, self._checkpoint_payload
        )
        # Keras calls `set_model` as a `fit` starts: a checkpoint loaded after
        # this was restored by that `fit` (BackupAndRestore).
        self._loads_before_fit = self._store.load_count

    def on_train_begin(self, logs=None):
        self._store.seal()
        self._started = False
        self._epoch_open = None
        if self.state_path is not None:
            _remove_quietly(_temp_path(self.state_path))

    def on_epoch_begin(self, epoch, logs=None):
        if not self._started:
            self._started = True
            self._resume(epoch)
        self._epoch_open = epoch
        self._saved_during_epoch_at = None

    def on_train_end(self, logs=None):
        # A run killed after its last epoch (in an `on_train_end`, before
        # BackupAndRestore deleted its checkpoint) resumes into a `fit` that
        # runs no epoch at all: restore the state it ended with, so that
        # what happens at the end of training happens as it would have.
        if self._started or self._store is None:
            return
        self._started = True
        epochs = (self.params or {}).get("epochs")
        if self._store.load_count != self._seen_loads:
            self._seen_loads = self._store.load_count
            saved = self._store.loaded.get(self._state_key)
            if saved is not None and saved.get("next_epoch") == epochs:
                self._restore(saved)

    # -- checkpoints ----------------------------------------------------------------
    def _checkpoint_payload(self):
        if self._epoch_open is not None:
            self._saved_during_epoch_at = keras_compat.raw_step(self.model.optimizer)
        payload = dict(self._payload())
        payload["next_epoch"] = self._next_epoch()
        payload["world_size"] = self._world_size()
        return payload

    def _end_epoch(self, epoch):
        """Call at the end of `on_epoch_end`: order check, `state_path` copy."""
        if (
            self._saved_during_epoch_at is not None
            and self._saved_during_epoch_at
            == keras_compat.raw_step(self.model.optimizer)
            and not self._warned_order
        ):
            self._warned_order = True
            name = type(self).__name__
            _warnings.warn(
                f"{name}: a checkpoint of the model (BackupAndRestore or "
                f"ModelCheckpoint) was written at the end of epoch {epoch + 1} "
                f"before {name} made its decision for that epoch, because it "
                f"comes before {name} in `callbacks`. A run resumed from such a "
                "checkpoint cannot repeat that decision. Place "
                f"BackupAndRestore after {name} in `callbacks`.")
        self._epoch_open = None
        if self.state_path is not None and self._is_chief():
            payload = dict(self._payload())
            payload["next_epoch"] = self._next_epoch()
            payload["world_size"] = self._world_size()
            self._file_states = (self._file_states + [payload])[-2:]
            _write_atomically(
                self.state_path,
                {"version": FILE_VERSION, "callback": self._state_key,
                 "states": self._file_states},
            )

    # -- resume ------------------------------------------------------------------------
    def _resume(self, epoch):
        name = type(self).__name__
        found = []
        restored_by_fit = False
        if self._store.load_count != self._seen_loads:
            restored_by_fit = self._store.load_count > self._loads_before_fit
            self._seen_loads = self._store.load_count
            saved = self._store.loaded.get(self._state_key)
            if saved is not None:
                found.append(("the checkpoint restored into the model", saved))
        memory = self._next_epoch()
        file_states = self._read_state_file()
        for source, payload in found:
            if payload.get("next_epoch") == epoch:
                self._check_world_size(source, payload)
                self._restore(payload)
                # The state resumed from is the previous one of the copy.
                self._file_states = [
                    p for p in file_states if p["next_epoch"] < epoch
                ] + [payload]
                return
            if epoch > 0 or restored_by_fit:
                # The weights just restored belong with this state: another
                # state would not match them. At epoch 0 too when this `fit`
                # restored them (Keras' BackupAndRestore killed between its
                # two writes at the end of the first epoch); weights loaded
                # before `fit` may start a new run.
                raise ValueError(self._mismatch_message(epoch, found, 0, []))
        if memory == epoch and epoch > 0:
            return
        for payload in file_states:
            if payload.get("next_epoch") == epoch:
                self._check_world_size(
                    f"state_path={self.state_path!r}", payload)
                self._restore(payload)
                self._file_states = [p for p in file_states if p["next_epoch"] <= epoch]
                return
        if epoch == 0:
            if file_states:
                _warnings.warn(
                    f"{name}: training starts a new run at epoch 0; the state "
                    f"in state_path={self.state_path!r} (next epoch "
                    f"{file_states[-1]['next_epoch']}) is replaced.")
            self._file_states = []
            self._start_new_run()
            return
        raise ValueError(self._mismatch_message(epoch, found, memory, file_states))

    def _check_world_size(self, source, payload):
        saved = payload.get("world_size", 1)
        if saved != self._world_size():
            name = type(self).__name__
            raise ValueError(
                f"{name}: the state in {source} was saved by a run of "
                f"{saved} workers, but this run has {self._world_size()} "
                f"(world_size={self._world_size()}). The steps per epoch and "
                "the global batch depend on the number of workers, so that "
                "state cannot be resumed here: resume with the same number "
                "of workers, or start a new run at epoch 0.")

    def _mismatch_message(self, epoch, found, memory, file_states):
        name = type(self).__name__
        details = []
        for source, payload in found:
            saved = payload.get("next_epoch")
            detail = f"{source} continues after {_epochs(saved)}"
            if saved == epoch + 1:
                written = "is missing" if epoch == 0 else f"says {epoch}"
                detail += (
                    f" (its weights are from the end of epoch {saved}, but "
                    f"BackupAndRestore's training_metadata.json {written}: "
                    "Keras writes the weights and that file one after the "
                    "other, and the run was killed in between; write "
                    f'{{"epoch": {saved}, "batch": 0}} into that file to '
                    "resume, or delete the backup folder to start a new run)"
                )
            elif saved == epoch - 1:
                detail += (
                    f" (that checkpoint was written at the end of epoch {epoch} "
                    f"before {name} decided, because BackupAndRestore comes "
                    f"before {name} in `callbacks`: place it after {name}; "
                    "this checkpoint cannot be resumed exactly)"
                )
            details.append(detail)
        if memory:
            details.append(f"this callback has seen {_epochs(memory)}")
        if file_states:
            details.append(
                f"state_path={self.state_path!r} holds the states after epochs "
                f"{[p['next_epoch'] for p in file_states]}"
            )
        if not details:
            details.append(
                "nothing was restored; resume with keras_lrphase."
                "BackupAndRestore (placed after the package's callbacks), or "
                "pass the `state_path` of the interrupted run"
            )
        return (
            f"{name}: this `fit` starts after {epoch} completed epochs "
            f"(initial_epoch={epoch}), but no saved state of {name} continues "
            f"from there: {'; '.join(details)}."
        )

    def _read_state_file(self):
        if self.state_path is None or not os.path.exists(self.state_path):
            return []
        try:
            with open(self.state_path) as f:
                content = json.load(f)
            states = content["states"]
            if content.get("version") != FILE_VERSION or not isinstance(states, list):
                raise ValueError("unknown layout")
            if any(not isinstance(p, dict) or not isinstance(p.get("next_epoch"), int)
                   for p in states):
                raise ValueError("a state without its epoch")
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(
                f"Argument `state_path` must name a {type(self).__name__} state "
                f"file (version {FILE_VERSION}). Received: "
                f"state_path={self.state_path!r}, which cannot be read: {error}"
            ) from None
        return states


def _epochs(count):
    return f"{count} epoch" if count == 1 else f"{count} epochs"


def _temp_path(path):
    return f"{path}.tmp"


def _remove_quietly(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _write_atomically(path, content):
    """Writes JSON to `path` through a fixed temporary name and a rename."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    temp = _temp_path(path)
    with open(temp, "w") as f:
        json.dump(content, f, allow_nan=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)
