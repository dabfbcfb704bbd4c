"""Where the runs of a `compare` folder stand, finished or not.

`python -m keras_lrphase.training.progress_report FOLDER` prints a Markdown
table with one row per run folder under `FOLDER` (a folder holding a
`history.csv`): the epochs done of the budget, the learning rate of the
last epoch, the best and last validation accuracy, the training throughput
(images per second of training time, median over the epochs after the
first, which compiles), the minutes an epoch takes (median, validation
and eigenvalue included) and that epoch's seconds split into training,
validation and the rest (the callbacks' epoch-end work, the eigenvalue
above all; medians of `history.csv`'s `train_time`, `validation_time` and
what remains of `epoch_time`). It reads only the files the runs write as they
go, so it works while they train or after they were stopped; `compare`
itself writes `table.md` once every run has finished.

Example:

>>> import os, tempfile
>>> from keras_lrphase.training.runner import run_training
>>> from keras_lrphase.training.run_config import RunConfig
>>> out = tempfile.mkdtemp()
>>> config = RunConfig(dataset="digits", epochs=2, batch_size=256,
...                    train_size=512, test_size=100, hessian_every=0)
>>> _ = run_training(config, os.path.join(out, "a"), verbose=0, log=None)
>>> print(progress_table(out).splitlines()[2].split("|")[1:3])
[' a ', ' 2/2 (done) ']
"""

import json
import math
import os
import statistics
import sys

from keras_lrphase.training.epoch_recorder import EpochRecorder
from keras_lrphase.training.runner import BACKUP_DIR
from keras_lrphase.training.runner import HISTORY_FILE
from keras_lrphase.training.runner import RUN_FILE
from keras_lrphase.training.runner import SUMMARY_FILE


def run_status(folder):
    """The progress of the run in `folder` as a dict (None: no history yet)."""
    history = os.path.join(folder, HISTORY_FILE)
    if not os.path.exists(history):
        return None
    rows = EpochRecorder.read(history, skip_broken=True)
    epochs = images = None
    finished = os.path.exists(os.path.join(folder, SUMMARY_FILE))
    for path in (os.path.join(folder, SUMMARY_FILE),
                 os.path.join(folder, BACKUP_DIR, RUN_FILE)):
        if os.path.exists(path):
            with open(path) as f:
                info = json.load(f)
            epochs = info["config"]["epochs"]
            if "images_per_epoch" in info:
                images = info["images_per_epoch"]
            else:
                images = info["steps_per_epoch"] * info["config"]["batch_size"]
            break
    val = [r["val_accuracy"] for r in rows if not math.isnan(r["val_accuracy"])]
    steady = rows[1:] if len(rows) > 1 else rows
    train_time = statistics.median(r["train_time"] for r in steady) if rows else None
    epoch_time = statistics.median(r["epoch_time"] for r in steady) if rows else None
    split = None
    if rows:
        validation = [r.get("validation_time", math.nan) for r in steady]
        rest = [r["epoch_time"] - r["train_time"] - (v if math.isfinite(v) else 0.0)
                for r, v in zip(steady, validation)]
        finite = [v for v in validation if math.isfinite(v)]
        split = {"training": train_time,
                 "validation": statistics.median(finite) if finite else math.nan,
                 "rest": statistics.median(rest)}
    return {
        "epochs_done": len(rows),
        "epochs": epochs,
        "finished": finished,
        "learning_rate": rows[-1]["learning_rate"] if rows else None,
        "best_val_accuracy": max(val) if val else None,
        "last_val_accuracy": val[-1] if val else None,
        "images_per_second": (images / train_time
                              if images and train_time else None),
        "epoch_minutes": epoch_time / 60 if epoch_time else None,
        "seconds_per_epoch": split,
    }


def progress_table(out):
    """The Markdown table of every run folder under `out`."""
    lines = ["| run | epochs | LR | best val. acc. | last val. acc. | "
             "images/s | min/epoch | s/epoch: train + val. + rest | "
             "left (min) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for root, _, files in sorted(os.walk(out)):
        if HISTORY_FILE not in files:
            continue
        status = run_status(root)
        if status is None:
            continue
        name = os.path.relpath(root, out)
        left = None
        if status["epochs"] and status["epoch_minutes"]:
            left = (status["epochs"] - status["epochs_done"]) * status["epoch_minutes"]
        lines.append(
            f"| {name} | {status['epochs_done']}/{status['epochs'] or '?'}"
            + (" (done)" if status["finished"] else "")
            + f" | {_fmt(status['learning_rate'], '{:.3g}')}"
            f" | {_fmt(status['best_val_accuracy'], '{:.2%}')}"
            f" | {_fmt(status['last_val_accuracy'], '{:.2%}')}"
            f" | {_fmt(status['images_per_second'], '{:,.0f}')}"
            f" | {_fmt(status['epoch_minutes'], '{:.3f}')}"
            f" | {_split(status['seconds_per_epoch'])}"
            f" | {_fmt(left, '{:.1f}')} |")
    return "\n".join(lines)


def _fmt(value, spec):
    return "-" if value is None else spec.format(value)


def _split(seconds):
    if seconds is None:
        return "-"
    return " + ".join("-" if math.isnan(seconds[part]) else f"{seconds[part]:.2f}"
                      for part in ("training", "validation", "rest"))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not os.path.isdir(argv[0]):
        print("usage: python -m keras_lrphase.training.progress_report FOLDER",
              file=sys.stderr)
        return 2
    print(progress_table(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
