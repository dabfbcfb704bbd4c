"""Normalized margins of a classifier: the margin distributions of Jiang et al.

The margin of a sample is its distance to the nearest decision boundary.
The exact distance is intractable for a deep network; Jiang et al. (2018)
take the first-order approximation at the input `h` of a layer:

    d = (f_i - f_j) / ||grad_h f_i - grad_h f_j||_2,

where `f` are the logits, `i` is the sample's true class and `j` the class
with the largest other logit, and divide it by `sqrt(tr(Cov(h)))`, the
square root of the total variation of `h` over the samples, so that margins
of differently scaled representations (layers, runs) are comparable. `d` is
negative for a misclassified sample (`f_j > f_i`).

The two-phase paper's Appendix A.1 writes the gradient "with respect to the
model parameters"; Jiang et al. differentiate with respect to the layer's
input `h` (the data point whose distance to the boundary is measured), and
so does this module.

Logits: when the model's output is produced by a softmax (a `Softmax` or
`Activation("softmax")` layer, or a layer with `activation="softmax"`, such
as `Dense(10, activation="softmax")`), the logits are the pre-activation:
the input of the softmax layer, or a copy of the output layer built from its
config with `activation="linear"` and called on the output layer's own
weights (the layer itself is not touched). A log-softmax output needs no
such step: it differs from the logits by a per-sample constant, which
cancels in `f_i - f_j` and its gradient.

How it runs: the model splits at `h`, as `keras_lrphase.hessian` splits it
at a layer's input: a *prefix* (model input -> `h`) and a *head* (`h` ->
logits), both run with `stateless_call` in inference mode (BatchNormalization
uses its moving statistics, Dropout is off), so every sample's logits depend
on that sample alone and one backward pass of `sum_n f_i(x_n) - f_j(x_n)`
gives every sample's gradient, and its gradient with respect to a vector
of per-sample factors (all ones) gives every `f_i - f_j`. Per batch: one
forward pass of the prefix, then one forward and one backward pass of the
head, through the
backend's autodiff (`keras_lrphase.backend.autodiff`: TensorFlow, JAX,
torch), compiled with XLA where Keras compiles the model's own steps with
it. The weights are arguments of the compiled functions, not constants,
so one `MarginFunction` serves a model throughout its training without a
new trace. The last batch is padded to the batch size (and the padding
dropped), so every call has one shape.

References:
    Jiang, Krishnan, Mobahi and Bengio, "Predicting the Generalization Gap
    in Deep Networks with Margin Distributions", ICLR 2019
    (arXiv:1810.00113), Section 3. "Achieving Small-Batch Accuracy with
    Large-Batch Scalability via Adaptive Learning Rate Adjustment" (ICLR
    2022 submission), Appendix A.1 and Figure 1.
"""

import keras
import numpy as np

from keras_lrphase._validation import check_integer
from keras_lrphase._validation import fail
from keras_lrphase.backend import keras_compat


def _is_softmax(activation):
    return activation is keras.activations.softmax


def _output_logits(graph):
    """`(logits tensor, layer to copy without its softmax or None)`.

    The logits are the graph's output, the input of a final softmax layer,
    or the input of an output layer with a softmax activation (then the
    layer is returned, to be applied without it).
    """
    output = graph.output
    produced = keras_compat.producing_call(output)
    if produced is None:
        return output, None
    layer, inputs = produced
    if len(inputs) != 1:
        return output, None
    if isinstance(layer, keras.layers.Softmax) or (
        isinstance(layer, keras.layers.Activation)
        and _is_softmax(layer.activation)
    ):
        return inputs[0], None
    if _is_softmax(getattr(layer, "activation", None)):
        return inputs[0], layer
    return output, None


def _linear_copy(layer, input_shape):
    """A copy of `layer` with `activation="linear"`, built, weights unset."""
    config = dict(layer.get_config(), activation="linear")
    config.pop("name", None)
    copy = type(layer).from_config(config)
    copy.build(input_shape)
    shapes = [tuple(v.shape) for v in layer.variables]
    if [tuple(v.shape) for v in copy.variables] != shapes:
        raise ValueError(
            f"Cannot compute the logits of output layer {layer.name!r}: its "
            "copy without the softmax has other weights."
        )
    return copy


def _resolve_input(model, graph, layer):
    """The tensor `h` the margins are taken at (the input of `layer`)."""
    model_input = keras.tree.flatten(graph.input)[0]
    if layer is None:
        return model_input, "the model input"
    if isinstance(layer, str):
        names = [candidate.name for candidate in model.layers]
        if layer not in names:
            fail("layer", layer, f"must name a layer of model {model.name!r} "
                 f"(its layers are {names})")
        layer = model.get_layer(layer)
    if not isinstance(layer, keras.layers.Layer) or not any(
        candidate is layer for candidate in model.layers
    ):
        fail("layer", getattr(layer, "name", layer),
             f"must be a layer of model {model.name!r}, its name or None")
    if isinstance(layer, keras.layers.InputLayer):
        return model_input, "the model input"
    return single_input(graph, layer), f"the input of layer {layer.name!r}"


def single_input(graph, layer):
    """The symbolic input of `layer`, which `graph` must call once, on one
    tensor; a `ValueError` naming `layer` otherwise."""
    calls = keras_compat.calls_in_graph(graph, layer)
    if len(calls) != 1:
        fail("layer", layer.name, "must name a layer called once in the "
             f"model (it is called {len(calls)} times)")
    h = keras_compat.call_input(calls[0])
    if isinstance(h, (list, tuple)):
        fail("layer", layer.name, "must name a layer with a single input")
    return h


class MarginFunction:
    """The compiled margin computation of one model at one layer's input.

    Build it once and call it as often as needed (the weights are read at
    every call); `normalized_margins` builds one per call.

    Args:
        model: A built Functional or Sequential `keras.Model` with one input
            and one output of shape `(samples, classes)`, `classes >= 2`.
        layer: A layer of `model`, its name, or None (the model input).
            Margins are taken at the layer's input. Defaults to `None`.
        batch_size: Int >= 1. Samples per forward/backward pass. Defaults
            to `256`.
    """

    def __init__(self, model, layer=None, batch_size=256):
        if not isinstance(model, keras.Model):
            fail("model", model, "must be a keras.Model")
        self.batch_size = check_integer("batch_size", batch_size, 1)
        graph = keras_compat.functional_graph(model)
        if graph is None:
            fail("model", model.name, "must be a built Functional or "
                 "Sequential model (margins split its graph at a layer)")
        if len(keras.tree.flatten(graph.input)) != 1:
            fail("model", model.name, "must have a single input")
        if len(keras.tree.flatten(graph.output)) != 1:
            fail("model", model.name, "must have a single output")
        output_shape = tuple(graph.output.shape)
        if len(output_shape) != 2 or output_shape[1] is None \
                or output_shape[1] < 2:
            fail("model", model.name, "must output `(samples, classes)` "
                 f"scores with classes >= 2; its output shape is "
                 f"{output_shape}")
        self.model = model
        self.num_classes = int(output_shape[1])
        model_input = keras.tree.flatten(graph.input)[0]
        h, self.at = _resolve_input(model, graph, layer)
        logits, self._output_layer = _output_logits(graph)
        self._copy = None
        if self._output_layer is not None:
            self._copy = _linear_copy(self._output_layer, tuple(logits.shape))
        self.prefix = None if h is model_input else keras.Model(model_input, h)
        self.head = None
        if h is not logits:
            try:
                self.head = keras.Model(h, logits)
            except ValueError as error:
                fail("layer", layer if isinstance(layer, str) else
                     getattr(layer, "name", layer),
                     "must be a layer whose input alone determines the "
                     f"logits ({error})")
        self._build_functions()

    def _build_functions(self):
        from keras_lrphase.backend import autodiff

        engine = autodiff()
        head, copy = self.head, self._copy

        def logits_fn(values, h):
            head_trainable, head_fixed, copy_trainable, copy_fixed = values
            z = h
            if head is not None:
                z, _ = head.stateless_call(head_trainable, head_fixed, h,
                                           training=False)
            if copy is not None:
                z, _ = copy.stateless_call(copy_trainable, copy_fixed, z)
            return keras.ops.cast(z, "float32")

        prefix = self.prefix
        classes = self.num_classes

        def features(values, x):
            prefix_trainable, prefix_fixed = values
            h, _ = prefix.stateless_call(prefix_trainable, prefix_fixed, x,
                                         training=False)
            return h

        def difference(params, data):
            # params: h and a vector s of ones; data: the head's weights and
            # one-hot labels. Returns sum_n s_n (f_i - f_j)(h_n): its
            # gradient is (f_i - f_j) per sample for s, and every sample's
            # grad_h (f_i - f_j) for h. j, the largest other logit, is
            # chosen inside without a gradient (a fixed index).
            h, ones = params
            head_values, true = data
            logits = logits_fn(head_values, h)
            others = keras.ops.where(true > 0, -np.inf,
                                     keras.ops.stop_gradient(logits))
            rival = keras.ops.one_hot(keras.ops.argmax(others, axis=1),
                                      classes, dtype="float32")
            per_sample = keras.ops.sum(logits * (true - rival), axis=1)
            return keras.ops.sum(ones * per_sample)

        # XLA where Keras uses it for the model's own steps (TensorFlow).
        xla = _model_uses_xla(self.model)
        self._features = None
        if prefix is not None:
            self._features = engine.compile(features, jit_compile=xla)
        self._gradient = engine.gradient(difference)
        if xla:
            self._gradient = engine.compile(self._gradient, jit_compile=True)

    def _values(self):
        def read(variables):
            return [keras.ops.convert_to_tensor(v.value) for v in variables]

        def pair(part):
            if part is None:
                return [], []
            return read(part.trainable_variables), \
                read(part.non_trainable_variables)

        head_values = [*pair(self.head), *pair(self._output_layer)]
        return list(pair(self.prefix)), head_values

    def check_labels(self, y, argument="y"):
        """Class indices `(samples,)` from integer or one-hot labels."""
        labels = np.asarray(y)
        if labels.ndim == 2 and labels.shape[1] == self.num_classes \
                and self.num_classes > 1:
            labels = np.argmax(labels, axis=1)
        elif labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1 or not (
            np.issubdtype(labels.dtype, np.integer)
            or (np.issubdtype(labels.dtype, np.floating)
                and np.all(np.isfinite(labels))
                and np.all(labels == np.round(labels)))
        ):
            fail(argument, f"<array of shape {np.shape(y)}, dtype "
                 f"{np.asarray(y).dtype}>", "must hold class indices "
                 "`(samples,)` or one-hot rows `(samples, classes)`")
        bad = (labels < 0) | (labels >= self.num_classes)
        if np.any(bad):
            fail(argument, f"<labels including {labels[bad][:3].tolist()}>",
                 f"must hold class indices in [0, {self.num_classes})")
        return labels.astype(np.int64)

    def __call__(self, x, y):
        """Normalized margins of the samples `(x, y)`, float64 `(samples,)`."""
        x = np.asarray(x)
        labels = self.check_labels(y)
        if x.ndim == 0 or len(x) != len(labels) or len(x) < 2:
            fail("x", f"<array of shape {x.shape}>", "must hold at least 2 "
                 f"samples, as many as the labels ({len(labels)})")
        prefix_values, head_values = self._values()
        size = min(self.batch_size, len(x))
        ones = keras.ops.ones((size,), "float32")
        raw, variation = [], _TotalVariation()
        for start in range(0, len(x), size):
            batch = x[start:start + size]
            count = len(batch)
            if count < size:
                padding = np.zeros((size - count,) + x.shape[1:], x.dtype)
                batch = np.concatenate([batch, padding])
            h = keras.ops.convert_to_tensor(batch)
            if self._features is not None:
                h = self._features(prefix_values, h)
            true = np.zeros((size, self.num_classes), np.float32)
            true[np.arange(count), labels[start:start + count]] = 1.0
            gradient, numerator = self._gradient(
                [h, ones], (head_values, keras.ops.convert_to_tensor(true)))
            gradient = keras.ops.convert_to_numpy(gradient)[:count]
            numerator = keras.ops.convert_to_numpy(numerator)[:count]
            norm = np.sqrt(np.sum(
                np.square(gradient.reshape(count, -1).astype(np.float64)),
                axis=1))
            with np.errstate(divide="ignore", invalid="ignore"):
                margin = numerator.astype(np.float64) / norm
            raw.append(np.where(norm > 0, margin, np.nan))
            variation.add(keras.ops.convert_to_numpy(h)[:count])
        total = variation.total()
        if not total > 0:
            fail("x", f"<array of shape {x.shape}>", "must hold samples whose "
                 f"representations at {self.at} vary (their total variation "
                 "is 0)")
        return np.concatenate(raw) / np.sqrt(total)


def _model_uses_xla(model):
    try:
        return model.jit_compile is True
    except (AttributeError, ValueError):
        return False


class _TotalVariation:
    """Streaming `tr(Cov(h))` (population covariance), float64.

    Batches are merged with Chan et al.'s update of the per-feature mean
    and sum of squared deviations.
    """

    def __init__(self):
        self.count, self.mean, self.squares = 0, 0.0, 0.0

    def add(self, h):
        h = h.reshape(len(h), -1).astype(np.float64)
        count, mean = len(h), h.mean(axis=0)
        squares = np.sum(np.square(h - mean), axis=0)
        total = self.count + count
        delta = mean - self.mean
        self.squares = self.squares + squares \
            + np.square(delta) * self.count * count / total
        self.mean = self.mean + delta * count / total
        self.count = total

    def total(self):
        return float(np.sum(self.squares) / self.count)


def normalized_margins(model, x, y, *, layer=None, batch_size=256):
    """Normalized margins of samples under a classifier (Jiang et al., 2018).

    For each sample, with `i` its true class and `j` the class of the
    largest other logit, `d = (f_i - f_j) / ||grad_h f_i - grad_h f_j||_2`
    at `h`, the input of `layer` (the gradient is with respect to `h`, as
    in Jiang et al.; the two-phase paper's Appendix A.1 says "with respect
    to the model parameters", which Jiang et al. do not do), divided by
    `sqrt(tr(Cov(h)))` over the given samples (population covariance:
    the mean over samples of the squared deviations, summed over the
    features of `h`). Use it to follow how the margin distribution of the
    training set widens during training (the two-phase paper's Figure 1);
    `MarginMonitor` does so at epoch ends.

    Logits are the output's pre-softmax values when the model ends in a
    softmax (see the module docstring for how they are read). The model
    runs in inference mode. A sample whose gradient difference is zero
    gets NaN. Negative margins are misclassified samples.

    Args:
        model: A built Functional or Sequential `keras.Model` with one input
            and one `(samples, classes)` output, `classes >= 2`.
        x: Array of inputs, at least 2 samples.
        y: Integer class indices `(samples,)` (or `(samples, 1)`), or
            one-hot rows `(samples, classes)`.
        layer: A layer of `model`, its name, or None. The margins are taken
            at this layer's input. Defaults to `None` (the model input).
        batch_size: Int >= 1. Samples per pass. Defaults to `256`.

    Returns:
        Float64 array `(samples,)` of normalized margins.

    Raises:
        ValueError: An argument that does not fit (the message names it).

    Example:

    >>> import numpy as np, keras
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> model.set_weights([np.eye(2, dtype="float32"), np.zeros(2, "float32")])
    >>> x = np.array([[1.0, 0.0], [0.0, 1.0]], "float32")  # tr(Cov) = 0.5
    >>> normalized_margins(model, x, [0, 0]).round(4)  # (+-1)/sqrt(2)/sqrt(0.5)
    array([ 1., -1.])

    References:
        Jiang et al., "Predicting the Generalization Gap in Deep Networks
        with Margin Distributions", ICLR 2019, Section 3. "Achieving
        Small-Batch Accuracy with Large-Batch Scalability via Adaptive
        Learning Rate Adjustment" (ICLR 2022 submission), Appendix A.1.
    """
    return MarginFunction(model, layer, batch_size)(x, y)


def quartile_statistics(margins):
    """The first quartile, median, third quartile and interquartile mean.

    Quartiles are `np.percentile(margins, [25, 50, 75])` (linear
    interpolation) of the finite margins; the interquartile mean is the
    mean of the margins `m` with `q1 <= m <= q3` (both ends included), the
    statistic the two-phase paper reports after Jiang et al. (margins below
    the first quartile and above the third are ignored). All NaN when no
    margin is finite.

    Example:

    >>> quartile_statistics(np.arange(1.0, 9.0))  # q1 2.75, q3 6.25: 3..6
    {'margin_q1': 2.75, 'margin_median': 4.5, 'margin_q3': 6.25, 'margin_mean_iqr': 4.5}
    """
    values = np.asarray(margins, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        nan = float("nan")
        return {"margin_q1": nan, "margin_median": nan, "margin_q3": nan,
                "margin_mean_iqr": nan}
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    inner = values[(values >= q1) & (values <= q3)]
    return {"margin_q1": float(q1), "margin_median": float(median),
            "margin_q3": float(q3), "margin_mean_iqr": float(inner.mean())}
