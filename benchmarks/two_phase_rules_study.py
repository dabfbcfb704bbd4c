"""Replays the two-phase plateau and decay rules on recorded runs.

The study behind the defaults of `TwoPhaseController`'s robust rules
(`plateau_rule="flat"` with `excursion_threshold`, `decay_rule=
"significant"` with `decay_threshold`). Its input is the run folders of
`keras-lrphase compare` (each with `history.csv` and `summary.json`,
eigenvalue logged every epoch), so it trains nothing.

1. Plateaus. Until its first learning-rate change after the warmup, a run
   trains at one constant rate whatever rule it uses, so the loss curve of
   that stretch is what any plateau rule would have seen. For each run and
   each rule (the paper's, and "flat" at each threshold) it prints the
   epoch at which the plateau would be detected and the phase would
   switch, the loss there, and whether the loss was then still above the
   lowest loss reached before the largest rise after the warmup (the
   switch falls inside an excursion).
2. Decays. For every convergence-phase epoch of the runs that used the
   paper's decay rule, the rises of the loss and of the eigenvalue since
   the previous epoch at the same rate, in units of their typical
   epoch-to-epoch change there (the median absolute change over the
   previous `--window` changes at that rate, as decay rule "significant"
   measures it). It prints, per run, the paper's decays with these ratios,
   and how many of them each `decay_threshold` would keep (a replay is
   exact only up to the first decay it drops: the run differs from there).

    python benchmarks/two_phase_rules_study.py runs/cifar10-excursion-cpu \\
        runs/cifar10-cpu --thresholds 0.05,0.1,0.2 --decay-thresholds 0.5,1,2

Every argument is a run folder or a folder holding run folders.
"""

import argparse
import json
import math
import os
import sys
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from keras_lrphase.controllers.two_phase_controller import (  # noqa: E402
    TwoPhaseController,
)
from keras_lrphase.training.epoch_recorder import EpochRecorder  # noqa: E402


def run_folders(paths):
    """Every folder below `paths` holding history.csv and summary.json."""
    found = []
    for path in paths:
        for folder, _, files in sorted(os.walk(path)):
            if "history.csv" in files and "summary.json" in files:
                found.append(folder)
    return found


def read_run(folder):
    rows = EpochRecorder.read(os.path.join(folder, "history.csv"),
                              skip_broken=True)
    with open(os.path.join(folder, "summary.json")) as f:
        summary = json.load(f)
    return rows, summary


def constant_stretch(rows, warmup):
    """The losses of the epochs up to the first learning-rate change after
    the warmup (all rows, warmup included, so indices are epoch indices)."""
    rates = [r["learning_rate"] for r in rows]
    end = len(rows)
    for i in range(warmup + 1, len(rows)):
        if not math.isclose(rates[i], rates[warmup], rel_tol=1e-6):
            end = i
            break
    return [r["loss"] for r in rows[:end]]


def excursion(losses, warmup):
    """(best index, peak index, first index back below best) of the largest
    rise after the warmup above the lowest loss before it, or None."""
    largest = None
    best_index = None
    for i in range(warmup, len(losses)):
        if best_index is None or losses[i] < losses[best_index]:
            best_index = i
            continue
        rise = losses[i] - losses[best_index]
        if largest is None or rise > largest[0]:
            largest = (rise, best_index, i)
    if largest is None:
        return None
    _, best, peak = largest
    back = next((i for i in range(peak, len(losses))
                 if losses[i] < losses[best]), None)
    return best, peak, back


def replay_plateau(losses, config, rule, threshold):
    """(plateau index, switch index) of `rule` on `losses`, or Nones."""
    options = dict(warmup_epochs=config["warmup_epochs"],
                   plateau_patience=config.get("plateau_patience"),
                   min_delta=config.get("min_delta", 0.0),
                   extra_epochs_fraction=config.get("extra_epochs_fraction",
                                                    1 / 3),
                   plateau_rule=rule)
    if rule == "flat":
        options["excursion_threshold"] = threshold
    controller = TwoPhaseController(config["epochs"], **options)
    for epoch, loss in enumerate(losses):
        if controller.plateau_epoch is not None:
            break
        controller.step(epoch, loss, 1.0)
    return controller.plateau_epoch, controller.switch_epoch


def plateau_table(runs, thresholds):
    print("1. Plateaus on the constant-rate stretch after the warmup "
          "(epochs from 1; * = the switch falls while the loss is above "
          "its pre-excursion best)")
    rules = [("paper", None)] + [("flat", t) for t in thresholds]
    header = ["run", "excursion best/peak/back"] + [
        "paper" if r == "paper" else f"flat {t:g}" for r, t in rules]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for folder, (rows, summary) in runs.items():
        config = summary["config"]
        if config.get("schedule") not in ("two-phase", "step", "cosine"):
            continue
        warmup = config["warmup_epochs"]
        losses = constant_stretch(rows, warmup)
        found = excursion(losses, warmup)
        shown = "-" if found is None else "/".join(
            "-" if i is None else str(i + 1) for i in found)
        cells = [folder, shown]
        for rule, threshold in rules:
            plateau, switch = replay_plateau(losses, config, rule, threshold)
            if plateau is None:
                cells.append(f"none in {len(losses)}")
                continue
            inside = (found is not None and switch < len(losses)
                      and losses[switch] > losses[found[0]]
                      and switch >= found[1])
            cells.append(f"{plateau + 1}/{switch + 1}{'*' if inside else ''}")
        print("| " + " | ".join(cells) + " |")
    print()


def typical_change(values):
    changes = sorted(abs(b - a) for a, b in zip(values, values[1:]))
    if not changes:
        return math.nan
    middle = len(changes) // 2
    if len(changes) % 2:
        return changes[middle]
    return (changes[middle - 1] + changes[middle]) / 2


def decay_table(runs, window, thresholds):
    print("2. The paper's decays: rises over the typical epoch-to-epoch "
          f"change (median of the last {window} changes at that rate)")
    for folder, (rows, summary) in runs.items():
        config = summary["config"]
        if (config.get("schedule") != "two-phase"
                or config.get("decay_rule") != "paper"):
            continue
        switch = summary.get("exploration_epochs")
        if switch is None:
            print(f"{folder}: no switch")
            continue
        decays = set(summary.get("decay_epochs") or [])
        recent_f, recent_h, reference = [], [], None
        found = []
        for row in rows[switch - 1:]:
            epoch = row["epoch"]
            f, h = row["loss"], row["hessian_max_eigenvalue"]
            if not (math.isfinite(f) and math.isfinite(h)):
                continue
            if reference is not None and epoch in decays:
                f0, h0 = reference
                s_f, s_h = typical_change(recent_f), typical_change(recent_h)
                found.append((epoch, (f - f0) / s_f if s_f else math.inf,
                              (h - h0) / s_h if s_h else math.inf,
                              len(recent_f) - 1))
                recent_f, recent_h, reference = [], [], None
                continue
            recent_f = (recent_f + [f])[-(window + 1):]
            recent_h = (recent_h + [h])[-(window + 1):]
            reference = (f, h)
        kept = {k: sum(1 for _, rf, rh, n in found
                       if n >= 2 and rf > k and rh > k) for k in thresholds}
        first_dropped = {k: next((e for e, rf, rh, n in found
                                  if not (n >= 2 and rf > k and rh > k)), None)
                         for k in thresholds}
        print(f"{folder}: switch after epoch {switch}, {len(found)} decays")
        for epoch, rf, rh, n in found:
            print(f"    after epoch {epoch:3d}: loss rise {rf:6.2f}, "
                  f"eigenvalue rise {rh:6.2f} typical changes "
                  f"({n} changes at that rate)")
        print("    kept by decay_threshold: " + ", ".join(
            f"{k:g}: {kept[k]} (first dropped after epoch "
            f"{first_dropped[k]})" for k in thresholds))
    print()


def write_smoke_run(folder):
    """A recorded run to replay, without training: 40 epochs of a scripted
    loss (warmup, an excursion, a descent, a noisy tail) and eigenvalue,
    with the learning rates and decays the paper's rules give them."""
    import csv
    import random

    rng = random.Random(0)
    losses = ([2.6, 2.45, 2.33, 2.30, 2.6, 2.9, 2.8, 2.7, 2.5, 2.4, 2.35]
              + [2.25 - 0.05 * i for i in range(12)]
              + [1.7 + rng.uniform(-0.02, 0.02) for _ in range(17)])
    eigenvalues = [1.0 + rng.uniform(-0.2, 0.2) for _ in losses]
    config = dict(schedule="two-phase", epochs=len(losses), warmup_epochs=3,
                  plateau_patience=3, min_delta=0.01,
                  extra_epochs_fraction=1 / 3, decay_factor=0.5,
                  plateau_rule="paper", decay_rule="paper")
    controller = TwoPhaseController(
        config["epochs"], warmup_epochs=3, plateau_patience=3, min_delta=0.01,
        plateau_rule="paper", decay_rule="paper")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "history.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "loss", "learning_rate",
                         "hessian_max_eigenvalue"])
        for epoch, (loss, h) in enumerate(zip(losses, eigenvalues)):
            rate = 0.4 * controller.state.lr_factor
            writer.writerow([epoch + 1, loss, rate, h])
            controller.step(epoch, loss, h)
    summary = dict(config=config,
                   decay_epochs=[e + 1 for e in controller.decay_epochs],
                   exploration_epochs=controller.switch_epoch + 1)
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump(summary, f)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*")
    parser.add_argument("--smoke", action="store_true",
                        help="replay a scripted 40-epoch run written to a "
                             "temporary folder (no training)")
    parser.add_argument("--thresholds", default="0.05,0.1,0.2",
                        help="excursion thresholds of rule 'flat' to replay")
    parser.add_argument("--decay-thresholds", default="0.5,1,2")
    parser.add_argument("--window", type=int, default=5)
    args = parser.parse_args()
    # Replays of runs that learned nothing at first repeat the controller's
    # warning about it; the tables say what the replays found.
    warnings.filterwarnings("ignore", message=".*nothing seems to have been learned")
    if args.smoke:
        import tempfile
        args.folders = [tempfile.mkdtemp()]
        write_smoke_run(os.path.join(args.folders[0], "scripted"))
    elif not args.folders:
        parser.error("give run folders, or --smoke")
    runs = {folder: read_run(folder) for folder in run_folders(args.folders)}
    if not runs:
        parser.error(f"no run folders (history.csv + summary.json) in "
                     f"{args.folders}")
    plateau_table(runs, [float(t) for t in args.thresholds.split(",")])
    decay_table(runs, args.window,
                [float(t) for t in args.decay_thresholds.split(",")])


if __name__ == "__main__":
    main()
