"""Freezing the fully-connected layers for the first epochs (Gotmare et al.)."""

import fnmatch

import keras

from keras_lrphase import _warnings
from keras_lrphase._validation import check_integer
from keras_lrphase._validation import fail
from keras_lrphase.backend import keras_compat
from keras_lrphase.hessian.distillation import all_layers
from keras_lrphase.schedules.controlled_learning_rate import (
    ControlledLearningRate,
)


class FreezeLayers(keras.callbacks.Callback):
    """Keeps some layers frozen for the first `epochs` epochs, then trains them.

    Use it as a substitute for learning rate warmup in large-batch training:
    Gotmare et al. (2019) find that warmup mainly keeps the deeper,
    fully-connected layers from large unstable changes, and that training a
    VGG-11 or ResNet with a large batch and no warmup, but with the
    fully-connected stack frozen for the first 20 epochs, reaches the
    accuracy of warmup. From epoch `epochs` (counted from 0) on, the layers
    train normally.

    What is frozen. During epochs `0 .. epochs - 1` the trainable weights of
    the frozen layers are not updated at all: they stay bit-identical, their
    optimizer slots (momentum, Adam moments, gradient accumulators) are not
    written, weight decay and gradient clipping do not see them (a global
    `clipnorm` is the norm of the other gradients), and constraints are not
    applied to them. The optimizer's step counter, learning rate schedules
    and the package's LR controllers run as usual. At the release, the
    layers train from the weights they had when the freeze began, with
    untouched (initial, i.e. zero) slots, exactly as if the optimizer
    started to update them at that step. With Adam, whose bias correction
    follows the optimizer's one step counter (Keras keeps no per-variable
    count), the released layers' moments start at zero while the correction
    is already near 1: their first steps are larger than a fresh Adam's,
    `(1 - beta_1) / sqrt(1 - beta_2)` (about 3.2 with the default betas)
    times the learning rate per coordinate at the first step. SGD with
    momentum and LARS have no such correction. The forward pass is
    unchanged: Dropout still drops, and the moving statistics of a frozen
    `BatchNormalization` keep being updated (its `gamma` and `beta` are
    frozen). With `use_ema`, the moving averages of the frozen weights are
    still computed (from the unchanged weights), and
    `ema_overwrite_frequency` writes them back into the weights.

    How. The callback never touches `layer.trainable` and needs no
    recompile: `model.trainable_variables` lists the same variables, in the
    same order, during and after the freeze, and `layer.trainable` stays
    `True`. Instead, the optimizer that owns the slots (the innermost one,
    through `LossScaleOptimizer` and `LARSWrapper`) is given a filter in
    front of its `apply` that leaves the frozen variables out of the
    (gradient, variable) lists before Keras clips, decays, accumulates and
    updates. The filter is read when the train step is traced: the step is
    traced with the frozen variables left out at the start of the freeze
    and once more at the release, and does no extra work per step. The
    freeze is held by the optimizer's `ControlledLearningRate` (its
    `frozen` part), the one object per optimizer through which the
    package's callbacks change it.
    Gradient accumulation, `LARS`, `LARSWrapper` and `LossScaleOptimizer`
    (mixed precision) need nothing special: they all reach the same
    `apply`. The alternatives do not hold up: setting
    `layer.trainable = False` inside one `fit` needs the optimizer built on
    all the variables beforehand (TensorFlow refuses the released ones
    otherwise), fails on JAX (`stateless_apply` requires exactly the
    variables the optimizer was built with), changes what
    `trainable_variables` lists and runs `BatchNormalization` in inference
    mode; masking each update and slot change in-graph with a 0/1 variable
    costs every step and must know every optimizer's slots. The backward
    pass still runs through the frozen layers to reach the layers below;
    the freeze is not meant to save computation. Works on the TensorFlow,
    JAX and torch backends.

    Resume. The state is the epoch number: frozen iff the epoch that starts
    is below `epochs`, decided at each epoch start. The frozen weights and
    their slots are ordinary variables, saved and restored by
    `BackupAndRestore` (the package's or Keras') with the others, so a run
    interrupted during or after the freeze resumes exactly; the callback
    saves nothing of its own. A `fit` stopped by an exception during the
    freeze skips `on_train_end` (Keras does), so the filter stays on the
    optimizer until the next `fit` with a `FreezeLayers` on it starts.

    Which layers, with `layers=None` (the fully-connected stack): starting
    from each output of the model, walk back through the calls of the
    model's graph while the layer is a `keras.layers.Dense` (or subclass),
    which joins the stack, or a layer with no weights at all (`Dropout`,
    `Flatten`, `Activation`, `ReLU`, pooling, `Reshape`, ...), which is
    passed through; stop at a layer with weights of another kind (`Conv2D`,
    `BatchNormalization`, a nested model), at a call with several input
    tensors (`Add`, `Concatenate`), or at the model input. The model must
    be Sequential or Functional and have at least one trailing Dense layer
    with trainable weights; a model whose trainable weights all lie in its
    Dense stack (an MLP) is refused, since nothing would train.

    Distillation: when the model being fit is a
    `keras.distillation.Distiller`, the layers are the student's (the
    teacher is frozen anyway): `layers=None` finds the student's trailing
    Dense stack, names and patterns are matched against the student's
    layers, and a layer (or a name matching only layers) of the teacher is
    an error at `on_train_begin`.

    Logs: `logs["frozen_layers"]` is the number of layers frozen during the
    epoch (0 after the release), for History, CSVLogger and TensorBoard.

    Args:
        epochs: Int >= 0. The number of epochs, from epoch 0, the layers
            stay frozen; `0` freezes nothing.
        layers: None, or a layer, a string, or a list of layers and strings.
            The layers to freeze. Strings are layer names or `fnmatch`
            patterns (`"fc*"`, `"dense_[12]"`), matched against the names of
            the model's layers, nested models' layers included; every
            string must match at least one layer. Layer objects must be
            layers of the model. Defaults to `None`: the trailing stack of
            Dense layers described above.
        verbose: Int, 0 or 1. Print a line when the layers are frozen and
            released. Defaults to `0`.

    Attributes:
        frozen_layers: The layers selected, in the order of the model's
            layers (known from `on_train_begin`).
        frozen_variables: Their trainable variables, in the order of
            `model.trainable_variables`.
        frozen: Bool. Whether the layers are frozen in the current epoch.

    Example:

    >>> import numpy as np, keras
    >>> from keras_lrphase.callbacks.freeze_layers import FreezeLayers
    >>> keras.utils.set_random_seed(0)
    >>> model = keras.Sequential([keras.Input((6, 6, 1)),
    ...     keras.layers.Conv2D(2, 3, name="conv"), keras.layers.Flatten(),
    ...     keras.layers.Dense(8, activation="relu", name="fc1"),
    ...     keras.layers.Dropout(0.5),
    ...     keras.layers.Dense(3, activation="softmax", name="fc2")])
    >>> model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
    ...               "sparse_categorical_crossentropy")
    >>> x = np.random.rand(16, 6, 6, 1).astype("float32")
    >>> y = np.arange(16) % 3
    >>> kernel = lambda: keras.ops.convert_to_numpy(model.get_layer("fc2").kernel)
    >>> start, moved = kernel(), []
    >>> record = keras.callbacks.LambdaCallback(
    ...     on_epoch_end=lambda epoch, logs: moved.append(
    ...         not np.array_equal(kernel(), start)))
    >>> freeze = FreezeLayers(epochs=2)
    >>> history = model.fit(x, y, batch_size=8, epochs=3, verbose=0,
    ...                     callbacks=[freeze, record])
    >>> [layer.name for layer in freeze.frozen_layers]
    ['fc1', 'fc2']
    >>> history.history["frozen_layers"], moved
    ([2, 2, 0], [False, False, True])

    References:
        Gotmare, Keskar, Xiong, Socher, "A Closer Look at Deep Learning
        Heuristics: Learning Rate Restarts, Warmup and Distillation",
        ICLR 2019, Section 4 (Figure 4d) and Appendix 10 (Figure 15).
    """

    def __init__(self, epochs, layers=None, *, verbose=0):
        super().__init__()
        self.epochs = check_integer("epochs", epochs, 0)
        self.layers = _check_layers(layers)
        self.verbose = check_integer("verbose", verbose, 0, 1)
        self.frozen_layers = []
        self.frozen_variables = []
        self.frozen = False
        self._freezes = None

    # -- Keras hooks -------------------------------------------------------
    def on_train_begin(self, logs=None):
        if getattr(self.model, "optimizer", None) is None:
            raise ValueError(
                "FreezeLayers needs a compiled model with an optimizer. "
                f"Received a model without an optimizer: {self.model!r}. "
                "Call `model.compile(optimizer=...)` before `fit`."
            )
        self.frozen_layers = self._select_layers()
        self.frozen_variables = _trainable_variables_of(
            self.model, self.frozen_layers
        )
        self._check_variables()
        epochs = (self.params or {}).get("epochs")
        if epochs is not None and 0 < epochs <= self.epochs and self.frozen_layers:
            _warnings.warn(
                f"FreezeLayers: the layers stay frozen for epochs={self.epochs} "
                f"but `fit` runs epochs={epochs}: they are not released in "
                f"this `fit` (a later `fit` with initial_epoch={epochs} "
                "continues the freeze).")
        self._freezes = ControlledLearningRate.install(
            self.model.optimizer, scaled=False).frozen
        self._freezes.join(self, self.model)

    def on_epoch_begin(self, epoch, logs=None):
        frozen = epoch < self.epochs
        if frozen != self.frozen:
            self.frozen = frozen
            self._freezes.changed(self.model)
            if self.verbose:
                verb = "freezes" if frozen else "releases"
                names = ", ".join(layer.name for layer in self.frozen_layers)
                keras_compat.print_msg(
                    f"Epoch {epoch + 1}: FreezeLayers {verb} "
                    f"{len(self.frozen_layers)} layers ({names})."
                )

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["frozen_layers"] = len(self.frozen_layers) if self.frozen else 0

    def on_train_end(self, logs=None):
        if self._freezes is None:
            return
        was_frozen = self.frozen
        self.frozen = False
        self._freezes.leave(self, self.model, retrace=was_frozen)
        self._freezes = None

    # -- layer selection -----------------------------------------------------
    def _select_layers(self):
        # A Distiller trains its student only: the layers are the student's.
        model = self.model
        if keras_compat.is_distiller(model):
            model = model.student
        if self.layers is None:
            return _dense_stack(model)
        model_layers = all_layers(model)
        selected = []
        for item in self.layers:
            if isinstance(item, str):
                matches = [
                    layer for layer in model_layers
                    if fnmatch.fnmatchcase(layer.name, item)
                ]
                if not matches:
                    self._refuse_teacher_layer(item)
                    names = [layer.name for layer in model_layers]
                    raise ValueError(
                        f"Argument `layers` names no layer of model "
                        f"{model.name!r}: {item!r} matches none of "
                        f"{names}. Received: layers={self.layers!r}"
                    )
            else:
                if not any(layer is item for layer in model_layers):
                    self._refuse_teacher_layer(item)
                    raise ValueError(
                        f"Argument `layers` contains layer {item.name!r}, "
                        f"which is not a layer of model {model.name!r}. "
                        f"Received: layers={self.layers!r}"
                    )
                matches = [item]
            selected.extend(matches)
        chosen = {id(layer) for layer in selected}
        return [layer for layer in model_layers if id(layer) in chosen]

    def _refuse_teacher_layer(self, item):
        """Raises when `item` (a name pattern or a layer) is the teacher's."""
        distiller = self.model
        if not keras_compat.is_distiller(distiller):
            return
        teacher = [distiller.teacher] + all_layers(distiller.teacher)
        if isinstance(item, str):
            found = any(fnmatch.fnmatchcase(layer.name, item) for layer in teacher)
            name = item
        else:
            found = any(layer is item for layer in teacher)
            name = item.name
        if found:
            raise ValueError(
                f"Argument `layers` selects {name!r}, which is the teacher "
                f"of Distiller {distiller.name!r} or one of its layers: the "
                "teacher is frozen and never trained. Pass layers of the "
                f"student {distiller.student.name!r}. "
                f"Received: layers={self.layers!r}"
            )

    def _check_variables(self):
        if self.layers is None:
            argument = "the Dense stack found with layers=None"
        else:
            argument = f"layers={self.layers!r}"
        names = [layer.name for layer in self.frozen_layers]
        if not self.frozen_variables:
            raise ValueError(
                f"FreezeLayers: {argument} selects layers {names} of model "
                f"{self.model.name!r}, which have no trainable weights: "
                "nothing would be frozen."
            )
        if len(self.frozen_variables) == len(self.model.trainable_variables):
            raise ValueError(
                f"FreezeLayers: {argument} selects layers {names}, which "
                "hold every trainable weight of model "
                f"{self.model.name!r}: nothing would train during the "
                "freeze. Pass the layers to freeze with `layers`."
            )


def _check_layers(layers):
    if layers is None:
        return None
    items = [layers] if isinstance(layers, (str, keras.layers.Layer)) else layers
    if not isinstance(items, (list, tuple)) or not items or not all(
        isinstance(item, (str, keras.layers.Layer)) for item in items
    ):
        fail("layers", layers,
             "must be None, a layer, a layer name or name pattern, or a "
             "non-empty list of them")
    if any(isinstance(item, str) and not item for item in items):
        fail("layers", layers, "must not contain an empty name")
    return list(items)


def _dense_stack(model):
    """The trailing Dense layers of the model (see the class docstring)."""
    graph = keras_compat.functional_graph(model)
    if graph is None:
        raise ValueError(
            "FreezeLayers with layers=None finds the Dense stack in the graph "
            "of a Sequential or Functional model; model "
            f"{model.name!r} ({type(model).__name__}) has none. Pass the "
            "layers to freeze with `layers`."
        )
    stack = []
    for output in keras.tree.flatten(graph.outputs):
        call = keras_compat.producing_call(output)
        while call is not None:
            layer, inputs = call
            if isinstance(layer, keras.layers.InputLayer):
                break
            if isinstance(layer, keras.layers.Dense):
                if not any(layer is seen for seen in stack):
                    stack.append(layer)
            elif layer.weights:
                break
            if len(inputs) != 1:
                break
            call = keras_compat.producing_call(inputs[0])
    if not any(layer.trainable_weights for layer in stack):
        raise ValueError(
            f"FreezeLayers with layers=None found no trailing Dense layer "
            f"with trainable weights in model {model.name!r} (its last "
            "layers with weights are not Dense). Pass the layers to freeze "
            "with `layers`."
        )
    order = {id(layer): i for i, layer in enumerate(all_layers(model))}
    return sorted(stack, key=lambda layer: order.get(id(layer), len(order)))


def _trainable_variables_of(model, layers):
    """The model's trainable variables owned by `layers`, in model order."""
    owned = {
        id(variable) for layer in layers
        for variable in layer.trainable_variables
    }
    return [v for v in model.trainable_variables if id(v) in owned]
