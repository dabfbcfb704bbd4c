"""Copies the evidence of a `compare` folder into a results folder.

`keras-lrphase compare ... --export FOLDER` (or `export_results`) copies
each run's `history.csv` and `summary.json`, and the comparison's
`table.md`, `progress.md` (written afresh from the runs) and `compare.png`,
into `FOLDER`, with a `README.md` naming the hardware, backend, precision,
commit and command. Model checkpoints, saved models and data stay behind:
what is copied is small text and one figure, to keep in a repository.
Rows exported in different calls (different machines) add up in one
folder: `compare --redraw --out FOLDER` draws the table and figure of
every row there without training.
"""

import datetime
import json
import os
import platform
import shutil
import subprocess

from keras_lrphase.training.progress_report import report

RUN_FILES = ("history.csv", "summary.json")
COMPARE_FILES = ("table.md", "compare.png")
GPU_LOG = "gpu.csv"
PROGRESS_FILE = "progress.md"
README_FILE = "README.md"


def export_results(out, dest, command, gpu_log=None):
    """Copies the evidence of the `compare` folder `out` into `dest`.

    Args:
        out: String. A `compare --out` folder.
        dest: String. The results folder (created; files of the same name
            are replaced, other rows already there are kept).
        command: String. The command that made the runs (for the README).
        gpu_log: String or None. An `nvidia-smi` CSV log of the runs
            (see `progress_report.gpu_utilisation`); copied as `gpu.csv`
            and summarised in `progress.md`. Defaults to `out/gpu.csv`.

    Returns:
        The list of paths written, relative to `dest`.

    Example:

    >>> import os, tempfile
    >>> out, dest = tempfile.mkdtemp(), tempfile.mkdtemp()
    >>> export_results(out, dest, "keras-lrphase compare --preset demo")
    ['progress.md', 'README.md']
    """
    if os.path.abspath(out) == os.path.abspath(dest):
        raise ValueError(
            "Argument `export` must be another folder than `out`. "
            f"Received: export={dest!r}")
    os.makedirs(dest, exist_ok=True)
    written = []
    runs = []
    for root, _, files in sorted(os.walk(out)):
        # An unfinished run (stopped by the time limit) keeps its epochs'
        # rows: its history.csv is copied without a summary.json.
        if RUN_FILES[0] not in files:
            continue
        relative = os.path.relpath(root, out)
        os.makedirs(os.path.join(dest, relative), exist_ok=True)
        for name in RUN_FILES:
            if name in files:
                shutil.copyfile(os.path.join(root, name),
                                os.path.join(dest, relative, name))
                written.append(os.path.join(relative, name))
        if RUN_FILES[1] in files:
            with open(os.path.join(root, RUN_FILES[1])) as f:
                runs.append((relative, json.load(f)))
    for name in COMPARE_FILES:
        if os.path.exists(os.path.join(out, name)):
            shutil.copyfile(os.path.join(out, name), os.path.join(dest, name))
            written.append(name)
    gpu_log = gpu_log or os.path.join(out, GPU_LOG)
    if os.path.exists(gpu_log):
        shutil.copyfile(gpu_log, os.path.join(dest, GPU_LOG))
        written.append(GPU_LOG)
    with open(os.path.join(dest, PROGRESS_FILE), "w") as f:
        f.write(report(out, gpu=gpu_log) + "\n")
    written.append(PROGRESS_FILE)
    with open(os.path.join(dest, README_FILE), "w") as f:
        f.write(readme(runs, command) + "\n")
    written.append(README_FILE)
    return written


def readme(runs, command):
    """The results folder's README: where and how its runs were made.

    Args:
        runs: List of `(folder, summary)`: each run's folder (relative to
            the results folder) and its `summary.json`.
        command: String. The command that made them.
    """
    backends = sorted({s.get("backend", "?") for _, s in runs})
    precisions = sorted({s.get("config", {}).get("precision", "fp32")
                         for _, s in runs})
    lines = [
        "# Results",
        "",
        "Written by `keras-lrphase compare --export`: each run's "
        "`history.csv` (one row per epoch, its seconds split into training, "
        "validation, eigenvalue and the rest) and `summary.json`, the "
        "comparison's `table.md` and `compare.png`, and `progress.md`. "
        "Redraw the table and figure from these files, on any machine and "
        "without training: `keras-lrphase compare --preset PRESET --out "
        "THIS_FOLDER --redraw`.",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- Hardware: {hardware()}",
        f"- Backend: {', '.join(backends) or 'n/a'}",
        f"- Precision: {', '.join(precisions) or 'n/a'}",
        f"- Commit: {commit()}",
        f"- Command: `{command}`",
        "",
        "| run | epochs | best val. acc. | final val. acc. | training minutes |",
        "|---|---|---|---|---|",
    ]
    for folder, summary in runs:
        lines.append(
            f"| {folder} | {summary.get('epochs_completed', '?')}"
            f"/{summary.get('config', {}).get('epochs', '?')} | "
            f"{_pct(summary.get('best_val_accuracy'))} | "
            f"{_pct(summary.get('final_val_accuracy'))} | "
            f"{_minutes(summary.get('train_wall_time_s'))} |")
    return "\n".join(lines)


def hardware():
    """The machine in words: its GPUs (`nvidia-smi`), else 'no GPU', and
    its CPU cores."""
    gpus = _gpu_names()
    return (f"{', '.join(gpus) if gpus else 'no GPU (nvidia-smi: n/a)'}; "
            f"{os.cpu_count()} CPU cores ({platform.machine()}, "
            f"{platform.system()})")


def commit():
    """The repository's commit (with '+ uncommitted changes' where the
    working tree differs), or 'n/a' outside a git checkout."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "n/a"
    return head + (" + uncommitted changes" if dirty.strip() else "")


def _gpu_names():
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode != 0:
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def _pct(value):
    return "-" if value is None or value != value else f"{100 * value:.2f}%"


def _minutes(seconds):
    return "-" if seconds is None else f"{seconds / 60:.1f}"
