"""Gradients and Hessian-vector products with TensorFlow's autodiff."""

import tensorflow as tf


def compile(fn, jit_compile=False):
    """Compiles `fn` once per input signature (shapes may vary).

    With `jit_compile=True` the graph is compiled by XLA, as Keras does for
    `fit`/`predict` of models that support it.
    """
    return tf.function(fn, reduce_retracing=True, jit_compile=jit_compile)


def gradient(loss_fn):
    """Returns `grad(params, data)`: the gradient of `loss_fn` at `params`."""

    def grad(params, data):
        with tf.GradientTape() as tape:
            tape.watch(params)
            loss = loss_fn(params, data)
        return tape.gradient(loss, params)

    return compile(grad)


def hessian_vector_product(loss_fn, mode):
    """Returns `hvp(params, vector, data)` computing H(params) @ vector.

    `"forward_over_back"` pushes the tangent `vector` forward
    (`tf.autodiff.ForwardAccumulator`) through the reverse-mode gradient
    (`tf.GradientTape`): one gradient's cost plus a constant factor.
    `"reverse_over_reverse"` differentiates <grad, vector> with a second tape.
    """
    if mode == "forward_over_back":

        def hvp(params, vector, data):
            with tf.autodiff.ForwardAccumulator(params, vector) as acc:
                with tf.GradientTape() as tape:
                    tape.watch(params)
                    loss = loss_fn(params, data)
                grads = tape.gradient(loss, params)
            return acc.jvp(grads, unconnected_gradients="zero")

    elif mode == "reverse_over_reverse":

        def hvp(params, vector, data):
            with tf.GradientTape() as outer:
                outer.watch(params)
                with tf.GradientTape() as inner:
                    inner.watch(params)
                    loss = loss_fn(params, data)
                grads = inner.gradient(loss, params)
                dot = tf.add_n(
                    [tf.reduce_sum(g * v) for g, v in zip(grads, vector)]
                )
            return outer.gradient(
                dot, params, unconnected_gradients="zero"
            )

    else:
        raise ValueError(f"Unknown Hessian-vector product mode: {mode!r}")
    return compile(hvp)
