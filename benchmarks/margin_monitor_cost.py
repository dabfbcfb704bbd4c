"""Time of `MarginMonitor` as a share of a training epoch (ResNet-20).

A ResNet-20 (`get_model("resnet20", (32, 32, 3), 10)`, SGD with momentum,
cross-entropy on logits) trains on `--images` random 32x32x3 images in
batches of `--batch-size`; the monitor computes the normalized margins of
`--samples` of them (at the model input) and their quartile statistics.
Measured in one process, after a warm-up of each (so tracing and
compilation are not counted; the one-off cost of the first monitor call,
which compiles its functions, is printed separately):

* the epoch: `model.fit(..., epochs=1)` without the monitor;
* the monitor: its `on_epoch_end` for a monitored epoch;
* `ParameterChangeMonitor`: its two weight copies of a measured epoch.

Each is the median of `--repeats` runs. The share is monitor / epoch; with
`every=k` it is divided by k.

Usage:
    python benchmarks/margin_monitor_cost.py --samples 1000 --images 5000
"""

import argparse
import statistics
import time

import keras
import numpy as np

from keras_lrphase.callbacks.margin_monitor import MarginMonitor
from keras_lrphase.callbacks.parameter_change_monitor import (
    ParameterChangeMonitor,
)
from keras_lrphase.models import get_model


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--margin-batch-size", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny setting that runs in seconds, CI's check that the script "
                             "still runs (its numbers mean nothing)")
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(samples=32, images=64, batch_size=32, margin_batch_size=16, repeats=1)

    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.images, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, args.images)
    keras.utils.set_random_seed(0)
    model = get_model("resnet20", (32, 32, 3), 10)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    def epoch():
        model.fit(x, y, batch_size=args.batch_size, epochs=1, verbose=0)

    epoch()  # warm-up: traces the train step
    epoch_s = timed(epoch, args.repeats)

    monitor = MarginMonitor((x[:args.samples], y[:args.samples]),
                            batch_size=args.margin_batch_size)
    monitor.set_model(model)
    start = time.perf_counter()
    monitor.on_train_begin()
    monitor.on_epoch_end(0, {})
    first_s = time.perf_counter() - start
    logs = {}
    monitor_s = timed(lambda: monitor.on_epoch_end(0, logs), args.repeats)

    change = ParameterChangeMonitor()
    change.set_model(model)
    change.on_train_begin()

    def measured_epoch_overhead():
        change.on_epoch_begin(0)
        change.on_epoch_end(0, {})

    change_s = timed(measured_epoch_overhead, args.repeats)

    print(f"backend: {keras.backend.backend()}; ResNet-20, "
          f"{model.count_params()} parameters")
    print(f"epoch of {args.images} images (batch {args.batch_size}): "
          f"{epoch_s:.2f} s")
    print(f"MarginMonitor on {args.samples} samples (batch "
          f"{args.margin_batch_size}): {monitor_s:.2f} s = "
          f"{100 * monitor_s / epoch_s:.1f}% of the epoch "
          f"(first call, compiling: {first_s:.2f} s)")
    print(f"  margin_median={logs['margin_median']:.4g}, "
          f"margin_mean_iqr={logs['margin_mean_iqr']:.4g}")
    print(f"ParameterChangeMonitor per measured epoch: {change_s * 1e3:.1f} ms"
          f" = {100 * change_s / epoch_s:.2f}% of the epoch")


if __name__ == "__main__":
    main()
