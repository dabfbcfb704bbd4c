"""Layer-by-layer SVCCA similarity of two models: the heatmaps of Gotmare et al.

Cell `(i, j)` of the matrix is the SVCCA similarity of layer `i` of one model
and layer `j` of another on the same inputs (Figures 5, 6 and 14 of Gotmare
et al., 2019): the same network at two training iterations, a student and
its teacher, or two runs. See `keras_lrphase.analysis.activations` for how
activations become data points (spatial positions, pooling to the smaller
size, sampling) and `keras_lrphase.analysis.cca` for the arithmetic.

Cost: each model runs once over the inputs, in batches of `batch_size`,
through one multi-output `keras.Model`; for each (layer, pooled size) at
most `max_rows` data points are kept, as float32 (complex64 for the DFT
form); float64 is used only inside the SVD/CCA of one pooled size at a
time, and the SVD of a (layer, pooled size) is computed once and reused for
every pair that needs it. The arithmetic runs in NumPy's BLAS: on a CPU
shared with other busy processes, limiting its threads (e.g.
`threadpoolctl.threadpool_limits(1, "blas")`) can make it much faster.
"""


import numpy as np

from keras_lrphase._validation import check_integer
from keras_lrphase._validation import fail
from keras_lrphase.analysis.activations import FourierSample
from keras_lrphase.analysis.activations import PositionSample
from keras_lrphase.analysis.activations import collect_activations
from keras_lrphase.analysis.cca import basis_correlations
from keras_lrphase.analysis.cca import check_keep_variance
from keras_lrphase.analysis.cca import reduced_basis

METHODS = ("svcca", "dft_svcca")


def _layer_types():
    import keras

    names = ("Dense", "EinsumDense", "Conv1D", "Conv2D", "Conv1DTranspose",
             "Conv2DTranspose", "DepthwiseConv1D", "DepthwiseConv2D",
             "SeparableConv1D", "SeparableConv2D")
    return tuple(getattr(keras.layers, n) for n in names
                 if hasattr(keras.layers, n))


def default_layers(model):
    """The layers `layer_similarity` compares by default: convolutions and dense.

    The top-level layers of `model` that are dense or 1D/2D convolutional
    layers (`Dense`, `EinsumDense`, `Conv1D`, `Conv2D`, their transposed,
    depthwise and separable forms), in the model's order. Their outputs are
    read before any following normalisation or activation layer.

    Args:
        model: A `keras.Model`.

    Returns:
        List of layer names.

    Example:

    >>> from keras_lrphase.models import resnet20
    >>> names = default_layers(resnet20())
    >>> len(names), names[0], names[-1]
    (20, 'stem_conv', 'logits')
    """
    types = _layer_types()
    return [layer.name for layer in model.layers if isinstance(layer, types)]


def _resolve_layers(argument, model, layers):
    if layers is None:
        layers = default_layers(model)
        if not layers:
            fail(argument, None, f"must be given: model {model.name!r} has no "
                 "dense or convolutional layer")
    if isinstance(layers, str) or not hasattr(layers, "__iter__"):
        fail(argument, layers, "must be a list of layers or layer names")
    own = {layer.name: layer for layer in model.layers}
    resolved = []
    for item in layers:
        name = item if isinstance(item, str) else getattr(item, "name", None)
        if name not in own or (not isinstance(item, str) and own[name] is not item):
            fail(argument, list(layers), f"must name layers of model "
                 f"{model.name!r}; {item!r} is not one of them")
        resolved.append(own[name])
    if not resolved:
        fail(argument, list(layers), "must hold at least one layer")
    return resolved


def _map_shape(argument, layer):
    try:
        shape = tuple(layer.output.shape)
    except (AttributeError, ValueError) as error:
        fail(argument, layer.name, f"must name layers with one output ({error})")
    if len(shape) not in (2, 3, 4) or any(d is None for d in shape[1:]):
        fail(argument, layer.name, "must name layers whose output is "
             f"(samples, [height, [width,]] neurons) with known sizes; "
             f"the output shape is {shape}")
    if len(shape) == 2:
        return 1, 1, shape[1]
    if len(shape) == 3:
        return shape[1], 1, shape[2]
    return shape[1], shape[2], shape[3]


def _check_model(argument, model):
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs or len(inputs) != 1:
        fail(argument, getattr(model, "name", model), "must be a built "
             "functional or Sequential keras.Model with one input")


def layer_similarity(
    model_a,
    model_b,
    x,
    *,
    layers_a=None,
    layers_b=None,
    method="svcca",
    keep_variance=0.99,
    max_rows=10_000,
    batch_size=128,
    seed=0,
):
    """SVCCA similarity of every layer of one model with every layer of another.

    Use it to see which layers of two networks hold the same representation:
    the same model at two training iterations (where did warmup change the
    network?), a distilled and an independently trained student against
    their teacher, or a model with itself (ones on the diagonal). Plot the
    result with `plot_layer_similarity`.

    Data points: for a convolutional layer every spatial position of every
    input is a data point with `channels` neurons; two layers of different
    spatial sizes are average-pooled to the smaller size first (a dense layer
    is 1x1), and at most `max_rows` (input, position) pairs, drawn with
    `seed`, are kept per pooled size, the same for both models.
    `method="dft_svcca"` uses the DFT form of Raghu et al. (2017) instead:
    after pooling, each input's maps are Fourier transformed, SVCCA is run
    separately at each spatial frequency with the inputs as data points, and
    the similarity is the mean of all the frequencies' correlations; at most
    `max_rows` (input, frequency) pairs are kept. The forms agree when the
    inputs are translation invariant.

    Args:
        model_a: A built `keras.Model` with one input (functional or
            Sequential). Its layers are the rows.
        model_b: A built `keras.Model` taking the same inputs (may be
            `model_a`). Its layers are the columns.
        x: Array of inputs, indexed along the first axis.
        layers_a: List of layers of `model_a`, or their names. Defaults to
            `default_layers(model_a)`: the dense and convolutional layers.
        layers_b: The same for `model_b`.
        method: `"svcca"` or `"dft_svcca"`. Defaults to `"svcca"`.
        keep_variance: Float in (0, 1]. Fraction of each layer's variance
            kept by the SVD step (`1.0`: plain CCA). Defaults to `0.99`.
        max_rows: Int. Most data points kept per layer and pooled size.
            Defaults to `10_000`.
        batch_size: Int. Inputs per forward pass. Defaults to `128`.
        seed: Int. Seed of the data point sample. Defaults to `0`.

    Returns:
        A float64 NumPy array of shape `(len(layers_a), len(layers_b))` with
        entries in [0, 1] (NaN where a layer has no variance on `x`).

    Raises:
        ValueError: For an unknown method or layer, a bad number, or when
            `x` gives no more data points than a layer has neurons.

    Example:

    >>> import keras
    >>> inputs = keras.Input((8, 8, 3))
    >>> h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    >>> h = keras.layers.GlobalAveragePooling2D()(h)
    >>> model = keras.Model(inputs, keras.layers.Dense(3, name="dense")(h))
    >>> x = np.random.default_rng(0).normal(size=(32, 8, 8, 3))
    >>> similarity = layer_similarity(model, model, x)
    >>> similarity.shape, np.round(np.diag(similarity), 6).tolist()
    ((2, 2), [1.0, 1.0])

    References:
        Gotmare et al., "A Closer Look at Deep Learning Heuristics: Learning
        Rate Restarts, Warmup and Distillation", ICLR 2019, Section 2.2.
        Raghu et al., "SVCCA: Singular Vector Canonical Correlation Analysis
        for Deep Learning Dynamics and Interpretability", NeurIPS 2017.
    """
    if method not in METHODS:
        fail("method", method, f"must be one of {', '.join(METHODS)}")
    keep_variance = check_keep_variance(keep_variance)
    max_rows = check_integer("max_rows", max_rows, 2)
    batch_size = check_integer("batch_size", batch_size, 1)
    seed = check_integer("seed", seed, 0)
    _check_model("model_a", model_a)
    _check_model("model_b", model_b)
    if not hasattr(x, "shape") or not hasattr(x, "__getitem__"):
        x = np.asarray(x)
    if len(x.shape) < 1 or x.shape[0] < 2:
        fail("x", f"<array of shape {tuple(x.shape)}>",
             "must be an array of at least 2 inputs")
    num_inputs = int(x.shape[0])
    rows = _resolve_layers("layers_a", model_a, layers_a)
    columns = _resolve_layers("layers_b", model_b, layers_b)
    shapes_a = [_map_shape("layers_a", layer) for layer in rows]
    shapes_b = [_map_shape("layers_b", layer) for layer in columns]

    # The pooled size of every pair, and the data points of every size.
    sizes = {(i, j): (min(sa[0], sb[0]), min(sa[1], sb[1]))
             for i, sa in enumerate(shapes_a) for j, sb in enumerate(shapes_b)}
    kind = FourierSample if method == "dft_svcca" else PositionSample
    samples = {size: kind(size, num_inputs, max_rows, seed)
               for size in sorted(set(sizes.values()))}
    for (i, j), size in sizes.items():
        for layer, shape in ((rows[i], shapes_a[i]), (columns[j], shapes_b[j])):
            if samples[size].data_points <= shape[2]:
                fail("x", f"<array of shape {tuple(x.shape)}>",
                     f"must give more data points than the {shape[2]} neurons "
                     f"of layer {layer.name!r} pooled to {size[0]}x{size[1]} "
                     f"(it gives {samples[size].data_points}; pass more "
                     "inputs or a larger `max_rows`)")

    same_model = model_b is model_a
    needs_a, needs_b = {}, {}
    for (i, j), size in sizes.items():
        needs_a.setdefault(rows[i].name, set()).add(size)
        (needs_a if same_model else needs_b).setdefault(
            columns[j].name, set()).add(size)
    data_a = _collect(model_a, needs_a, samples, x, batch_size)
    data_b = data_a if same_model else _collect(model_b, needs_b, samples, x,
                                                batch_size)

    similarity = np.full((len(rows), len(columns)), np.nan)
    for size in samples:
        pairs = [pair for pair, s in sizes.items() if s == size]
        bases = {}

        def basis(data, name):
            key = (id(data), name)
            if key not in bases:
                bases[key] = _bases(data.pop((name, size)), method,
                                    keep_variance)
            return bases[key]

        for i, j in pairs:
            similarity[i, j] = _similarity(basis(data_a, rows[i].name),
                                           basis(data_b, columns[j].name))
        del bases
    return similarity


def _collect(model, needs, samples, x, batch_size):
    layers = [model.get_layer(name) for name in needs]
    wanted = {name: [samples[size] for size in sorted(sizes)]
              for name, sizes in needs.items()}
    return collect_activations(model, layers, x, wanted, batch_size)


def _bases(data, method, keep_variance):
    # One orthonormal basis per CCA: one for positions, one per frequency.
    if method == "svcca":
        return [reduced_basis(data, keep_variance)]
    return [reduced_basis(data[:, f, :], keep_variance)
            for f in range(data.shape[1])]


def _similarity(bases_a, bases_b):
    correlations = np.concatenate([basis_correlations(a, b)
                                   for a, b in zip(bases_a, bases_b)])
    return float(np.mean(correlations)) if correlations.size else float("nan")
