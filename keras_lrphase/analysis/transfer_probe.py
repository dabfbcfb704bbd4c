"""How well the models of successive learning stages transfer to a new task.

The Learning Stages paper (Section 5, Table 2) saves the model at the end
of each learning stage (`StageCheckpoint`) and transfers each to other
datasets in two ways: "fix" uses the network as a fixed feature extractor
and trains a linear classifier on its features, "finetune" trains the whole
network with a new classification head. The gains in target accuracy from
one stage's model to the next (`Gain12`, `Gain23`) and their ratio measure
how transferable the features learned in each stage are.

The features are the input of the model's classification layer, found by
walking back from the model's output through layers without weights
(`Softmax`, `Activation`) to the first layer with weights (the `Dense`
"logits" layer of the package's models): for them, the global-average-pooled
features. `layer=` names another layer whose input to take.

"fix" is deterministic: the features are computed in inference mode
(BatchNorm with its moving statistics), and the linear classifier is the
unique minimiser of an L2-regularised softmax regression, solved to a tight
tolerance in float64 (`fit_linear_probe`), with no seed or batch order
involved. "finetune" trains a copy of each network (the models given are
not modified) with momentum SGD on the target data, shuffled each epoch by
a generator seeded with `seed`, and the new head initialised from `seed`;
on one machine and backend it repeats exactly, except for layers that draw
their own random numbers (Dropout without a seed).
"""

import os

import keras
import numpy as np

from keras_lrphase._validation import check_choice
from keras_lrphase._validation import check_integer
from keras_lrphase._validation import check_learning_rate
from keras_lrphase._validation import check_number
from keras_lrphase._validation import fail
from keras_lrphase.analysis.linear_probe import fit_linear_probe
from keras_lrphase.analysis.margins import single_input
from keras_lrphase.analysis.transfer_table import TransferTable
from keras_lrphase.backend import keras_compat

MODES = ("fix", "finetune")


def _graph(model, name="models"):
    if not isinstance(model, keras.Model):
        fail(name, model, "must hold keras.Model objects or .keras paths")
    graph = keras_compat.functional_graph(model)
    if graph is None:
        fail(name, model.name, "must hold built Functional or Sequential "
             "models (the features are read from their graph)")
    if len(keras.tree.flatten(graph.input)) != 1 \
            or len(keras.tree.flatten(graph.output)) != 1:
        fail(name, model.name, "must hold models with one input and one "
             "output")
    return graph


def feature_layer(model):
    """The layer whose input `transfer_probe` takes as the features.

    Walks back from the model's output through layers without weights
    (a final `Softmax` or `Activation`) to the first layer with weights: the
    classification layer.

    Args:
        model: A built Functional or Sequential `keras.Model`.

    Returns:
        That layer (a `keras.layers.Layer` of `model`).

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3),
    ...     keras.layers.Dense(2, name="head"), keras.layers.Softmax()])
    >>> feature_layer(model).name
    'head'
    """
    graph = _graph(model, "model")
    tensor = keras.tree.flatten(graph.output)[0]
    while True:
        produced = keras_compat.producing_call(tensor)
        if produced is None:
            fail("model", model.name, "must end in a layer with weights (a "
                 "classification layer) to take the features at its input")
        layer, inputs = produced
        if len(inputs) != 1:
            fail("model", model.name, f"must end in a layer of one input; "
                 f"{layer.name!r} takes {len(inputs)}")
        if layer.weights:
            return layer
        tensor = inputs[0]


def _feature_tensor(model, layer):
    """`(layer, h)`: the layer and the tensor of its input in `model`."""
    graph = _graph(model)
    if layer is None:
        layer = feature_layer(model)
    elif isinstance(layer, str):
        names = [candidate.name for candidate in model.layers]
        if layer not in names:
            fail("layer", layer, f"must name a layer of model {model.name!r} "
                 f"(its layers are {names})")
        layer = model.get_layer(layer)
    return layer, single_input(graph, layer)


def penultimate_features(model, x, *, layer=None, batch_size=256):
    """The features `transfer_probe` uses: the input of `layer`, for `x`.

    Args:
        model: A built Functional or Sequential `keras.Model`.
        x: Array of inputs.
        layer: A layer of `model`, its name, or None (`feature_layer`).
            Defaults to `None`.
        batch_size: Int. Defaults to `256`.

    Returns:
        A NumPy array `(samples, ...)`, computed in inference mode.

    Example:

    >>> model = keras.Sequential([keras.Input((2,)),
    ...     keras.layers.Dense(3, name="hidden"), keras.layers.Dense(2)])
    >>> x = np.ones((5, 2), "float32")
    >>> features = penultimate_features(model, x)
    >>> bool(np.allclose(features, model.get_layer("hidden")(x)))
    True
    """
    batch_size = check_integer("batch_size", batch_size, 1)
    graph = _graph(model, "model")
    _, h = _feature_tensor(model, layer)
    extractor = keras.Model(keras.tree.flatten(graph.input)[0], h)
    x = np.asarray(x)
    # Eager calls: a new extractor per model would make `predict` trace anew.
    parts = [keras.ops.convert_to_numpy(
        extractor(x[start:start + batch_size], training=False))
        for start in range(0, len(x), batch_size)]
    return np.concatenate(parts)


def _check_target(name, data):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        fail(name, type(data).__name__, "must be a tuple `(x, y)` of arrays")
    x, y = np.asarray(data[0]), np.asarray(data[1])
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if x.ndim < 1 or y.shape != (len(x),) or len(x) < 1:
        fail(name, f"<x of shape {x.shape}, y of shape {y.shape}>",
             "must hold inputs and as many integer class indices `(n,)`")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(y == np.round(y)):
            fail(name, "<non-integer labels>", "must hold class indices")
        y = y.astype(np.int64)
    if y.min() < 0:
        fail(name, int(y.min()), "must hold class indices >= 0")
    return x, y


def _load(models, names):
    """`(names, models)` from a sequence or mapping of models or paths."""
    if isinstance(models, dict):
        given_names, models = list(models), list(models.values())
    elif isinstance(models, (list, tuple)):
        given_names, models = None, list(models)
    else:
        fail("models", type(models).__name__, "must be a list (or dict by "
             "name) of keras.Model objects or .keras paths")
    if not models:
        fail("models", models, "must hold at least one model")
    loaded, own_names = [], []
    for item in models:
        if isinstance(item, (str, os.PathLike)):
            path = os.fspath(item)
            if not os.path.isfile(path):
                fail("models", path, "must hold existing .keras files")
            item = keras.saving.load_model(path, compile=False)
            own_names.append(os.path.splitext(os.path.basename(path))[0])
        else:
            own_names.append(getattr(item, "name", None))
        _graph(item)
        loaded.append(item)
    if names is None:
        names = given_names or own_names
        if len(set(names)) != len(names):
            names = [f"model{k}" for k in range(1, len(loaded) + 1)]
    names = [str(n) for n in names]
    if len(names) != len(loaded):
        fail("names", names, f"must hold one name per model ({len(loaded)})")
    return names, loaded


def _check_shapes(model, name, x):
    expected = tuple(keras.tree.flatten(_graph(model).input)[0].shape)[1:]
    got = tuple(x.shape[1:])
    if len(expected) != len(got) or any(
            e is not None and e != g for e, g in zip(expected, got)):
        fail(name, f"<inputs of shape {got}>", f"must fit the models' input "
             f"shape {expected}")


def _finetune(model, layer, train, test, classes, *, epochs, batch_size,
              learning_rate, momentum, seed):
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    _, h = _feature_tensor(clone, clone.get_layer(layer.name))
    if len(h.shape) != 2:
        h = keras.layers.Flatten(name="transfer_flatten")(h)
    head = keras.layers.Dense(
        classes, name="transfer_head",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed))
    network = keras.Model(keras.tree.flatten(_graph(clone).input)[0], head(h))
    network.compile(
        optimizer=keras.optimizers.SGD(learning_rate, momentum=momentum),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    (x, y), (x_test, y_test) = train, test
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        network.fit(x[order], y[order], batch_size=batch_size, epochs=1,
                    shuffle=False, verbose=0)

    def accuracy(inputs, labels):
        logits = network.predict(inputs, batch_size=batch_size, verbose=0)
        return float(np.mean(np.argmax(logits, axis=1) == labels))

    return accuracy(x_test, y_test), accuracy(x, y)


def transfer_probe(models, target_train, target_test, *, mode="fix",
                   names=None, layer=None, l2=1e-3, epochs=10,
                   batch_size=128, learning_rate=0.01, momentum=0.9, seed=0):
    """Transfers each model to a target task; accuracies and stage gains.

    Use it on the models of successive learning stages (saved by
    `StageCheckpoint` as `stage1.keras`, `stage2.keras`, ...) to ask
    whether the features learned in later stages transfer less, as the
    Learning Stages paper finds: a ratio `Gain23 / Gain12` on the target
    task below the ratio on the source task.

    * `"fix"`: the network is a fixed feature extractor; a linear
      classifier (`fit_linear_probe`, L2 penalty `l2`) is fitted to the
      features of `target_train` (the input of `feature_layer(model)` or
      of `layer`) and scored on those of `target_test`. Deterministic.
    * `"finetune"`: a copy of the network with a new `Dense` head (on the
      same features, flattened if need be) is trained end to end for
      `epochs` on `target_train` with momentum SGD and cross-entropy
      (plus the network's own regularisation losses), then scored.

    Inputs are used as given: normalise them as the models' training data
    were.

    Args:
        models: List of `keras.Model` objects or paths of `.keras` files,
            in stage order, or a dict `{name: model or path}`.
        target_train: Tuple `(x, y)`: target inputs and integer labels.
        target_test: Tuple `(x, y)` with the same classes.
        mode: `"fix"` or `"finetune"`. Defaults to `"fix"`.
        names: List of strings or None: the rows' names (default: the dict
            keys, the files' stems, or the models' names; `model1`,
            `model2`, ... when these repeat). Defaults to `None`.
        layer: Layer name or None: take the features at the input of this
            layer instead of the classification layer. Defaults to `None`.
        l2: Float > 0. "fix": the probe's penalty (on standardised
            features). Defaults to `1e-3`.
        epochs: Int. "finetune": passes over `target_train`. Defaults to
            `10`.
        batch_size: Int. "finetune" batch size, and the batch size of
            feature extraction and scoring. Defaults to `128`.
        learning_rate: Float. "finetune": SGD learning rate. Defaults to
            `0.01`.
        momentum: Float in [0, 1). "finetune". Defaults to `0.9`.
        seed: Int. "finetune": seed of the head and the shuffling. Defaults
            to `0`.

    Returns:
        A `TransferTable` (accuracy per model, `gains`, `ratios`).

    Raises:
        ValueError: Before any work, for a bad argument, data that does not
            fit a model, or fewer than 2 target classes.

    Example:

    >>> x = np.array([[-2, 5], [-1, 3], [1, 4], [2, 6]] * 3, "float32")
    >>> y = (x[:, 0] > 0).astype("int32")
    >>> def model(scale):  # features: (scale * x0, 0)
    ...     m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2),
    ...                           keras.layers.Dense(3)])
    ...     m.layers[0].set_weights([np.diag([scale, 0.0]), np.zeros(2)])
    ...     return m
    >>> table = transfer_probe([model(0.0), model(1.0)], (x[:8], y[:8]),
    ...                        (x[8:], y[8:]), names=["stage1", "stage2"])
    >>> table.accuracies, table.gains  # stage1: no features, a tie: class 0
    ([0.5, 1.0], {'Gain12': 0.5})

    References:
        You, Long, Jordan, Wang, "Learning Stages: Phenomenon, Root Cause,
        Mechanism Hypothesis, and Implications", Section 5 and Table 2.
    """
    check_choice("mode", mode, MODES)
    names, loaded = _load(models, names)
    x_train, y_train = _check_target("target_train", target_train)
    x_test, y_test = _check_target("target_test", target_test)
    classes = int(max(y_train.max(), y_test.max())) + 1
    if classes < 2:
        fail("target_train", "<labels of one class>",
             "must hold at least 2 classes")
    batch_size = check_integer("batch_size", batch_size, 1)
    l2 = check_number("l2", l2, minimum=0.0, exclusive_minimum=True)
    epochs = check_integer("epochs", epochs, 1)
    learning_rate = check_learning_rate("learning_rate", learning_rate)
    momentum = check_number("momentum", momentum, minimum=0.0, maximum=1.0,
                            exclusive_maximum=True)
    seed = check_integer("seed", seed, 0)
    layers = []
    for model in loaded:
        _check_shapes(model, "target_train", x_train)
        _check_shapes(model, "target_test", x_test)
        layers.append(_feature_tensor(model, layer)[0])

    accuracies, train_accuracies = [], []
    for model, found in zip(loaded, layers):
        if mode == "fix":
            train_features = penultimate_features(
                model, x_train, layer=found, batch_size=batch_size)
            test_features = penultimate_features(
                model, x_test, layer=found, batch_size=batch_size)
            probe = fit_linear_probe(train_features, y_train, classes, l2=l2)
            accuracies.append(probe.accuracy(test_features, y_test))
            train_accuracies.append(probe.accuracy(train_features, y_train))
        else:
            test, train = _finetune(
                model, found, (x_train, y_train), (x_test, y_test), classes,
                epochs=epochs, batch_size=batch_size,
                learning_rate=learning_rate, momentum=momentum, seed=seed)
            accuracies.append(test)
            train_accuracies.append(train)
    if mode == "fix":
        settings = {"l2": l2}
    else:
        settings = {"epochs": epochs, "batch_size": batch_size,
                    "learning_rate": learning_rate, "momentum": momentum,
                    "seed": seed}
    settings["feature_layers"] = [found.name for found in layers]
    return TransferTable.from_accuracies(
        mode, names, accuracies, train_accuracies, num_classes=classes,
        train_examples=len(y_train), test_examples=len(y_test),
        settings=settings)
