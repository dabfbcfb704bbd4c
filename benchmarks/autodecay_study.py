"""Replays AutoDecay on the recorded loss curves of a step-decay run.

The study behind `AutoDecayController`'s defaults for `window`, `tolerance`
and `drop_threshold` (the Learning Stages paper gives only beta = 0.9).
A step-decay run trains each learning rate for a fixed number of epochs, so
its `history.csv` holds one constant-LR loss curve per stage. For every
(window, tolerance) this replays the controller on each of those curves,
from a fresh stage, and prints the epoch at which AutoDecay would find the
stage stable and the ratio g(t) / g(1) there, which `drop_threshold` is
compared with. A good setting ends the first stage about where the loss
has flattened and separates the stages worth another decay (the ratio well
below the threshold) from the last one (the ratio near 1).

    python benchmarks/autodecay_study.py runs/autodecay-step/step-decay/seed0 \\
        runs/autodecay-step/step-decay/seed1

Runs without a model or data: the curves are the input.
"""

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from keras_lrphase.controllers.auto_decay_controller import (  # noqa: E402
    AutoDecayController,
)
from keras_lrphase.training.epoch_recorder import EpochRecorder  # noqa: E402

WINDOWS = (3, 5, 8)
TOLERANCES = (0.01, 0.02, 0.05, 0.1)


def stages(rows, warmup):
    """The constant-LR stretches of a run, after warmup: lists of losses."""
    out, current, rate = [], [], None
    for row in rows[warmup:]:
        if rate is not None and not math.isclose(row["learning_rate"], rate, rel_tol=1e-6):
            out.append(current)
            current = []
        rate = row["learning_rate"]
        current.append(row["loss"])
    out.append(current)
    return out


def replay(losses, window, tolerance, stability):
    """(epochs into the stage at which it is stable, g(t)/g(1)), or None."""
    controller = AutoDecayController(window=window, tolerance=tolerance,
                                     drop_threshold=0.999999,
                                     stability=stability)
    for epoch, loss in enumerate(losses):
        first = controller.state.first if controller.state.t else loss
        decision = controller.decide(epoch, {"loss": loss})
        if "stable" in decision.events:
            return epoch + 1, controller.smoothed_loss / first
    return None


def _synthetic_run():
    """A run folder whose history.csv is a step-decay run in miniature: 3
    warmup epochs, then 3 stages of 12 epochs whose loss falls towards a
    lower floor after each tenfold cut."""
    import csv
    import tempfile

    from keras_lrphase.training.epoch_recorder import COLUMNS

    folder = tempfile.mkdtemp()
    rows, epoch = [], 0
    for stage, (rate, start, floor) in enumerate(
            ((0.1, 2.3, 1.0), (0.1, 2.0, 1.0), (0.01, 1.0, 0.6),
             (0.001, 0.6, 0.55))):
        for t in range(3 if stage == 0 else 12):
            epoch += 1
            loss = floor + (start - floor) * math.exp(-t / 3)
            rows.append(dict.fromkeys(COLUMNS, "") | {
                "epoch": epoch, "loss": loss, "learning_rate": rate,
                "phase": "warmup" if stage == 0 else "convergence"})
    with open(os.path.join(folder, "history.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return folder


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help="run folders with history.csv")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny setting that runs in seconds, CI's check "
                             "that the script still runs: a synthetic "
                             "three-stage history instead of run folders")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--stability", default="stage,paper",
                        help="comma-separated stability rules to replay")
    args = parser.parse_args()
    if args.smoke:
        args.runs = [_synthetic_run()]
    if not args.runs:
        parser.error("give run folders with history.csv (or --smoke)")
    curves = {run: stages(EpochRecorder.read(os.path.join(run, "history.csv")),
                          args.warmup) for run in args.runs}
    for run, parts in curves.items():
        print(f"{run}: stages of {[len(p) for p in parts]} epochs after "
              f"{args.warmup} warmup epochs")
    print()
    header = "rule  window tolerance | " + " | ".join(
        f"stage {i + 1}: stable at, g/g(1)" for i in range(
            max(len(p) for p in curves.values())))
    print(header)
    for stability in args.stability.split(","):
        for window in WINDOWS:
            for tolerance in TOLERANCES:
                cells = []
                for i in range(max(len(p) for p in curves.values())):
                    found = [replay(parts[i], window, tolerance, stability)
                             for parts in curves.values() if i < len(parts)]
                    cells.append(", ".join(
                        "never" if f is None else f"{f[0]:2d} ep, {f[1]:.3f}"
                        for f in found))
                print(f"{stability:5s} {window:6d} {tolerance:9.2f} | "
                      + " | ".join(cells))

if __name__ == "__main__":
    main()
