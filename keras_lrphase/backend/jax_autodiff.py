"""Gradients and Hessian-vector products with JAX's autodiff."""

import jax
import jax.numpy as jnp


def compile(fn, jit_compile=True):
    """Compiles `fn` with `jax.jit` (retraced per input shape); JAX always
    compiles with XLA, so `jit_compile` is accepted for symmetry only."""
    return jax.jit(fn)


def gradient(loss_fn):
    """Returns `grad(params, data)`: the gradient of `loss_fn` at `params`."""
    return compile(jax.grad(loss_fn))


def hessian_vector_product(loss_fn, mode):
    """Returns `hvp(params, vector, data)` computing H(params) @ vector.

    `"forward_over_back"` is `jax.jvp` of `jax.grad`;
    `"reverse_over_reverse"` is `jax.grad` of <grad, vector>.
    """
    grad = jax.grad(loss_fn)
    if mode == "forward_over_back":

        def hvp(params, vector, data):
            return jax.jvp(lambda p: grad(p, data), (params,), (vector,))[1]

    elif mode == "reverse_over_reverse":

        def hvp(params, vector, data):
            def dot(p):
                return sum(
                    jnp.vdot(g, v) for g, v in zip(grad(p, data), vector)
                )

            return jax.grad(dot)(params)

    else:
        raise ValueError(f"Unknown Hessian-vector product mode: {mode!r}")
    return compile(hvp)


def gauss_newton_vector_product(prediction_fn, output_loss):
    """Returns `ggnvp(params, vector, data)` computing G(params) @ vector.

    G = J^T H_L J: `jax.jvp` through the model, `jax.jvp` of the loss's
    gradient in its predictions, `jax.vjp` back through the model.
    """

    def ggnvp(params, vector, data):
        def predict(p):
            return prediction_fn(p, data)

        predictions, tangents = jax.jvp(predict, (params,), (vector,))
        grad = jax.grad(lambda outputs: output_loss(outputs, data))
        curvature = jax.jvp(grad, (predictions,), (tangents,))[1]
        _, pullback = jax.vjp(predict, params)
        return pullback(curvature)[0]

    return compile(ggnvp)
