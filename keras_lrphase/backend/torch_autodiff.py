"""Gradients and Hessian-vector products with PyTorch's autodiff.

The functions run eagerly: a Hessian estimate is a handful of products on
the layer's head, so compilation (`torch.compile`) would cost more than it
saves. Results are plain tensors, detached from any autograd graph, so the
model's own parameters never collect gradients from an estimate.

Example:

>>> import torch
>>> from keras_lrphase.backend import torch_autodiff
>>> def loss_fn(params, data):  # sum(data * w**2): H = diag(2 * data)
...     return torch.sum(data * params[0] ** 2)
>>> w, v, data = torch.ones(2), torch.ones(2), torch.tensor([1.0, 3.0])
>>> for mode in ("forward_over_back", "reverse_over_reverse"):
...     hvp = torch_autodiff.hessian_vector_product(loss_fn, mode)
...     print(hvp([w], [v], data)[0].tolist())
[2.0, 6.0]
[2.0, 6.0]
>>> torch_autodiff.gradient(loss_fn)([w], data)[0].tolist()
[2.0, 6.0]
"""

import keras
import torch


def compile(fn, jit_compile=False):
    """Returns `fn` run eagerly with autograd off, its outputs detached.

    `jit_compile` is accepted for symmetry with the other backends.
    """

    def run(*args):
        with torch.no_grad():
            return _detached(fn(*args))

    return run


def gradient(loss_fn):
    """Returns `grad(params, data)`: the gradient of `loss_fn` at `params`."""
    grad = torch.func.grad(loss_fn)

    def run(params, data):
        with torch.no_grad():
            return list(_detached(grad(list(params), _detached(data))))

    return run


def hessian_vector_product(loss_fn, mode):
    """Returns `hvp(params, vector, data)` computing H(params) @ vector.

    `"forward_over_back"` is `torch.func.jvp` of `torch.func.grad`: the
    tangent `vector` is pushed forward through the reverse-mode gradient.
    `"reverse_over_reverse"` differentiates <grad, vector> by a second
    backward pass through the first one's graph (`create_graph=True`).
    """
    if mode == "forward_over_back":
        grad = torch.func.grad(loss_fn)

        def hvp(params, vector, data):
            data = _detached(data)
            with torch.no_grad():
                _, product = torch.func.jvp(
                    lambda p: grad(p, data),
                    (list(_detached(params)),),
                    (list(_detached(vector)),),
                )
            return list(_detached(product))

    elif mode == "reverse_over_reverse":

        def hvp(params, vector, data):
            data = _detached(data)
            vector = list(_detached(vector))
            with torch.enable_grad():
                leaves = [p.detach().requires_grad_(True) for p in params]
                loss = loss_fn(leaves, data)
                grads = torch.autograd.grad(
                    loss, leaves, create_graph=True, allow_unused=True
                )
                dot = sum(
                    torch.sum(g * v)
                    for g, v in zip(grads, vector)
                    if g is not None
                )
                if not torch.is_tensor(dot) or not dot.requires_grad:
                    # The loss is linear (or constant) in the weights.
                    return [torch.zeros_like(p) for p in leaves]
                products = torch.autograd.grad(dot, leaves, allow_unused=True)
            return [
                torch.zeros_like(p) if h is None else h.detach()
                for p, h in zip(leaves, products)
            ]

    else:
        raise ValueError(f"Unknown Hessian-vector product mode: {mode!r}")
    return hvp


def gauss_newton_vector_product(prediction_fn, output_loss):
    """Returns `ggnvp(params, vector, data)` computing G(params) @ vector.

    G = J^T H_L J: `torch.func.jvp` through the model, `torch.func.jvp` of
    the loss's gradient in its predictions, `torch.func.vjp` back through
    the model.
    """

    def ggnvp(params, vector, data):
        data = _detached(data)
        params, vector = list(_detached(params)), list(_detached(vector))

        def predict(p):
            return prediction_fn(p, data)

        with torch.no_grad():
            predictions, tangents = torch.func.jvp(
                predict, (params,), (vector,)
            )
            grad = torch.func.grad(lambda outputs: output_loss(outputs, data))
            _, curvature = torch.func.jvp(grad, (predictions,), (tangents,))
            _, pullback = torch.func.vjp(predict, params)
            (product,) = pullback(curvature)
        return list(_detached(product))

    return ggnvp


def _detached(nest):
    """`nest` with every tensor detached from autograd."""
    return keras.tree.map_structure(
        lambda t: t.detach() if torch.is_tensor(t) else t, nest
    )
