"""BatchNorm moving statistics recomputed for new weights.

A point of weight space that no training run visited (a point on a curve
between two modes, or on a plane through three) has no BatchNorm moving
statistics of its own: the end points' averages do not describe the
activations of the weights in between. Garipov et al. (2018) recompute them
before every evaluation by resetting the running mean and variance and
running the training data through the network in training mode with
cumulative averaging. `recalibrate_batch_norm` does the same, exactly: each
BatchNorm layer's moving mean and variance become the mean and (biased, as
Keras uses) variance of that layer's input over the whole data set, with
the network run in training mode (each BatchNorm normalising by its batch's
statistics, Dropout active), batch by batch. The per-batch moments are
combined in float64, so the result is the data set's statistics and not an
average of per-batch variances.
"""

import keras
import numpy as np

from keras_lrphase._validation import fail
from keras_lrphase.analysis import weight_space
from keras_lrphase.backend import autodiff


def batch_norm_layers(model):
    """The BatchNormalization layers of `model`, nested models included."""
    found, stack = [], list(model.layers)
    while stack:
        layer = stack.pop(0)
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif hasattr(layer, "layers"):
            stack = list(layer.layers) + stack
    return found


_MOMENTS_ATTRIBUTE = "_keras_lrphase_batch_moments"


def _compiled_moments(model):
    """`(trainable, non_trainable, x) -> non_trainable` of a training call.

    Compiled once per model and kept on it (outside Keras' attribute
    tracking), so that recalibrating at many points of a curve or a plane
    traces once. It is traced (and only ever called) while the BatchNorm
    momenta are 0.
    """
    compiled = model.__dict__.get(_MOMENTS_ATTRIBUTE)
    if compiled is None:

        def batch_moments(trainable, non_trainable, x):
            _, non_trainable = weight_space.model_call(
                model, trainable, non_trainable, x, True, False)
            return non_trainable

        compiled = autodiff().compile(batch_moments)
        object.__setattr__(model, _MOMENTS_ATTRIBUTE, compiled)
    return compiled


def recalibrate_batch_norm(model, data, *, batch_size=128, seed=0):
    """Sets every BatchNorm layer's moving statistics to those of `data`.

    Use it after loading weights that were not trained together with their
    statistics, e.g. `set_weights` of a point on a mode-connecting curve
    (`ConnectingCurve.model_at` calls it). Only the moving means and
    variances of the trainable BatchNormalization layers (those that update
    their statistics in training mode) change; every other weight keeps its
    value. Layers with `renorm=True` are not supported.

    Args:
        model: A built `keras.Model`; changed in place.
        data: Tuple `(x, y)` of arrays (`y` is not used; any array of the
            same length will do), or an array `x`.
        batch_size: Int. Inputs per forward pass. Defaults to `128` (the
            statistics are exact whatever the batch size, but each layer's
            input depends on it through the BatchNorm layers before it).
        seed: Int. Seed of the Dropout masks of the forward passes.
            Defaults to `0`.

    Returns:
        The number of BatchNormalization layers recalibrated.

    Raises:
        ValueError: For a model that is not built, empty data, or a
            BatchNormalization layer with `renorm=True`.

    Example:

    >>> import keras
    >>> model = keras.Sequential([keras.Input((2,)),
    ...                           keras.layers.BatchNormalization()])
    >>> x = np.array([[0.0, 1.0], [2.0, 5.0]], dtype="float32")
    >>> recalibrate_batch_norm(model, x)
    1
    >>> [w.tolist() for w in model.get_weights()[2:]]
    [[1.0, 3.0], [1.0, 4.0]]

    References:
        Garipov et al., "Loss Surfaces, Mode Connectivity, and Fast
        Ensembling of DNNs", NeurIPS 2018 (`utils.update_bn` of their code).
    """
    weight_space.check_model("model", model)
    if not isinstance(data, (tuple, list)):
        data = (data, np.zeros(len(np.asarray(keras.tree.flatten(data)[0]))))
    x, _, size = weight_space.check_data("data", data)
    batch_size = weight_space.check_batch_size(batch_size)
    layers = [layer for layer in batch_norm_layers(model) if layer.trainable]
    for layer in layers:
        if layer.renorm:
            fail("model", model.name, "must not hold BatchNormalization "
                 f"layers with renorm=True ({layer.name!r} has)")
    if not layers:
        return 0
    layout = weight_space.WeightLayout(model)
    position = {id(v): k for k, v in enumerate(model.weights)}
    slots = [(position[id(layer.moving_mean)],
              position[id(layer.moving_variance)]) for layer in layers]
    momenta = [layer.momentum for layer in layers]
    weights = [np.asarray(w) for w in model.get_weights()]
    for mean_slot, variance_slot in slots:
        weights[mean_slot] = np.zeros_like(weights[mean_slot])
        weights[variance_slot] = np.ones_like(weights[variance_slot])
    trainable, weight_state = layout.split(weights)
    to_tensor = keras.ops.convert_to_tensor
    trainable = [to_tensor(w) for w in trainable]
    weight_state = [to_tensor(w) for w in weight_state]
    rng = np.random.default_rng(seed)
    sums = [np.zeros(weights[m].shape, np.float64) for m, _ in slots]
    squares = [np.zeros(weights[m].shape, np.float64) for m, _ in slots]
    try:
        # With momentum 0 the moving statistics a training-mode call returns
        # are the batch's own mean and variance.
        for layer in layers:
            layer.momentum = 0.0

        moments = _compiled_moments(model)
        dummy = np.zeros(size)
        for bx, _ in weight_space.batches(x, dummy, size, batch_size):
            count = len(keras.tree.flatten(bx)[0])
            non_trainable = layout.non_trainable_list(
                weight_state, [to_tensor(s) for s in layout.fresh_states(rng)])
            returned = moments(trainable, non_trainable, bx)
            point = layout.point_from_call(weights, returned)
            for k, (mean_slot, variance_slot) in enumerate(slots):
                mean = point[mean_slot].astype(np.float64)
                variance = point[variance_slot].astype(np.float64)
                sums[k] += count * mean
                squares[k] += count * (variance + mean**2)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    for k, (mean_slot, variance_slot) in enumerate(slots):
        mean = sums[k] / size
        variance = np.maximum(squares[k] / size - mean**2, 0.0)
        weights[mean_slot] = mean.astype(weights[mean_slot].dtype)
        weights[variance_slot] = variance.astype(weights[variance_slot].dtype)
    model.set_weights(weights)
    return len(layers)
