"""Gradients and Hessian-vector products with TensorFlow's autodiff.

Inside a `tf.distribute` strategy's scope (`MirroredStrategy`: Keras runs
`fit` and its callbacks there), Keras losses return the batch mean divided
by the number of replicas, each replica's share of a sum across replicas.
A Hessian estimate runs on one device over its whole batch, in the
strategy's cross-replica context; `whole_batch_loss` multiplies that share
back, as Keras does for the loss it reports, so the estimate equals the
single-device one.
"""

import tensorflow as tf

from keras_lrphase.backend import keras_compat


def compile(fn, jit_compile=False):
    """Compiles `fn` once per input signature (shapes may vary).

    With `jit_compile=True` the graph is compiled by XLA, as Keras does for
    `fit`/`predict` of models that support it. AutoGraph is off: the
    functions are written with `keras.ops` and traced as they are (as on
    JAX), and AutoGraph's cache of converted functions, keyed by code
    object, could hand one closure's conversion to another. BatchNorm's
    batch statistics are traced with exact second derivatives
    (`keras_compat.exact_batch_moments`).
    """
    function = tf.function(fn, reduce_retracing=True, jit_compile=jit_compile,
                           autograph=False)

    def run(*args):
        # Traced (on first call, and per new input signature) with batch
        # statistics that have exact second derivatives.
        with keras_compat.exact_batch_moments():
            return function(*args)

    # The tf.function's own count of traces, as on the function itself.
    run.experimental_get_tracing_count = function.experimental_get_tracing_count
    return run


def whole_batch_loss(loss_fn):
    """`loss_fn` as the mean over its whole batch under any strategy.

    The number of replicas is read when the function is traced; `tf.function`
    traces anew when called in another strategy's context.
    """

    def whole(params, data):
        loss = loss_fn(params, data)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        if replicas > 1:
            loss = loss * tf.cast(replicas, loss.dtype)
        return loss

    return whole


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


def gauss_newton_vector_product(prediction_fn, output_loss):
    """Returns `ggnvp(params, vector, data)` computing G(params) @ vector.

    G = J^T H_L J, with J the Jacobian of `prediction_fn(params, data)` in
    `params` and H_L the Hessian of `output_loss(predictions, data)` in the
    predictions: the tangent `vector` is pushed forward through the model
    (`ForwardAccumulator`), through the loss's gradient in its predictions,
    and pulled back through the model (`GradientTape`).
    """

    def ggnvp(params, vector, data):
        with tf.GradientTape() as tape:
            tape.watch(params)
            with tf.autodiff.ForwardAccumulator(params, vector) as acc:
                predictions = prediction_fn(params, data)
            tangents = acc.jvp(predictions, unconnected_gradients="zero")
        fixed = tf.nest.map_structure(tf.stop_gradient, predictions)
        with tf.autodiff.ForwardAccumulator(fixed, tangents) as acc:
            with tf.GradientTape() as inner:
                inner.watch(fixed)
                loss = output_loss(fixed, data)
            grads = inner.gradient(loss, fixed)
        curvature = acc.jvp(grads, unconnected_gradients="zero")
        return tape.gradient(
            predictions, params, output_gradients=curvature,
            unconnected_gradients="zero",
        )

    return compile(ggnvp)
