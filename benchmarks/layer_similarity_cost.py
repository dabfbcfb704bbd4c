"""Time and peak memory of `layer_similarity` on ResNet-20 with CIFAR shapes.

Two ResNet-20s (different random initialisations), their 20 default layers
(19 convolutions and the logits) each, compared on `--images` random
32x32x3 images: a 20 x 20 matrix. Measured in one process, after a warm-up
call on a few images (so tracing is not counted):

* the forward passes alone (`predict_on_batch` over the images, both models),
  the floor of any method that reads activations;
* `layer_similarity` for each method: wall time, the peak resident memory
  (RSS, polled every 10 ms) above the RSS before the call, and the peak of
  the memory NumPy allocates (tracemalloc);
* for scale, the float32 activations of the compared layers if they were
  all kept.

BLAS threads: the SVDs and products run in NumPy's BLAS. On a CPU shared
with other processes (more runnable threads than cores), OpenBLAS' spinning
worker threads can make them tens of times slower; `--blas-threads 1`
(needs threadpoolctl) limits them for the measured calls.

Usage:
    python benchmarks/layer_similarity_cost.py --images 2000 --blas-threads 1
"""

import argparse
import os
import threading
import time
import tracemalloc

import keras
import numpy as np

from keras_lrphase.analysis.layer_similarity import default_layers
from keras_lrphase.analysis.layer_similarity import layer_similarity
from keras_lrphase.models.resnet import resnet20

_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


class PeakRSS:
    """Polls the resident set size in a thread while the block runs."""

    def __enter__(self):
        self.start = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def measure(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    with PeakRSS() as rss:
        start = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - start
    numpy_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, seconds, rss.peak - rss.start, numpy_peak


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--max-rows", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--methods", nargs="+", default=["svcca", "dft_svcca"])
    parser.add_argument("--blas-threads", type=int, default=None,
                        help="Limit NumPy's BLAS threads (needs threadpoolctl).")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny setting that runs in seconds, CI's check that the script "
                             "still runs (its numbers mean nothing)")
    args = parser.parse_args(argv)
    if args.smoke:
        vars(args).update(images=160, max_rows=1024, batch_size=32)
    if args.blas_threads is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.blas_threads, user_api="blas")

    keras.utils.set_random_seed(0)
    model_a = resnet20()
    model_b = resnet20()
    x = np.random.default_rng(0).normal(size=(args.images, 32, 32, 3))
    x = x.astype("float32")
    names = default_layers(model_a)
    per_image = sum(int(np.prod(model_a.get_layer(n).output.shape[1:]))
                    for n in names)
    print(f"backend={keras.backend.backend()} images={args.images} "
          f"layers={len(names)} max_rows={args.max_rows} "
          f"batch_size={args.batch_size} cpus={os.cpu_count()} "
          f"blas_threads={args.blas_threads or 'default'} "
          f"load_average={os.getloadavg()[0]:.1f}")
    print(f"all activations of both models, float32: "
          f"{2 * per_image * args.images * 4 / 2**20:.0f} MiB (not kept)")

    for method in args.methods:  # warm-up: tracing, first-call allocations
        layer_similarity(model_a, model_b, x[:80], method=method,
                         batch_size=args.batch_size)

    def forward():
        for model in (model_a, model_b):
            for start in range(0, len(x), args.batch_size):
                model.predict_on_batch(x[start:start + args.batch_size])

    _, seconds, rss, numpy_peak = measure(forward)
    print(f"forward passes only        : {seconds:7.1f} s")
    for method in args.methods:
        matrix, seconds, rss, numpy_peak = measure(
            lambda: layer_similarity(model_a, model_b, x, method=method,
                                     max_rows=args.max_rows,
                                     batch_size=args.batch_size))
        print(f"layer_similarity {method:<9} : {seconds:7.1f} s, "
              f"peak RSS +{rss / 2**20:.0f} MiB, "
              f"NumPy peak {numpy_peak / 2**20:.0f} MiB, "
              f"matrix {matrix.shape}, diagonal mean "
              f"{np.nanmean(np.diag(matrix)):.3f}")
    print(f"process peak RSS (ru_maxrss): "
          f"{_max_rss_mib():.0f} MiB")


def _max_rss_mib():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
