"""Two Horovod ranks against one process on the same global batch.

Run in an environment with Horovod (tests/test_horovod.py says how to
build one); this script launches both configurations itself and prints,
from one run:

* images/s of training (the time from `on_epoch_begin` to the first
  `on_epoch_end`, global images per epoch), 2 ranks / 1 process;
* the epoch-end decision: a `HessianMonitor` estimate on each worker's own
  Hessian batch (a fixed number of power iterations, so both do the same
  work per sample; tolerance 1e-12) followed by the reduction (`HorovodReducer`, one
  allgather), in seconds and as a share of the epoch; the reduction alone;
* the ratios.

Per-epoch numbers are medians over the epochs after the first (which
includes tracing). Both configurations see the same global batch and the
same global Hessian batch: each rank trains on half of it and estimates on
half of it.

Usage:
    python benchmarks/distributed_overhead.py [--samples 4096]
        [--batch-size 256] [--hessian-batch-size 1024] [--epochs 4]
"""

import argparse
import importlib.util
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4096,
                        help="global training images per epoch")
    parser.add_argument("--batch-size", type=int, default=256,
                        help="global batch (each of the 2 ranks: half)")
    parser.add_argument("--hessian-batch-size", type=int, default=1024,
                        help="global Hessian batch (each rank: half)")
    parser.add_argument("--iterations", type=int, default=10,
                        help="power iterations per estimate (all run)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny setting that runs in seconds, CI's check "
                             "that the script still runs (its numbers mean "
                             "nothing); without Horovod, the one-process "
                             "configuration only")
    parser.add_argument("--role", choices=["launch", "single", "rank"],
                        default="launch", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.smoke:
        vars(args).update(samples=64, batch_size=16, hessian_batch_size=16,
                          iterations=2, epochs=2)
    return args


def worker(args):
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    workers, rank = 1, 0
    if args.role == "rank":
        import horovod.tensorflow as hvd

        hvd.init()
        workers, rank = hvd.size(), hvd.rank()
        # The cores are shared between the ranks.
        tf.config.threading.set_intra_op_parallelism_threads(
            max(1, (os.cpu_count() or 1) // workers))
    import keras

    import keras_lrphase as lrp
    from keras_lrphase.distributed import default_reducer
    from keras_lrphase.distributed import horovod as lrp_hvd
    from keras_lrphase.distributed.reduction import MetricReducer
    from keras_lrphase.models.small import small_cnn

    class TimedReducer(MetricReducer):
        def __init__(self, inner):
            self.inner, self.seconds = inner, []

        @property
        def is_chief(self):
            return self.inner.is_chief

        @property
        def world_size(self):
            return self.inner.world_size

        def reduce_mean(self, values):
            start = time.perf_counter()
            out = self.inner.reduce_mean(values)
            self.seconds.append(time.perf_counter() - start)
            return out

    class Clock(keras.callbacks.Callback):
        """Timestamps; one before the decision, one after it."""

        def __init__(self, marks, name):
            super().__init__()
            self.marks, self.name = marks, name

        def on_epoch_begin(self, epoch, logs=None):
            if self.name == "before":
                self.marks.setdefault("begin", []).append(time.perf_counter())

        def on_epoch_end(self, epoch, logs=None):
            self.marks.setdefault(self.name, []).append(time.perf_counter())

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.samples, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=args.samples)
    share = args.samples // workers
    x, y = x[rank * share:(rank + 1) * share], y[rank * share:(rank + 1) * share]
    hessian = args.hessian_batch_size // workers
    keras.utils.set_random_seed(0)
    model = small_cnn((32, 32, 3), 10)
    optimizer = lrp.LARS(0.1, momentum=0.9)
    if workers > 1:
        optimizer = lrp_hvd.DistributedOptimizer(optimizer)
    model.compile(optimizer,
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False)
    reducer = TimedReducer(default_reducer())
    monitor = lrp.HessianMonitor((x[:hessian], y[:hessian]), seed=0,
                                 reducer=reducer, method="power",
                                 max_iterations=args.iterations, tolerance=1e-12)
    marks = {}
    callbacks = [Clock(marks, "before"), monitor, Clock(marks, "after")]
    if workers > 1:
        callbacks.insert(0, lrp_hvd.BroadcastGlobalVariablesCallback(0))
    model.fit(x, y, batch_size=args.batch_size // workers, epochs=args.epochs,
              shuffle=False, verbose=0, callbacks=callbacks)
    train = [e - b for b, e in zip(marks["begin"], marks["before"])][1:]
    decision = [a - b for b, a in zip(marks["before"], marks["after"])][1:]
    result = {
        "workers": workers,
        "train_s": statistics.median(train),
        "decision_s": statistics.median(decision),
        "reduce_s": statistics.median(reducer.seconds[1:]),
        "images_per_s": args.samples / statistics.median(train),
        "iterations": int(monitor.last_result.iterations),
        "reducer": type(reducer.inner).__name__,
    }
    result["decision_share"] = result["decision_s"] / (
        result["train_s"] + result["decision_s"])
    with open(os.path.join(args.out, f"{args.role}{rank}.json"), "w") as f:
        json.dump(result, f)


def launch(args, argv):
    out = tempfile.mkdtemp()
    script = os.path.abspath(__file__)
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    common = [script, *argv, "--out", out]
    subprocess.run([sys.executable, *common, "--role", "single"], env=env,
                   check=True)
    if args.smoke and importlib.util.find_spec("horovod") is None:
        single = json.loads(pathlib.Path(os.path.join(out, "single0.json")).read_text())
        shutil.rmtree(out)
        print(f"smoke run: 1 process {single['images_per_s']:.0f} images/s; "
              "Horovod is not installed, so the 2-rank run is skipped (the "
              "horovod job of .ci/run runs it)")
        return
    horovodrun = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    if not os.path.exists(horovodrun):
        horovodrun = shutil.which("horovodrun") or "horovodrun"
    subprocess.run([horovodrun, "-np", "2", "-H", "localhost:2", "--gloo",
                    sys.executable, *common, "--role", "rank"], env=env,
                   check=True)
    single = json.loads(pathlib.Path(os.path.join(out, "single0.json")).read_text())
    ranks = [json.loads(pathlib.Path(os.path.join(out, f"rank{r}.json")).read_text()) for r in (0, 1)]
    shutil.rmtree(out)
    # The slower rank sets the pace.
    two = {k: max(r[k] for r in ranks) for k in
           ("train_s", "decision_s", "reduce_s", "decision_share")}
    two["images_per_s"] = args.samples / two["train_s"]
    print(f"global batch {args.batch_size}, global Hessian batch "
          f"{args.hessian_batch_size}, {args.samples} images/epoch, "
          f"{single['iterations']} power iterations; reducers: 1 process "
          f"{single['reducer']}, 2 ranks {ranks[0]['reducer']}")
    print(f"{'':24}{'1 process':>12}{'2 ranks':>12}{'ratio':>8}")
    rows = [("images/s", "images_per_s", "{:12.0f}"),
            ("train time/epoch (s)", "train_s", "{:12.3f}"),
            ("decision (s)", "decision_s", "{:12.3f}"),
            ("  of which reduce (s)", "reduce_s", "{:12.5f}"),
            ("decision share", "decision_share", "{:12.1%}")]
    for label, key, fmt in rows:
        ratio = two[key] / single[key] if single[key] else float("nan")
        print(f"{label:24}{fmt.format(single[key])}{fmt.format(two[key])}"
              f"{ratio:8.2f}")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    if args.role == "launch":
        launch(args, argv)
    else:
        worker(args)


if __name__ == "__main__":
    main()
