"""Cost of the Hessian eigenvalue next to a forward pass and a training epoch.

ResNet-20 (CIFAR shapes, 10 classes, random data). Measured in one run:

* one inference forward pass over the Hessian batch (`predict_on_batch`);
* the eigenvalue computation, cold (first call: includes tracing) and warm
  (what a callback pays every epoch after the first), with the iterations
  the solver ran: at initialisation the output layer's top eigenvalue is
  degenerate (near-uniform softmax), so power iteration meets even a
  tolerance of 1e-300 after a few products; the cost of `--iterations`
  products is projected from the measured parts;
* its parts: the prefix forward pass and the per-iteration head product;
* training throughput at `--train-batch-size` and the time of one epoch of
  `--epoch-samples` samples derived from it (a large batch processed as
  sub-batches, as the paper does; a training step on 8192 images at once does
  not fit a CPU machine's memory).

Targets: eigenvalue (warm) <= 1.2x one forward pass over the Hessian batch;
at a Hessian batch of 8192, <= 6% of an epoch.

Usage:
    python benchmarks/hessian_overhead.py --batch-size 8192
"""

import argparse
import statistics
import time

import keras
import numpy as np

from keras_lrphase.backend import autodiff
from keras_lrphase.hessian.estimator import HessianEigenvalueEstimator
from keras_lrphase.models.resnet import resnet20


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8192,
                        help="Hessian batch size (default 8192, the paper's).")
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-batch-size", type=int, default=256)
    parser.add_argument("--train-steps", type=int, default=8)
    parser.add_argument("--epoch-samples", type=int, default=50_000)
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny setting that runs in seconds, CI's check that the script "
                             "still runs (its numbers mean nothing)")
    args = parser.parse_args(argv)
    if args.smoke:
        vars(args).update(batch_size=64, iterations=6, repeats=1, train_batch_size=16, train_steps=1, epoch_samples=256)

    keras.utils.set_random_seed(0)
    model = resnet20()
    model.compile(
        keras.optimizers.SGD(0.1, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch_size, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=args.batch_size)

    # Forward pass, eigenvalue (tolerance 1e-300: it stops only when the
    # estimate repeats exactly) and its prefix part, interleaved so the
    # machine's drift hits all three.
    estimator = HessianEigenvalueEstimator(
        max_iterations=args.iterations, tolerance=1e-300, seed=0
    )
    model.predict_on_batch(x[:8])
    model.predict_on_batch(x)
    start = time.perf_counter()
    result = estimator(model, x, y)
    cold = time.perf_counter() - start
    assert result.restricted, "the estimate must use the restricted head"
    ran = result.iterations
    if ran < 2:
        raise SystemExit(
            f"the solver stopped after {ran} product: no per-iteration cost "
            "to measure")
    restricted = estimator._restricted
    inputs = keras.ops.convert_to_tensor(x)

    def prefix_pass():
        keras.ops.convert_to_numpy(
            estimator._prefix(*restricted.prefix_values(), inputs)
        )

    # The whole model's forward pass through the same compiled path.
    model_forward = autodiff().compile(
        lambda trainable, non_trainable, batch: model.stateless_call(
            trainable, non_trainable, batch, training=False)[0])
    def compiled_pass():
        # Values are read at each pass: on JAX, Keras' predict donates the
        # variables' buffers, so arrays read earlier are no longer valid.
        weights = ([v.value for v in model.trainable_variables],
                   [v.value for v in model.non_trainable_variables])
        keras.ops.convert_to_numpy(model_forward(*weights, inputs))

    compiled_pass()
    forwards, compiled, eigens, prefixes = [], [], [], []
    for _ in range(args.repeats):
        forwards.append(timed(lambda: model.predict_on_batch(x), 1))
        compiled.append(timed(compiled_pass, 1))
        eigens.append(timed(lambda: estimator(model, x, y), 1))
        prefixes.append(timed(prefix_pass, 1))
    forward = statistics.median(forwards)
    forward_compiled = statistics.median(compiled)
    warm = statistics.median(eigens)
    prefix = statistics.median(prefixes)
    per_iteration = max(warm - prefix, 0.0) / ran
    # What `--iterations` products would cost: the prefix pass once, then
    # one head product each.
    projected = prefix + args.iterations * per_iteration

    # Training throughput, and the epoch it implies.
    xt, yt = x[: args.train_batch_size], y[: args.train_batch_size]
    model.train_on_batch(xt, yt)
    step = timed(lambda: model.train_on_batch(xt, yt), args.train_steps)
    images_per_second = args.train_batch_size / step
    epoch = args.epoch_samples / images_per_second

    print(f"backend: {keras.backend.backend()}, Hessian batch {args.batch_size}, "
          f"power iteration on layer {result.layer!r} "
          f"({sum(v.size for v in result.vector)} weights): {ran} iterations "
          f"ran (converged: {result.converged}), {args.iterations} projected")
    rows = [
        ("forward pass over the Hessian batch (predict_on_batch)", forward),
        ("forward pass, compiled stateless_call (same path)", forward_compiled),
        (f"eigenvalue, warm ({ran} iterations, per epoch in a callback)", warm),
        (f"eigenvalue, projected to {args.iterations} iterations", projected),
        ("eigenvalue, cold (first call, with tracing)", cold),
        ("  prefix forward pass (once per estimate)", prefix),
        ("  one head Hessian-vector product", per_iteration),
        (f"training step, batch {args.train_batch_size}", step),
        (f"one epoch of {args.epoch_samples} samples (from throughput)", epoch),
    ]
    for name, seconds in rows:
        print(f"{name:<58s} {seconds:10.4f} s")
    print(f"training throughput: {images_per_second:.1f} images/s")
    print(f"ratio eigenvalue(warm) / forward pass (predict_on_batch): {warm / forward:.3f}  (target <= 1.2)")
    print(f"ratio eigenvalue(warm) / forward pass (same compiled path): {warm / forward_compiled:.3f}  (target <= 1.2)")
    print(f"ratio eigenvalue({args.iterations} iterations) / forward pass (same compiled path): {projected / forward_compiled:.3f}")
    print(f"ratio eigenvalue(cold) / forward pass: {cold / forward:.3f}")
    print(f"ratio eigenvalue(warm) / epoch: {100 * warm / epoch:.2f}%  (target <= 6% at batch 8192)")
    print(f"ratio eigenvalue({args.iterations} iterations) / epoch: {100 * projected / epoch:.2f}%")


if __name__ == "__main__":
    main()
