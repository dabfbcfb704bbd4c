"""Relative error of the eigenvalue against the exact one, per product count.

Heads whose Hessian is known in closed form (softmax cross-entropy on a Dense
layer: H = mean_n (diag(p) - p p^T) kron (a a^T), a = [h; 1]):

* `resnet20`: the 64 -> 10 output layer of a ResNet-20 (650 weights) on
  `--samples` random CIFAR-shaped images, features from the network with
  BatchNorm on batch statistics (`training=True`);
* `synthetic`: a 32 -> 10 softmax head on Gaussian features.

For k = 1 .. `--max-products` Hessian-vector products, power iteration and
Lanczos each run exactly k products from the same random start; the table is
|estimate - exact| / exact.

Usage:
    python benchmarks/hessian_accuracy.py
"""

import argparse

import keras
import numpy as np

from keras_lrphase.hessian.estimator import HessianEigenvalueEstimator
from keras_lrphase.models.resnet import resnet20


def closed_form_top_eigenvalue(features, logits):
    a = np.concatenate([features, np.ones((len(features), 1))], 1).astype(np.float64)
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    c, d = p.shape[1], a.shape[1]
    hessian = np.zeros((c * d, c * d))
    for i in range(len(a)):
        hessian += np.kron(np.diag(p[i]) - np.outer(p[i], p[i]), np.outer(a[i], a[i]))
    return float(np.linalg.eigvalsh(hessian / len(a))[-1])


def heads(samples):
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    model = resnet20()
    x = rng.normal(size=(samples, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=samples)
    head = model.layers[-1]
    # Batch statistics (training=True): at initialisation the BatchNorm
    # moving statistics are not yet those of the data, and in inference mode
    # the logits saturate the softmax (an eigenvalue ~1e-5, float32 noise).
    features = keras.ops.convert_to_numpy(
        keras.Model(model.input, head.input)(x, training=True))
    logits = features @ head.kernel.numpy() + head.bias.numpy()
    yield "resnet20", model, x, y, closed_form_top_eigenvalue(features, logits), True

    inputs = keras.Input((32,))
    outputs = keras.layers.Dense(
        10, kernel_initializer=keras.initializers.RandomNormal(stddev=0.3))(inputs)
    synthetic = keras.Model(inputs, outputs)
    xs = rng.normal(size=(samples, 32)).astype("float32")
    ys = rng.integers(0, 10, size=samples)
    yield "synthetic", synthetic, xs, ys, closed_form_top_eigenvalue(
        xs, synthetic.predict(xs, verbose=0)), False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--max-products", type=int, default=20)
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny setting that runs in seconds, CI's check that the script "
                             "still runs (its numbers mean nothing)")
    args = parser.parse_args(argv)
    if args.smoke:
        vars(args).update(samples=64, max_products=2)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for name, model, x, y, exact, training in heads(args.samples):
        print(f"\n{name}: exact top eigenvalue {exact:.6g}")
        print(f"{'products':>8s} {'power':>12s} {'lanczos':>12s}")
        first_below = {}
        for k in range(1, args.max_products + 1):
            errors = {}
            for method in ("power", "lanczos"):
                estimator = HessianEigenvalueEstimator(
                    loss=loss, method=method, max_iterations=k,
                    tolerance=1e-300, training=training, seed=0)
                value = estimator(model, x, y).value
                errors[method] = abs(value - exact) / exact
                if errors[method] <= 1e-3:
                    first_below.setdefault(method, k)
            print(f"{k:8d} {errors['power']:12.2e} {errors['lanczos']:12.2e}")
        for method in ("power", "lanczos"):
            print(f"{method}: relative error <= 1e-3 after "
                  f"{first_below.get(method, 'more than ' + str(args.max_products))} products")


if __name__ == "__main__":
    main()
