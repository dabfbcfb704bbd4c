"""Start-up time of `keras-lrphase --help` against importing Keras.

Runs, in interleaved rounds (so drifts in machine load hit both alike), the
command `python -m keras_lrphase --help` (what the `keras-lrphase`
script runs) and `python -c "import keras"` with the backend of
`KERAS_BACKEND` (TensorFlow by default). Prints the median wall seconds of
each and their ratio as one line of JSON, with `keras-lrphase train
--dataset digts` (a mistyped value, refused before a backend loads).
Target: both under 2 s, so well below the seconds a backend takes to load.

    python benchmarks/cli_startup.py [--rounds 5]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "help": [sys.executable, "-m", "keras_lrphase", "--help"],
    # A mistyped option value: refused before a backend is loaded.
    "bad_dataset": [sys.executable, "-m", "keras_lrphase", "train",
                    "--dataset", "digts"],
    "import_keras": [sys.executable, "-c", "import keras"],
}


def _seconds(command):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    start = time.perf_counter()
    status = subprocess.run(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL).returncode
    if status != (2 if "digts" in command else 0):
        raise SystemExit(f"{' '.join(command)} exited with {status}")
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny setting that runs in seconds, CI's check that the script "
                             "still runs (its numbers mean nothing)")
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(rounds=1)
    if args.rounds < 1:
        parser.error(f"argument --rounds must be >= 1, got {args.rounds}")
    times = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, command in COMMANDS.items():
            times[name].append(_seconds(command))
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(json.dumps({
        "backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "rounds": args.rounds,
        "help_s": round(medians["help"], 3),
        "bad_dataset_s": round(medians["bad_dataset"], 3),
        "import_keras_s": round(medians["import_keras"], 3),
        "help_over_import_keras": round(medians["help"] / medians["import_keras"], 3),
    }))


if __name__ == "__main__":
    main()
