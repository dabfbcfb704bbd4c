"""`EpochRecorder`: writes one `history.csv` row per epoch as training runs."""

import csv
import math
import os
import time

import keras

from keras_lrphase.schedules.controlled_learning_rate import last_step_learning_rate

COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy",
           "learning_rate", "phase", "hessian_max_eigenvalue",
           "autodecay_smoothed_loss", "epoch_time", "train_time",
           "validation_time")
WARMUP = "warmup"
EXPLORATION = "exploration"
CONVERGENCE = "convergence"
NO_PHASE = "n/a"


class EpochRecorder(keras.callbacks.Callback):
    """Records the epoch metrics, learning rate, phase and timings to a CSV.

    Place it last in the callback list, after the callbacks that write
    `learning_rate`, `lrphase_phase` or `hessian_max_eigenvalue` into the
    epoch logs (`TwoPhaseLR`, `HessianMonitor`), so it sees their values.
    Each row is written and flushed at the epoch end, so an interrupted run
    keeps its history. Nothing runs per batch.

    Columns: `epoch` (1-based), `loss`, `accuracy`, `val_loss`,
    `val_accuracy`, `learning_rate` (of the epoch's last step),
    `phase` (`"warmup"`, `"exploration"`, `"convergence"`, `"stage N"`
    for AutoDecay, or `"n/a"`),
    `hessian_max_eigenvalue` (empty when not computed that epoch),
    `autodecay_smoothed_loss` (AutoDecay's smoothed loss, empty otherwise),
    `epoch_time` (seconds from the epoch's start to the end of its
    callbacks: training, validation and the eigenvalue), `train_time`
    (seconds of the training part only) and `validation_time` (seconds of
    the validation pass; empty without validation data). What remains of
    `epoch_time` is the epoch-end work of the callbacks before the recorder,
    the eigenvalue of `TwoPhaseLR` and `HessianMonitor` above all; a
    checkpoint written after the recorder (`BackupAndRestore`) is not in it.
    A history written before `validation_time` existed is resumed with that
    cell empty in its rows.

    Args:
        path: String. The CSV file to write.
        phase_fn: Callable `phase_fn(epoch, logs)` returning the phase
            string, or `None` to record `"n/a"`. Defaults to `None`.
        resume: Bool. Keep the rows of the epochs before the first one this
            `fit` trains (a run resumed by `BackupAndRestore`) instead of
            starting a new file; rows of later epochs, left by a run
            stopped before its checkpoint, are dropped. Defaults to `False`.
        on_resume: Callable or None. With `resume`, called once with the
            number of epochs kept when a run resumes after them (not for a
            run that starts at its first epoch). Defaults to `None`.

    Example:

    >>> import os, tempfile, numpy as np, keras
    >>> path = os.path.join(tempfile.mkdtemp(), "history.csv")
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(0.1), loss="mse")
    >>> _ = model.fit(np.ones((4, 2)), np.zeros((4, 1)), epochs=2, verbose=0,
    ...               callbacks=[EpochRecorder(path)])
    >>> [round(row["learning_rate"], 6) for row in EpochRecorder.read(path)]
    [0.1, 0.1]

    References:
        `keras.callbacks.CSVLogger`, which it extends with fixed columns.
    """

    def __init__(self, path, phase_fn=None, resume=False, on_resume=None):
        super().__init__()
        self.path = path
        self.phase_fn = phase_fn
        self.resume = resume
        self.on_resume = on_resume
        self.rows = []
        self.resumed_epochs = 0

    def on_train_begin(self, logs=None):
        self.rows = []
        self.resumed_epochs = 0
        self._first_epoch = True
        if not self.resume:
            self._write([])

    def _write(self, rows):
        partial = f"{self.path}.tmp"
        with open(partial, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            for row in rows:
                writer.writerow(_cells(row))
        os.replace(partial, self.path)

    def on_epoch_begin(self, epoch, logs=None):
        if self.resume and self._first_epoch:
            kept = []
            if os.path.exists(self.path):
                kept = [r for r in self.read(self.path, skip_broken=True)
                        if r["epoch"] <= epoch]
            if [r["epoch"] for r in kept] != list(range(1, epoch + 1)):
                raise ValueError(
                    f"Cannot resume at epoch {epoch + 1}: {self.path!r} does "
                    f"not hold the rows of epochs 1..{epoch}")
            self.rows = kept
            self.resumed_epochs = len(kept)
            self._write(kept)
            if kept and self.on_resume is not None:
                self.on_resume(len(kept))
        self._first_epoch = False
        self._start = time.perf_counter()
        self._train_end = None
        self._validation_end = None

    def on_test_begin(self, logs=None):
        # Validation inside `fit` starts: the epoch's training part ends.
        if getattr(self, "_train_end", False) is None:
            self._train_end = time.perf_counter()

    def on_test_end(self, logs=None):
        # The end of the validation inside `fit` (not of an `evaluate`).
        if (getattr(self, "_train_end", None) is not None
                and self._validation_end is None):
            self._validation_end = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        now = time.perf_counter()
        learning_rate = logs.get("learning_rate")
        if learning_rate is None:
            learning_rate = last_step_learning_rate(self.model.optimizer)
        row = {
            "epoch": epoch + 1,
            "loss": _float(logs.get("loss")),
            "accuracy": _float(logs.get("accuracy")),
            "val_loss": _float(logs.get("val_loss")),
            "val_accuracy": _float(logs.get("val_accuracy")),
            "learning_rate": float(learning_rate),
            "phase": self.phase_fn(epoch, logs) if self.phase_fn else NO_PHASE,
            "hessian_max_eigenvalue": _float(logs.get("hessian_max_eigenvalue")),
            "autodecay_smoothed_loss": _float(logs.get("autodecay_smoothed_loss")),
            "epoch_time": now - self._start,
            "train_time": (self._train_end or now) - self._start,
            "validation_time": (self._validation_end - self._train_end
                                if self._validation_end is not None
                                else math.nan),
        }
        self.rows.append(row)
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow(_cells(row))
            f.flush()
            os.fsync(f.fileno())

    @staticmethod
    def read(path, skip_broken=False):
        """Reads a `history.csv` back as a list of dicts (floats, NaN for empty).

        Args:
            path: String. The file.
            skip_broken: Bool. Drop a row that does not parse (the last row
                of a process killed while writing it) instead of raising.
                Defaults to `False`.
        """
        rows = []
        with open(path, newline="") as f:
            for raw in csv.DictReader(f):
                try:
                    row = _parse(raw)
                except (TypeError, ValueError):
                    if skip_broken:
                        continue
                    raise
                rows.append(row)
        return rows


def _parse(raw):
    if None in raw or None in raw.values():
        raise ValueError(f"malformed history row: {raw}")
    row = {}
    for key, value in raw.items():
        if key == "phase":
            row[key] = value
        elif key == "epoch":
            row[key] = int(value)
        else:
            row[key] = float(value) if value != "" else math.nan
    return row


def _cells(row):
    # A row read from a history written before a column existed lacks it.
    values = [row.get(c, math.nan) for c in COLUMNS]
    return ["" if isinstance(v, float) and math.isnan(v) else v
            for v in values]


def _float(value):
    return math.nan if value is None else float(value)
