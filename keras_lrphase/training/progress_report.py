"""Where the runs of a `compare` folder stand, finished or not.

`python -m keras_lrphase.training.progress_report FOLDER [--gpu FILE]`
prints a Markdown table with one row per run folder under `FOLDER` (a
folder holding a `history.csv`): the epochs done of the budget, the
learning rate of the last epoch, the best and last validation accuracy,
the training throughput (images per second of training time, median over
the epochs after the first, which compiles), the minutes an epoch takes
and that epoch's seconds split into five parts read from `history.csv`:
training (`train_time`), validation (`validation_time`), the Hessian
eigenvalue (`hessian_time`), the time between epochs (`between_time`: the
checkpoint, mostly) and the rest (what remains of `epoch_time`: the other
callbacks' epoch-end work). Training and the rest are medians over the
epochs after the first; validation and the eigenvalue, which need not run
every epoch, are the median of their occurrences after the first (which
compiles) times the share of epochs they ran in; the time between epochs
is a mean (a checkpoint every few epochs counts for its share). The
minutes per epoch are the sum of the five parts. Below the table it says
which runs have finished and which have not, and with `--gpu FILE` (what
`nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used
--format=csv,noheader,nounits -lms N` wrote while the runs trained) the
GPU's utilisation over that time. It reads only the files the runs write
as they go, so it works while they train or after they were stopped;
`compare` itself writes `table.md` once every run has finished.

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

import datetime
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
    split = _split_epoch(rows) if rows else None
    train_time = split["training"] if split else None
    epoch_time = sum(v for v in split.values() if math.isfinite(v)) if split else None
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


PARTS = ("training", "validation", "eigenvalue", "between", "rest")


def _split_epoch(rows):
    """An epoch's seconds in `PARTS` (NaN: a part no epoch has a time for)."""
    steady = rows[1:] if len(rows) > 1 else rows

    def occasional(key):
        # The median of the part's times after its first (which compiles),
        # times the share of the epochs it ran in.
        times = [r.get(key, math.nan) for r in rows]
        times = [t for t in times if math.isfinite(t)]
        if not times:
            return math.nan
        share = len(times) / len(rows)
        return statistics.median(times[1:] or times) * share

    def known(row, key):
        value = row.get(key, math.nan)
        return value if math.isfinite(value) else 0.0

    between = [r.get("between_time", math.nan) for r in rows]
    between = [t for t in between if math.isfinite(t)]
    rest = [r["epoch_time"] - r["train_time"] - known(r, "validation_time")
            - known(r, "hessian_time") for r in steady]
    return {"training": statistics.median(r["train_time"] for r in steady),
            "validation": occasional("validation_time"),
            "eigenvalue": occasional("hessian_time"),
            "between": statistics.fmean(between) if between else math.nan,
            "rest": statistics.median(rest)}


def progress_table(out):
    """The Markdown table of every run folder under `out`."""
    lines = ["| run | epochs | LR | best val. acc. | last val. acc. | "
             "images/s | min/epoch | s/epoch: train + val. + eig. + "
             "between + rest | left (min) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, status in _statuses(out):
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


def finished_lines(out):
    """Which runs under `out` have finished and which have not (Markdown).

    Example:

    >>> import tempfile
    >>> finished_lines(tempfile.mkdtemp())
    ['Finished: none (0 of 0 runs).']
    """
    statuses = list(_statuses(out))
    done = [name for name, status in statuses if status["finished"]]
    lines = [f"Finished: {', '.join(done) or 'none'} ({len(done)} of "
             f"{len(statuses)} runs)."]
    left = [f"{name} ({status['epochs_done']}/{status['epochs'] or '?'})"
            for name, status in statuses if not status["finished"]]
    if left:
        lines.append(f"Not finished: {', '.join(left)}.")
    return lines


def _statuses(out):
    for root, _, files in sorted(os.walk(out)):
        if HISTORY_FILE not in files:
            continue
        status = run_status(root)
        if status is not None:
            yield os.path.relpath(root, out), status


def gpu_utilisation(path):
    """A sentence on the GPU's utilisation in an `nvidia-smi` CSV log.

    Args:
        path: String. Lines `timestamp, index, utilization.gpu [%],
            memory.used [MiB]` (`--format=csv,noheader,nounits`); lines
            that do not parse (a header, a line cut by a kill) are skipped.

    Returns:
        The sentence, or None when the file holds no sample.

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "gpu.csv")
    >>> with open(path, "w") as f:
    ...     _ = f.write("2026/11/27 10:00:00.000, 0, 20, 1000\\n"
    ...                 "2026/11/27 10:00:01.000, 0, 90, 3000\\n"
    ...                 "2026/11/27 10:00:02.000, 0, 100, 2000\\n")
    >>> print(gpu_utilisation(path))  # doctest: +NORMALIZE_WHITESPACE
    GPU utilisation (nvidia-smi, 3 samples over 0.0 min): mean 70%,
    median 90%, under 50% in 33% of the samples; memory used up to 3,000 MiB.
    """
    times, used, memory = [], [], []
    with open(path) as f:
        for line in f:
            cells = [c.strip() for c in line.split(",")]
            if len(cells) != 4:
                continue
            try:
                stamp = datetime.datetime.strptime(cells[0], "%Y/%m/%d %H:%M:%S.%f")
                utilisation, mib = float(cells[2]), float(cells[3])
            except ValueError:
                continue
            times.append(stamp)
            used.append(utilisation)
            memory.append(mib)
    if not used:
        return None
    minutes = (max(times) - min(times)).total_seconds() / 60
    low = sum(u < 50 for u in used) / len(used)
    return (f"GPU utilisation (nvidia-smi, {len(used)} samples over "
            f"{minutes:.1f} min): mean {statistics.fmean(used):.0f}%, median "
            f"{statistics.median(used):.0f}%, under 50% in {low:.0%} of the "
            f"samples; memory used up to {max(memory):,.0f} MiB.")


LEGEND = ("s/epoch: seconds of an epoch in training, validation, the Hessian "
          "eigenvalue, between epochs (the checkpoint, mostly) and the rest "
          "(the other callbacks' epoch-end work); min/epoch is their sum. "
          "Validation and the eigenvalue count for the share of epochs they "
          "ran in; '-': not run so far.")


def report(out, gpu=None):
    """The whole report: the table, its legend, the finished runs and,
    with `gpu` (an `nvidia-smi` CSV log), the GPU's utilisation ('n/a'
    where the log is missing or holds no sample: no `nvidia-smi`)."""
    lines = [progress_table(out), "", LEGEND, ""] + finished_lines(out)
    if gpu:
        sentence = gpu_utilisation(gpu) if os.path.exists(gpu) else None
        lines += ["", sentence or "GPU utilisation: n/a (no nvidia-smi "
                  f"samples in {os.path.basename(gpu)})."]
    return "\n".join(lines)


def _fmt(value, spec):
    return "-" if value is None else spec.format(value)


def _split(seconds):
    if seconds is None:
        return "-"
    return " + ".join("-" if math.isnan(seconds[part]) else f"{seconds[part]:.2f}"
                      for part in PARTS)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    gpu = None
    if len(argv) == 3 and argv[1] == "--gpu":
        gpu = argv.pop(2)
        argv.pop(1)
    if len(argv) != 1 or not os.path.isdir(argv[0]):
        print("usage: python -m keras_lrphase.training.progress_report FOLDER "
              "[--gpu FILE]", file=sys.stderr)
        return 2
    print(report(argv[0], gpu))
    return 0


if __name__ == "__main__":
    sys.exit(main())
