"""The effect of momentum correction at learning-rate cuts, measured.

Keras' SGD keeps the learning rate inside its velocity, so after a cut the
old velocity keeps the old step size for about 1 / (1 - momentum) steps and
the training loss rises for a few epochs. For each run of a preset that
cuts its learning rate (step decay, two-phase), this trains it with and
without `momentum_correction` (same seed) and prints, per cut, the training
loss of the epoch before the cut and the highest loss of the 3 epochs
after, then the best and final validation accuracy.

    python benchmarks/momentum_correction.py --preset demo --only large-batch,two-phase --seeds 3

Reads the results of earlier runs instead of training with
`--from-runs FOLDER` (a `compare` output with `<run>/seed<N>` folders, the
runs labelled `X` and `X + correction`, as in `cifar10-momentum-cpu`).
"""

import argparse
import dataclasses
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from keras_lrphase.presets import get_preset  # noqa: E402
from keras_lrphase.training.epoch_recorder import EpochRecorder  # noqa: E402
from keras_lrphase.training.runner import run_training  # noqa: E402

AFTER = 3


def cuts(rows):
    """(epoch before the cut, loss there, max loss of the next epochs)."""
    out = []
    for i in range(1, len(rows)):
        if rows[i]["learning_rate"] < rows[i - 1]["learning_rate"] * 0.99 and (
                rows[i - 1]["phase"] != "warmup"):
            after = [r["loss"] for r in rows[i:i + AFTER]]
            out.append((i, rows[i - 1]["loss"], max(after)))
    return out


def summarize(label, rows):
    best = max(r["val_accuracy"] for r in rows)
    parts = [f"{e}: {before:.3f} -> {peak:.3f}" for e, before, peak in cuts(rows)]
    return (f"{label:32s} best {100 * best:.2f}%  final "
            f"{100 * rows[-1]['val_accuracy']:.2f}%  cuts (epoch: loss before "
            f"-> max of next {AFTER}) " + "; ".join(parts))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--only", default="large-batch,two-phase")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--from-runs", default=None)
    parser.add_argument("--epochs", type=int, default=None,
                        help="override the preset's epoch budget")
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--test-size", type=int, default=None)
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny setting that runs in seconds, CI's check that the script "
                             "still runs (its numbers mean nothing)")
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(preset="demo", only="large-batch", seeds=1, epochs=4, test_size=100)
    if args.from_runs:
        for label in sorted(os.listdir(args.from_runs)):
            folder = os.path.join(args.from_runs, label)
            if not os.path.isdir(folder):
                continue
            for seed in sorted(os.listdir(folder)):
                path = os.path.join(folder, seed, "history.csv")
                if os.path.exists(path):
                    print(summarize(f"{label} ({seed})", EpochRecorder.read(path)))
        return
    preset = get_preset(args.preset)
    wanted = args.only.split(",")
    out = tempfile.mkdtemp()
    for run, config in preset.configs(epochs=args.epochs,
                                      data_dir=args.data_dir,
                                      seeds=tuple(range(args.seeds))):
        if run.label not in wanted:
            continue
        sizes = {k: v for k, v in (("train_size", args.train_size),
                                   ("test_size", args.test_size)) if v}
        for correct in (False, True):
            config = dataclasses.replace(config, momentum_correction=correct,
                                         **sizes)
            folder = os.path.join(out, f"{run.label}-{correct}-{config.seed}")
            run_training(config, folder, verbose=0, log=None)
            label = f"{run.label}{' + correction' if correct else ''} (seed {config.seed})"
            print(summarize(label, EpochRecorder.read(os.path.join(folder, "history.csv"))),
                  flush=True)


if __name__ == "__main__":
    main()
