"""Seconds to the Hessian spectrum: the package against PyHessian's algorithms.

On one ResNet-20 (random initial weights, seed 0, BatchNorm in inference
mode) and the same `--samples` random CIFAR-shaped images, it times

* the package on the configured Keras backend (`HessianOperator`, Lanczos
  `top_hessian_eigenvalues`, Hutch++ `hessian_trace`, SLQ
  `hessian_density`), and
* a reference written from the PyHessian paper (Yao et al., 2020) in torch
  on the same weights: double-backward Hessian-vector products, power
  iteration with deflation stopped when the eigenvalue changes by less than
  the relative tolerance, Hutchinson's trace, and stochastic Lanczos
  quadrature. (PyHessian itself is GPL-3 and not used here.)

for four tasks: the top eigenvalue at relative tolerance 1e-3, the top 5,
a trace of `--trace-probes` products and a density of `--density-steps`
Lanczos steps. It prints each time and the ratio package / reference
(below 1: the package is faster), all measured in this run, plus the cost
of one Hessian-vector product over one gradient on each side. The two
top eigenvalues must agree (the reference computes the same function:
its loss is checked against Keras' first).

Usage:
    KERAS_BACKEND=jax python benchmarks/hessian_spectrum.py --samples 1024
    python benchmarks/hessian_spectrum.py --smoke   # a ResNet-8 on 8x8 images
"""

import argparse
import time

import keras
import numpy as np

from keras_lrphase.backend import keras_compat
from keras_lrphase.hessian import HessianOperator
from keras_lrphase.hessian import hessian_density
from keras_lrphase.hessian import hessian_trace
from keras_lrphase.hessian import top_hessian_eigenvalues
from keras_lrphase.models.resnet import cifar_resnet

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# -- the reference: a torch function of the Keras graph's weights ------------
class TorchReference:
    """The Keras model's inference-mode loss as a torch function of its
    trainable weights (a list of float32 tensors in Keras' order)."""

    def __init__(self, model, x, y):
        import torch

        self.torch = torch
        self.model = model
        self.x = torch.tensor(np.transpose(x, (0, 3, 1, 2)).copy())
        self.y = torch.tensor(np.asarray(y), dtype=torch.long)
        self.params = [torch.tensor(keras.ops.convert_to_numpy(v),
                                    requires_grad=True)
                       for v in model.trainable_variables]
        self._index = {id(v): i for i, v in enumerate(model.trainable_variables)}
        self.graph = keras_compat.functional_graph(model)

    def _weight(self, variable, params):
        return params[self._index[id(variable)]]

    def _layer(self, layer, inputs, params):
        F = self.torch.nn.functional
        name = type(layer).__name__
        if name == "Conv2D":
            x = inputs[0]
            kernel = self._weight(layer.kernel, params).permute(3, 2, 0, 1)
            stride = layer.strides[0]
            size, k = x.shape[-1], layer.kernel_size[0]
            if layer.padding == "same":
                out = -(-size // stride)
                total = max((out - 1) * stride + k - size, 0)
                x = F.pad(x, (total // 2, total - total // 2,
                              total // 2, total - total // 2))
            bias = (self._weight(layer.bias, params) if layer.use_bias
                    else None)
            return F.conv2d(x, kernel, bias, stride=stride)
        if name == "BatchNormalization":
            shape = (1, -1, 1, 1) if inputs[0].ndim == 4 else (1, -1)
            mean = self.torch.tensor(
                keras.ops.convert_to_numpy(layer.moving_mean)).reshape(shape)
            var = self.torch.tensor(
                keras.ops.convert_to_numpy(layer.moving_variance)).reshape(shape)
            gamma = self._weight(layer.gamma, params).reshape(shape)
            beta = self._weight(layer.beta, params).reshape(shape)
            return (inputs[0] - mean) / self.torch.sqrt(var + layer.epsilon) \
                * gamma + beta
        if name == "Activation":
            return F.relu(inputs[0])
        if name == "Add":
            return inputs[0] + inputs[1]
        if name == "GlobalAveragePooling2D":
            return inputs[0].mean(dim=(2, 3))
        if name == "Dense":
            return inputs[0] @ self._weight(layer.kernel, params) \
                + self._weight(layer.bias, params)
        if hasattr(layer, "filters") and hasattr(layer, "strides"):
            # The parameter-free shortcut (option A): subsample, pad channels.
            x = inputs[0][:, :, ::layer.strides, ::layer.strides]
            extra = layer.filters - x.shape[1]
            return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))
        raise NotImplementedError(f"layer {layer.name!r} ({name})")

    def loss(self, params):
        cache = {}

        def value(tensor):
            key = id(tensor)
            if key not in cache:
                produced = keras_compat.producing_call(tensor)
                if produced is None or isinstance(produced[0],
                                                  keras.layers.InputLayer):
                    cache[key] = self.x
                else:
                    layer, inputs = produced
                    cache[key] = self._layer(
                        layer, [value(t) for t in inputs], params)
            return cache[key]

        logits = value(keras.tree.flatten(self.graph.output)[0])
        return self.torch.nn.functional.cross_entropy(logits, self.y)

    def gradient(self):
        loss = self.loss(self.params)
        return self.torch.autograd.grad(loss, self.params)

    def hvp(self, vectors):
        # PyHessian's product: the gradient with create_graph, then the
        # gradient of <g, v>.
        loss = self.loss(self.params)
        grads = self.torch.autograd.grad(loss, self.params, create_graph=True)
        return self.torch.autograd.grad(grads, self.params, vectors)


def _dot(a, b):
    return sum(float((x * y).sum()) for x, y in zip(a, b))


def _normalise(v):
    norm = np.sqrt(_dot(v, v))
    return [x / norm for x in v]


def reference_top(ref, k, tolerance, max_iterations, rng):
    """Power iteration with deflation (PyHessian's `eigenvalues`)."""
    torch = ref.torch
    values, vectors, products = [], [], 0
    for _ in range(k):
        v = _normalise([torch.tensor(rng.standard_normal(p.shape),
                                     dtype=torch.float32) for p in ref.params])
        value = None
        for _ in range(max_iterations):
            for u in vectors:  # deflation: orthogonal to those found
                c = _dot(v, u)
                v = [a - c * b for a, b in zip(v, u)]
            v = _normalise(v)
            hv = ref.hvp(v)
            products += 1
            new = _dot(hv, v)
            v = _normalise(hv)
            if value is not None and abs(new - value) / (abs(value) + 1e-6) \
                    < tolerance:
                value = new
                break
            value = new
        values.append(value)
        vectors.append(v)
    return values, products


def reference_trace(ref, probes, rng):
    """Hutchinson's estimator with Rademacher probes (PyHessian's `trace`)."""
    torch = ref.torch
    samples = []
    for _ in range(probes):
        v = [torch.tensor(rng.choice([-1.0, 1.0], size=p.shape),
                          dtype=torch.float32) for p in ref.params]
        samples.append(_dot(ref.hvp(v), v))
    return float(np.mean(samples))


def reference_density(ref, steps, rng):
    """One probe of stochastic Lanczos quadrature (PyHessian's `density`),
    with full reorthogonalisation."""
    torch = ref.torch
    v = _normalise([torch.tensor(rng.choice([-1.0, 1.0], size=p.shape),
                                 dtype=torch.float32) for p in ref.params])
    basis, alphas, betas = [v], [], []
    for i in range(steps):
        w = list(ref.hvp(basis[-1]))
        alpha = _dot(w, basis[-1])
        alphas.append(alpha)
        for u in basis:  # reorthogonalise
            c = _dot(w, u)
            w = [a - c * b for a, b in zip(w, u)]
        beta = np.sqrt(_dot(w, w))
        if i == steps - 1 or beta < 1e-10:
            break
        betas.append(beta)
        basis.append([a / beta for a in w])
    tridiagonal = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
    nodes, vectors = np.linalg.eigh(tridiagonal)
    return nodes, vectors[0] ** 2


def _seconds(function, repeat=1):
    best = np.inf
    for _ in range(repeat):
        started = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - started)
    return best, result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--trace-probes", type=int, default=100)
    parser.add_argument("--density-steps", type=int, default=100)
    parser.add_argument("--tolerance", type=float, default=1e-3)
    parser.add_argument("--max-iterations", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch's intra-op threads")
    parser.add_argument("--smoke", action="store_true",
                        help="a ResNet-8 on 16 8x8 images, few products")
    args = parser.parse_args(argv)
    if args.smoke:
        args.samples, args.batch_size, args.depth = 16, 16, 8
        args.image_size, args.k = 8, 2
        args.trace_probes, args.density_steps = 6, 5

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    keras.utils.set_random_seed(0)
    model = cifar_resnet(args.depth, (args.image_size, args.image_size, 3))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.samples, args.image_size, args.image_size, 3)
                   ).astype("float32")
    y = rng.integers(0, 10, size=args.samples)
    import torch

    # Both sides get `--threads` intra-op threads: torch's OpenMP workers
    # spin against TensorFlow's on a small machine when each takes every
    # core. (JAX's XLA CPU client keeps its own pool.)
    torch.set_num_threads(args.threads)
    ref = TorchReference(model, x, y)
    keras_loss = float(keras.ops.convert_to_numpy(LOSS(y, model(x))))
    torch_loss = float(ref.loss(ref.params).detach())
    if abs(keras_loss - torch_loss) > 1e-4 * max(1.0, abs(keras_loss)):
        raise AssertionError(f"the reference's loss {torch_loss} is not "
                             f"Keras' {keras_loss}")

    operator = HessianOperator(model, (x, y), loss=LOSS,
                               batch_size=args.batch_size)
    probe = operator.flatten([keras.ops.convert_to_numpy(v)
                              for v in model.trainable_variables])
    operator.matvec(probe), operator.gradient()  # traced once
    ref.hvp([p.detach() for p in ref.params]), ref.gradient()
    rows = []
    gradient, _ = _seconds(operator.gradient, 3)
    product, _ = _seconds(lambda: operator.matvec(probe), 3)
    torch_gradient, _ = _seconds(ref.gradient, 3)
    torch_product, _ = _seconds(
        lambda: ref.hvp([p.detach() for p in ref.params]), 3)

    seconds, top = _seconds(lambda: top_hessian_eigenvalues(
        operator, k=1, tolerance=args.tolerance,
        max_iterations=args.max_iterations, seed=0))
    ref_seconds, (ref_top, ref_products) = _seconds(lambda: reference_top(
        ref, 1, args.tolerance, args.max_iterations,
        np.random.default_rng(0)))
    agreement = abs(top.values[0] - ref_top[0]) / abs(ref_top[0])
    rows.append(("top eigenvalue", seconds, top.iterations, ref_seconds,
                 ref_products))
    seconds, topk = _seconds(lambda: top_hessian_eigenvalues(
        operator, k=args.k, tolerance=args.tolerance,
        max_iterations=args.max_iterations, seed=0))
    ref_seconds, (_, ref_products) = _seconds(lambda: reference_top(
        ref, args.k, args.tolerance, args.max_iterations,
        np.random.default_rng(0)))
    rows.append((f"top {args.k}", seconds, topk.iterations, ref_seconds,
                 ref_products))
    seconds, trace = _seconds(lambda: hessian_trace(
        operator, probes=args.trace_probes, seed=0))
    ref_seconds, ref_trace = _seconds(lambda: reference_trace(
        ref, args.trace_probes, np.random.default_rng(0)))
    rows.append((f"trace ({args.trace_probes} products)", seconds,
                 args.trace_probes, ref_seconds, args.trace_probes))
    seconds, _ = _seconds(lambda: hessian_density(
        operator, steps=args.density_steps, seed=0))
    ref_seconds, _ = _seconds(lambda: reference_density(
        ref, args.density_steps, np.random.default_rng(0)))
    rows.append((f"density ({args.density_steps} steps)", seconds,
                 args.density_steps, ref_seconds, args.density_steps))

    print(f"ResNet-{args.depth}, {operator.size} weights, {args.samples} "
          f"images {args.image_size}x{args.image_size}, batches of "
          f"{args.batch_size}; package on {keras.backend.backend()}, "
          f"reference on torch; {args.threads} intra-op thread(s)")
    print(f"{'task':<24}{'package s':>11}{'products':>10}{'reference s':>13}"
          f"{'products':>10}{'ratio':>8}")
    for task, seconds, products, ref_seconds, ref_products in rows:
        print(f"{task:<24}{seconds:>11.3f}{products:>10}{ref_seconds:>13.3f}"
              f"{ref_products:>10}{seconds / ref_seconds:>8.2f}")
    print(f"Hessian-vector product / gradient: package "
          f"{product / gradient:.2f} ({keras.backend.backend()}), reference "
          f"{torch_product / torch_gradient:.2f} (torch)")
    print(f"top eigenvalue: package {top.values[0]:.6g}, reference "
          f"{ref_top[0]:.6g} (relative difference {agreement:.1e}); trace: "
          f"package {trace.value:.4g} +- {trace.standard_error:.2g}, "
          f"reference {ref_trace:.4g}")
    if agreement > 2e-2:
        raise AssertionError("the package's and the reference's top "
                             "eigenvalues differ")


if __name__ == "__main__":
    main()
