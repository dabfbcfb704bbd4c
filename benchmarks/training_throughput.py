"""Images per second of ResNet-20 training (SGD-momentum) on this machine.

`--model` measures another model of `keras_lrphase.models` (e.g. resnet8).

Trains the CIFAR ResNet-20 on random 32x32x3 images through the package's
`tf.data` training pipeline (normalisation, 4-pixel crops and flips) with
`model.fit`, times a few dozen steps after a warm-up epoch, and prints one
line of JSON. Run on the TensorFlow backend (default) or with
`KERAS_BACKEND=jax`.

    python benchmarks/training_throughput.py [--batch-size 128] [--steps 40]
        [--model resnet20]
"""

import argparse
import json
import os
import time

import keras
import numpy as np

from keras_lrphase.data.pipeline import train_dataset
from keras_lrphase.models import get_model


class _Timer(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40,
                        help="timed optimizer steps (after one warm-up pass)")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--jit-compile", choices=("auto", "true", "false"),
                        default="auto",
                        help="Keras' jit_compile (auto: XLA off on TensorFlow "
                             "CPU, jax.jit on JAX)")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny setting that runs in seconds, CI's check that the script "
                             "still runs (its numbers mean nothing)")
    args = parser.parse_args(argv)
    if args.smoke:
        vars(args).update(batch_size=16, steps=2, warmup_steps=1, model="small-cnn")
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    n = args.batch_size * args.steps
    x = rng.integers(0, 256, (n, 32, 32, 3)).astype("uint8")
    y = rng.integers(0, 10, n).astype("int32")
    mean, std = np.full(3, 0.5, "float32"), np.full(3, 0.25, "float32")
    model = get_model(args.model, (32, 32, 3), 10, weight_decay=1e-4)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile={"auto": "auto", "true": True, "false": False}[
            args.jit_compile],
    )
    warm = train_dataset(x[: args.batch_size * args.warmup_steps],
                         y[: args.batch_size * args.warmup_steps],
                         args.batch_size, mean, std, augment="crop-flip", seed=0)
    model.fit(warm, epochs=1, verbose=0)  # traces and compiles the step
    timer = _Timer()
    ds = train_dataset(x, y, args.batch_size, mean, std, augment="crop-flip",
                       seed=0)
    model.fit(ds, epochs=1, verbose=0, callbacks=[timer])
    result = {
        "model": args.model,
        "backend": keras.backend.backend(),
        "batch_size": args.batch_size,
        "jit_compile": model.jit_compile,
        "timed_steps": args.steps,
        "seconds": round(timer.seconds, 3),
        "images_per_second": round(n / timer.seconds, 1),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
