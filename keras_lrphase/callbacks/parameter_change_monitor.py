"""Records how far each layer's weights move in an epoch (Learning Stages).

The Learning Stages paper (Section 3.2, Figures 4 and 11) plots, per layer,
the norm of the change of its weights against the epoch and sees the change
become much smoother once the learning rate is decayed. A convolution
followed by batch normalization is measured through its *merged* weights:
batch normalization makes the scale of the convolution's kernel irrelevant,
so the paper folds the normalization into it,

    kernel' = kernel * s,    bias' = beta + (bias - moving_mean) * s,
    s = gamma / sqrt(moving_variance + epsilon)    (per output channel),

which is the affine map the pair computes in inference mode.
"""

import math

import keras
import numpy as np

from keras_lrphase._validation import check_integer
from keras_lrphase.backend import keras_compat

PREFIX = "param_change/"
_MERGEABLE = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
              keras.layers.Dense)


def merged_weights(kernel, bias, gamma, beta, moving_mean, moving_variance,
                   epsilon):
    """The kernel and bias of a convolution (or dense) layer + BatchNorm.

    Args:
        kernel: Array whose last axis is the output channels (Keras'
            layout for `Conv1D/2D/3D` and `Dense`, in both data formats).
        bias: Array `(channels,)` or None (no bias: zero).
        gamma: Array `(channels,)` or None (`scale=False`: one).
        beta: Array `(channels,)` or None (`center=False`: zero).
        moving_mean: Array `(channels,)`.
        moving_variance: Array `(channels,)`.
        epsilon: Float. The BatchNormalization's epsilon.

    Returns:
        `(kernel * s, beta + (bias - moving_mean) * s)` as float64, with
        `s = gamma / sqrt(moving_variance + epsilon)`.

    Example:

    >>> k, b = merged_weights(np.ones((1, 2)), None, np.array([2.0, 1.0]),
    ...                       None, np.zeros(2), np.array([3.0, 0.0]), 1.0)
    >>> k.tolist(), b.tolist()
    ([[1.0, 1.0]], [0.0, 0.0])
    """
    mean = np.asarray(moving_mean, np.float64)
    scale = 1.0 / np.sqrt(np.asarray(moving_variance, np.float64) + epsilon)
    if gamma is not None:
        scale = scale * np.asarray(gamma, np.float64)
    bias = 0.0 if bias is None else np.asarray(bias, np.float64)
    beta = 0.0 if beta is None else np.asarray(beta, np.float64)
    return np.asarray(kernel, np.float64) * scale, beta + (bias - mean) * scale


class _Group:
    """The weights one or two logged keys of one layer are computed from."""

    def __init__(self, layer, norm=None):
        self.layer, self.norm = layer, norm
        self.split = norm is not None or (
            getattr(layer, "kernel", None) is not None
            and {id(w) for w in layer.trainable_weights}
            <= {id(layer.kernel), id(getattr(layer, "bias", None))}
        )
        if norm is not None:
            self.variables = [layer.kernel, getattr(layer, "bias", None),
                              norm.gamma if norm.scale else None,
                              norm.beta if norm.center else None,
                              norm.moving_mean, norm.moving_variance]
        elif self.split:
            self.variables = [layer.kernel, getattr(layer, "bias", None)]
        else:
            self.variables = list(layer.trainable_weights)
        self.keys = [PREFIX + layer.name]
        if self.split and (norm is not None or layer.bias is not None):
            self.keys.append(PREFIX + layer.name + "/bias")

    def arrays(self, snapshot):
        """The arrays of this group's keys from a `{id: array}` snapshot."""
        values = [None if v is None else snapshot[id(v)]
                  for v in self.variables]
        if self.norm is not None:
            return list(merged_weights(*values, self.norm.epsilon))
        if self.split:
            return [a for a in values if a is not None]
        return [np.concatenate([a.ravel() for a in values])]


def _batch_norm_after(graph, layer):
    """The BatchNormalization that directly consumes `layer`'s only call."""
    if graph is None or not isinstance(layer, _MERGEABLE):
        return None
    calls = keras_compat.calls_in_graph(graph, layer)
    if len(calls) != 1:
        return None
    found = []
    for candidate in graph.layers:
        if not isinstance(candidate, keras.layers.BatchNormalization):
            continue
        bn_calls = keras_compat.calls_in_graph(graph, candidate)
        if len(bn_calls) != 1:
            continue
        tensor = keras_compat.call_input(bn_calls[0])
        produced = keras_compat.producing_call(tensor)
        if produced is not None and produced[0] is layer:
            found.append((candidate, len(tensor.shape)))
    if len(found) != 1:
        return None
    norm, output_rank = found[0]
    channel_axis = 1 if getattr(layer, "data_format", None) \
        == "channels_first" else output_rank - 1
    axis = norm.axis[0] if isinstance(norm.axis, (list, tuple)) else norm.axis
    if axis % output_rank != channel_axis:
        return None
    return norm


def parameter_groups(model):
    """The layers measured and the BatchNormalization merged into each.

    Returns a list of `(layer, batch_norm or None)` in the model's layer
    order; a merged BatchNormalization is not listed on its own.
    """
    graph = keras_compat.functional_graph(model)
    pairs, merged = [], set()
    for layer in model.layers:
        if not layer.weights:
            continue
        norm = _batch_norm_after(graph, layer)
        if norm is not None:
            merged.add(id(norm))
        pairs.append((layer, norm))
    return [(layer, norm) for layer, norm in pairs
            if id(layer) not in merged
            and (norm is not None or layer.trainable_weights)]


class ParameterChangeMonitor(keras.callbacks.Callback):
    """Logs, per layer, the norm of the change of its weights over an epoch.

    For every `every`-th epoch it copies the weights at the epoch's start
    and writes, at its end, `||w_end - w_start||_2` (all entries of the
    array) under these keys:

    * `param_change/<layer>` and `param_change/<layer>/bias`: for a
      `Conv1D`/`Conv2D`/`Conv3D`/`Dense` layer whose output is consumed
      directly by one BatchNormalization (on its channel axis, in the
      model's Functional graph), the merged kernel and the merged bias
      (see `merged_weights`; the BatchNormalization gets no key of its
      own);
    * the same two keys for any other layer whose trainable weights are a
      `kernel` and an optional `bias` (no `/bias` key without a bias);
    * `param_change/<layer>` alone for other layers with trainable weights
      (BatchNormalization not after a convolution, embeddings, nested
      models): the change of all its trainable weights together.

    The keys are fixed in `on_train_begin` and every key is in every
    epoch's logs, NaN in the epochs not measured, so `CSVLogger`,
    `History` and `TensorBoard` placed after it record them. When no
    earlier callback wrote `learning_rate` to the logs, it writes the
    optimizer's current learning rate there too (every epoch), which
    `plot_parameter_change` draws on its second axis. Cost: two
    copies of the weights to host memory per measured epoch; nothing runs
    per batch. `plot_parameter_change` draws the curves.

    Args:
        every: Int >= 1. Measure epochs `every`, `2 * every`, ...
            (1-based). Defaults to `1`.

    Example:

    >>> import numpy as np, keras
    >>> from keras_lrphase.callbacks.parameter_change_monitor import (
    ...     ParameterChangeMonitor)
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(
    ...     3, name="dense"), keras.layers.BatchNormalization()])
    >>> model.compile("sgd", "mse")
    >>> history = model.fit(np.ones((8, 4)), np.ones((8, 3)), epochs=1,
    ...                     verbose=0, callbacks=[ParameterChangeMonitor()])
    >>> sorted(history.history)
    ['learning_rate', 'loss', 'param_change/dense', 'param_change/dense/bias']

    References:
        You, Long, Jordan, Wang, "Learning Stages: Phenomenon, Root Cause,
        Mechanism Hypothesis, and Implications", Section 3.2, Figures 4
        and 11.
    """

    def __init__(self, every=1):
        super().__init__()
        self.every = check_integer("every", every, 1)
        self.keys = []
        self._groups = []
        self._start = None

    def on_train_begin(self, logs=None):
        self._groups = [_Group(layer, norm)
                        for layer, norm in parameter_groups(self.model)]
        self.keys = [key for group in self._groups for key in group.keys]
        self._start = None

    def _measured(self, epoch):
        return (epoch + 1) % self.every == 0

    def _snapshot(self):
        return {id(v): keras.ops.convert_to_numpy(v.value).astype(np.float64)
                for group in self._groups for v in group.variables
                if v is not None}

    def on_epoch_begin(self, epoch, logs=None):
        self._start = self._snapshot() if self._measured(epoch) else None

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if "learning_rate" not in logs and self.model.optimizer is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(
                self.model.optimizer.learning_rate))
        start, self._start = self._start, None
        if start is None or not self._measured(epoch):
            logs.update({key: math.nan for key in self.keys})
            return
        end = self._snapshot()
        for group in self._groups:
            for key, before, after in zip(group.keys, group.arrays(start),
                                          group.arrays(end)):
                logs[key] = float(np.sqrt(np.sum(np.square(after - before))))

    def get_config(self):
        return {"every": self.every}
