"""Kills a training run at random instants and checks each resume.

For each backend and each BackupAndRestore (the package's, and Keras' own
with double_checkpoint=True), runs `tests/kill_resume_worker.py` to the end
once, then again with N SIGKILLs at random moments, and prints how many
runs resumed to exactly the uninterrupted result (weights, optimizer,
controller state, learning rate of every step, decisions), and the errors
of those that did not.

    python benchmarks/kill_resume.py --kills 40 --runs 1
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import test_resume_any_instant as harness  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=40)
    parser.add_argument("--backends", default="tensorflow,jax")
    parser.add_argument("--backups", default="package,keras")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny setting that runs in seconds, CI's check that the script "
                             "still runs (its numbers mean nothing)")
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(kills=1, backends="tensorflow", backups="package")
    for backend in args.backends.split(","):
        for backup in args.backups.split(","):
            folder = tempfile.mkdtemp()
            reference = os.path.join(folder, "reference")
            os.makedirs(reference)
            duration = harness.run_to_completion(reference, backend, backup)
            started = time.monotonic()
            kills, runs, failures = 0, 0, []
            while kills < args.kills:
                interrupted = os.path.join(folder, f"interrupted{runs}")
                os.makedirs(interrupted)
                try:
                    kills += harness.killed_run(
                        interrupted, backend, args.kills - kills, duration / 2,
                        args.seed + runs, backup)
                    harness.compare(reference, interrupted)
                except AssertionError as error:
                    lines = str(error).strip().splitlines() or ["(no message)"]
                    failures.append(lines[-1][:300])
                    kills += 1
                runs += 1
            print(f"{backend:10s} {backup:8s} {kills} kills in {runs} runs, "
                  f"{len(failures)} not resumed exactly, "
                  f"{time.monotonic() - started:.0f} s", flush=True)
            for failure in failures:
                print(f"    {failure}", flush=True)


if __name__ == "__main__":
    main()
