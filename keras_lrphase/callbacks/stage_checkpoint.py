"""Saves the model at the end of every learning stage (the Learning Stages paper, Section 5)."""

import math
import os
import string

from keras_lrphase._validation import check_bool
from keras_lrphase._validation import check_folder_usable
from keras_lrphase._validation import fail
from keras_lrphase.backend import keras_compat
from keras_lrphase.callbacks.resumable_callback import ResumableCallback
from keras_lrphase.callbacks.resumable_callback import (
    write_atomically as _write_atomically,
)
from keras_lrphase.schedules.controlled_learning_rate import ControlledLearningRate
from keras_lrphase.schedules.controlled_learning_rate import last_step_learning_rate

END_OF_TRAINING = "end of training"
LEARNING_RATE_DROP = "learning rate drop"


class StageCheckpoint(ResumableCallback):
    """Saves the model of every learning stage, with a JSON sidecar.

    A learning stage is a run of epochs at one learning rate; it ends at
    the last epoch before a decay of the learning rate, and the last stage
    at the end of training. The models of the successive stages are what
    the Learning Stages paper transfers to other tasks (Section 5).

    Stage ends are recognised from

    * the decision events of the package's controllers (`TwoPhaseLR`,
      `AutoDecay`, any `ControllerCallback`): a `"decay"` event;
    * a drop of the learning rate in force between two epochs that none of
      them made: `ReduceLROnPlateau`, `LearningRateScheduler` or the
      setter on a float learning rate;
    * a step down of a schedule (`PiecewiseConstantDecay`, a staircase
      `ExponentialDecay`: a drop after a flat step) at an epoch start or
      inside the epoch: a stage is trained at one learning rate, so the
      stage ends before the epoch in which the schedule steps down, wherever
      in that epoch (with `PiecewiseConstantDecay(boundaries=[30 * steps],
      ...)`, whose lower value starts one step after the boundary, after
      epoch 30). When the steps per epoch are unknown (a dataset of unknown
      cardinality), a step inside an epoch ends the stage after that epoch.
      Warmup ramps and smooth schedules (cosine, exponential) are not stage
      ends.

    The check runs at the start of the next epoch, after every callback's
    epoch-end decisions, so the order of the callbacks does not matter; the
    model saved is the model at the end of the stage (nothing trains in
    between), with the float learning rate it was trained with (the
    decisions that end the stage are not in it). Changes made by callbacks
    placed after it in `on_epoch_begin` (`LearningRateScheduler`) are seen
    one epoch late.

    Each stage writes `filepath` (formatted like `ModelCheckpoint`'s, with
    `{stage}` (from 1), `{epoch}` (the stage's last epoch, from 1) and the
    epoch's logs) and a sidecar of the same name ending in `.json`:
    `stage`, `first_epoch`, `last_epoch` (from 1), `learning_rate` (of the
    stage's last step), `logs` (the loss and validation metrics at its
    end), `ended_by` (the controller events, `"learning rate drop"` or
    `"end of training"`) and `path`. The saved model loads without the
    package: its optimizer holds the optimizer's own learning rate, the
    float one the stage ended with (`learning_rate` without a warmup ramp
    in force then), or the schedule as given (without the controllers'
    factors, which `learning_rate` includes).

    Args:
        filepath: String. Where to save each stage, ending in `.keras`, or
            `.weights.h5` with `save_weights_only=True`, with `{stage}` or
            `{epoch}` in it (one file per stage). Checked when it is
            created (the format, a folder that can be written) and against
            the logs of the first epoch (the log keys it names).
        save_weights_only: Bool. Save only the weights. Defaults to
            `False`.
        state_path: Path or None. See `ResumableCallback`.

    Example:

    >>> import os, tempfile, numpy as np, keras
    >>> from keras_lrphase import StageCheckpoint
    >>> folder = tempfile.mkdtemp()
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(keras.optimizers.SGD(keras.optimizers.schedules.
    ...     PiecewiseConstantDecay([3, 5], [0.1, 0.01, 0.001])), loss="mse")
    >>> stages = StageCheckpoint(os.path.join(folder, "stage{stage}.keras"))
    >>> _ = model.fit(np.ones((8, 2)), np.zeros((8, 1)), batch_size=4,
    ...               epochs=4, verbose=0, callbacks=[stages])
    >>> sorted(os.listdir(folder))  # two steps per epoch: decays after 2, 3
    ['stage1.json', 'stage1.keras', 'stage2.json', 'stage2.keras', 'stage3.json', 'stage3.keras']
    >>> [s["last_epoch"] for s in stages.stages]
    [2, 3, 4]

    References:
        You, Long, Jordan, Wang, "Learning Stages: Phenomenon, Root Cause,
        Mechanism Hypothesis, and Implications", Section 5 (the models of
        the learning stages and their transfer).
    """

    state_name = "stage_checkpoint"

    def __init__(self, filepath, *, save_weights_only=False, state_path=None):
        super().__init__(state_path=state_path)
        if not isinstance(filepath, (str, os.PathLike)) or not os.fspath(filepath):
            fail("filepath", filepath, "must be a path")
        filepath = os.fspath(filepath)
        self.save_weights_only = check_bool("save_weights_only", save_weights_only)
        suffix = ".weights.h5" if self.save_weights_only else ".keras"
        if not filepath.endswith(suffix):
            fail("filepath", filepath,
                 f"must end in {suffix!r} (save_weights_only={self.save_weights_only})")
        try:
            fields = {
                _field_base(field)
                for _, field, _, _ in string.Formatter().parse(filepath)
                if field is not None
            }
            filepath.format(stage=1, epoch=1, **{
                field: 0.0 for field in fields - {"stage", "epoch"}})
        except (IndexError, KeyError, ValueError, AttributeError, TypeError) as error:
            # Log values are floats: what fails on 0.0 fails on every epoch.
            fail("filepath", filepath, f"must be a valid format string ({error})")
        if not fields & {"stage", "epoch"}:
            fail("filepath", filepath,
                 "must contain `{stage}` or `{epoch}`, so that each stage is "
                 "saved to its own file (without them every stage overwrites "
                 "the previous one's)")
        # The part of the folder that no field changes.
        check_folder_usable("filepath", filepath,
                            os.path.dirname(filepath.split("{", 1)[0]))
        self.filepath = filepath
        self._fields_checked = False
        self.stages = []
        self._control = None
        self._reset()

    def _reset(self):
        self._next = 0
        self._stage = 1
        self._first_epoch = 0
        self._last = None
        self.stages = []

    # -- Keras hooks -----------------------------------------------------------------
    def set_model(self, model):
        super().set_model(model)
        if getattr(model, "optimizer", None) is None:
            fail("model", model, "must be compiled with an optimizer for StageCheckpoint")
        self._control = ControlledLearningRate.install(model.optimizer)
        self._control.acquire(model)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._fields_checked = False

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        step = keras_compat.raw_step(self.model.optimizer)
        self._control.enter_epoch(step)
        if self._last is not None and self._last["epoch"] == epoch - 1:
            ended_by = self._stage_end(epoch - 1, step)
            if ended_by:
                self._save(ended_by, step)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self._last = {
            "epoch": epoch,
            "learning_rate": last_step_learning_rate(self.model.optimizer),
            "logs": {k: float(v) for k, v in logs.items()
                     if isinstance(v, (int, float)) and not isinstance(v, bool)},
        }
        self._next = epoch + 1
        if not self._fields_checked:
            # The first stage may end many epochs later: a field that the
            # logs lack is found now, before a second epoch.
            self._format(self._last)
            self._fields_checked = True
        self._end_epoch(epoch)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        if self._last is not None and self._last["epoch"] >= self._first_epoch:
            step = keras_compat.raw_step(self.model.optimizer)
            self._control.enter_epoch(step)
            ended_by = self._stage_end(self._last["epoch"], step)
            self._save(ended_by or [END_OF_TRAINING], step, final=True)
        self._control.release(self.model)

    # -- stages -----------------------------------------------------------------------
    def _stage_end(self, epoch, step):
        """What ends the stage at epoch `epoch`, which ended at raw step `step`."""
        ended_by = [
            f"{source}:{event}" for source, event in self._store.events_at(epoch)
            if event == "decay"
        ]
        steps_per_epoch = (self.params or {}).get("steps")
        if not ended_by and self._control.drops_at_epoch_start(step, steps_per_epoch):
            ended_by = [LEARNING_RATE_DROP]
        return ended_by

    def _save(self, ended_by, step, final=False):
        last = self._last
        path = self._format(last)
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        stage_rate = self._control.stage_learning_rate(step)
        with self._control.float_learning_rate_saved_as(stage_rate):
            if self.save_weights_only:
                self.model.save_weights(path, overwrite=True)
            else:
                self.model.save(path, overwrite=True)
        record = {
            "stage": self._stage,
            "first_epoch": self._first_epoch + 1,
            "last_epoch": last["epoch"] + 1,
            "learning_rate": last["learning_rate"],
            "logs": {k: (None if math.isnan(v) else v) for k, v in last["logs"].items()},
            "ended_by": list(ended_by),
            "path": path,
        }
        _write_atomically(_sidecar_path(path, self.save_weights_only), record)
        self.stages = [s for s in self.stages if s["stage"] != self._stage] + [record]
        if not final:
            self._stage += 1
            self._first_epoch = last["epoch"] + 1

    def _format(self, last):
        """`filepath` formatted with the stage, the epoch and its logs."""
        values = dict(last["logs"], stage=self._stage, epoch=last["epoch"] + 1)
        try:
            return self.filepath.format(**values)
        except KeyError as error:
            raise ValueError(
                f"Argument `filepath` names {error} which is not in the epoch "
                f"logs (available: {sorted(last['logs'])}). Received: "
                f"filepath={self.filepath!r}"
            ) from None
        except (ValueError, IndexError, AttributeError, TypeError) as error:
            raise ValueError(
                "Argument `filepath` cannot be formatted with the epoch logs "
                f"({error}). Received: filepath={self.filepath!r}"
            ) from None

    # -- state ---------------------------------------------------------------------------
    def _next_epoch(self):
        return self._next

    def _payload(self):
        return {
            "stage": self._stage,
            "first_epoch": self._first_epoch,
            "last": self._last,
            "stages": self.stages,
            "learning_rate": self._control.get_state(),
        }

    def _restore(self, payload):
        self._next = payload["next_epoch"]
        self._stage = payload["stage"]
        self._first_epoch = payload["first_epoch"]
        self._last = payload["last"]
        self.stages = list(payload["stages"])
        self._control.set_state(payload["learning_rate"])

    def _start_new_run(self):
        self._reset()


def _field_base(field):
    """The name of a format field: `loss` of `{loss}`, `{loss[0]}`, `{loss.real}`."""
    return field.split(".", 1)[0].split("[", 1)[0]


def _sidecar_path(path, weights_only):
    suffix = ".weights.h5" if weights_only else ".keras"
    return path[: -len(suffix)] + ".json"
