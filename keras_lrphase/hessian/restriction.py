"""The training loss as a pure function of one layer's weights.

For a graph (Functional or Sequential) model and a layer that is called once,
the model splits at the layer's input: a *prefix* (the model up to the
layer's input), run once per batch, and a *head* (the layer and everything
after it), the only part each Hessian-vector product runs through. So k
products cost one forward pass of the batch plus k small head computations.

Where the layer's input cannot be computed once (a subclassed model, a
shared layer, a layer nested in a sub-model, or a branch that bypasses the
layer), products run through the whole model, with a warning.

Everything runs through `stateless_call`, so no variable of the model is
touched: BatchNormalization statistics and dropout seeds stay as they were,
and the same dropout mask is used by every product of one estimate.
"""

import warnings

import keras
from keras import ops

from keras_lrphase.backend import keras_compat
from keras_lrphase.hessian.distillation import StudentObjective
from keras_lrphase.hessian.distillation import student_layer

ALL_LAYERS = "all"


class RestrictedLoss:
    """The model's loss on a batch as a function of the target weights.

    For a `keras.distillation.Distiller`, it is the loss of its student
    in the student's weights: with `loss=None` the Distiller's objective
    (`keras_lrphase.hessian.distillation.StudentObjective`, the teacher's
    outputs computed by `loss_targets`), else `loss` on the labels.

    Args:
        model: A built `keras.Model`, or a compiled Distiller whose
            student is built.
        layer: A layer, a layer name, `None` (the last layer of the model
            with trainable weights), `"all"` (every trainable weight), or
            a list of layers or names (the weights of all of them; the
            products run from the input of the earliest one whose head
            holds them all, else through the whole model).
        loss: A Keras loss object, name or callable `loss(y_true, y_pred)`;
            `None` uses the model's compiled loss.
        training: Bool. Whether BatchNormalization and Dropout run in
            training mode.
    """

    def __init__(self, model, layer=None, loss=None, training=False):
        if not isinstance(model, keras.Model):
            raise ValueError(
                "Argument `model` must be a keras.Model. "
                f"Received: model={model!r}"
            )
        distiller, self.objective = None, None
        layers = list(layer) if isinstance(layer, (list, tuple)) else None
        if layers is not None and not layers:
            raise ValueError(
                "Argument `layer` must name at least one layer when it is a "
                f"list. Received: layer={layer!r}"
            )
        if keras_compat.is_distiller(model):
            distiller, model = model, model.student
            for one in layers or [layer]:
                student_layer(distiller, one)
        if not model.built:
            raise ValueError(
                f"Model {model.name!r} is not built: call it on a batch or "
                "call `model.build(input_shape)` before estimating its Hessian."
            )
        if not model.trainable_variables:
            raise ValueError(
                f"Model {model.name!r} has no trainable weights, so it has no "
                "Hessian to estimate."
            )
        self.model = model
        self.training = bool(training)
        if layers is None:
            self.layers = None
        else:
            self.layers = _resolve_layers(model, layers)
            layer = self.layers[0] if len(self.layers) == 1 else ALL_LAYERS
        if distiller is not None and loss is None:
            self.layer = _resolve_layer(model, layer)
            for one in self.layers or [self.layer]:
                self.objective = self.loss = StudentObjective(distiller, one)
        else:
            self.loss = _resolve_loss(model, loss)
            self.layer = _resolve_layer(model, layer)
        if self.layers is not None and len(self.layers) > 1:
            wanted = {
                id(v) for one in self.layers for v in one.trainable_variables
            }
            self.targets = [
                v for v in model.trainable_variables if id(v) in wanted
            ]
            self.prefix, self.head, reason = self._split_several()
        else:
            self.layers = None
            if self.layer is None:
                self.targets = list(model.trainable_variables)
            else:
                self.targets = list(self.layer.trainable_variables)
            self.prefix, self.head, reason = self._split()
        self.restricted = self.head is not model
        if reason is not None:
            warnings.warn(
                f"Hessian-vector products for layer {self.layer.name!r} run "
                f"through the whole model {model.name!r} because {reason}. "
                "Each product costs a full forward and backward pass.",
                stacklevel=3,
            )
        target_ids = {id(v) for v in self.targets}
        head_vars = self.head.trainable_variables
        self._target_positions = [
            i for i, v in enumerate(head_vars) if id(v) in target_ids
        ]
        self._other_positions = [
            i for i, v in enumerate(head_vars) if id(v) not in target_ids
        ]
        self._num_head_vars = len(head_vars)

    @property
    def layer_name(self):
        if self.layers is not None:
            return "+".join(one.name for one in self.layers)
        return ALL_LAYERS if self.layer is None else self.layer.name

    def _split_several(self):
        """The split at the latest layer input whose head holds every target.

        Returns (prefix or None, head model, None): the whole model when no
        layer's input splits it so.
        """
        wanted = {id(v) for v in self.targets}
        best = None
        for layer in self.layers:
            prefix, head, reason = self._split(layer)
            if reason is not None or head is self.model:
                continue
            held = {id(v) for v in head.trainable_variables}
            if wanted <= held and (
                best is None or len(held) < len(best[1].trainable_variables)
            ):
                best = (prefix, head)
        if best is None:
            return None, self.model, None
        return best[0], best[1], None

    def _split(self, layer=None):
        """Returns (prefix or None, head model, reason for no split or None)."""
        model = self.model
        layer = self.layer if layer is None else layer
        if layer is None:
            return None, model, None
        graph = keras_compat.functional_graph(model)
        if graph is None:
            return None, model, "it is not a graph (Functional) model"
        model_input, model_output = graph.input, graph.output
        if not any(candidate is layer for candidate in model.layers):
            return None, model, "the layer is nested inside a sub-model"
        calls = keras_compat.calls_in_graph(graph, layer)
        if len(calls) != 1:
            return None, model, "the layer is shared (called more than once)"
        # The input of the layer's call in this model's graph: a model built
        # on an intermediate tensor calls a clone of its graph, so the
        # layer's first call (`layer.input`) belongs to another graph.
        layer_input = keras_compat.call_input(calls[0])
        try:
            head = keras.Model(layer_input, model_output)
        except ValueError as error:
            return None, model, f"its output does not depend on the layer's input alone ({error})"
        if _same_tensors(layer_input, model_input):
            return None, head, None
        prefix = keras.Model(model_input, layer_input)
        return prefix, head, None

    # -- values the pure functions take ------------------------------------
    def loss_targets(self, x, y):
        """What `loss_fn` takes as `y`: `y`, or a Distiller's `(y, teacher)`."""
        return y if self.objective is None else self.objective.targets(x, y)

    def target_values(self):
        """Current values of the target weights, as backend tensors."""
        return [_read(v) for v in self.targets]

    def fixed_values(self):
        """Current values of everything else the head reads."""
        head_vars = self.head.trainable_variables
        others = [_read(head_vars[i]) for i in self._other_positions]
        non_trainable = [_read(v) for v in self.head.non_trainable_variables]
        return others, non_trainable

    def prefix_function(self):
        """A pure `(trainable, non_trainable, x) -> features` of the prefix."""
        prefix, training = self.prefix, self.training

        def forward(trainable, non_trainable, x):
            outputs, _ = prefix.stateless_call(
                trainable, non_trainable, x, **_training_kwargs(prefix, training)
            )
            return outputs

        return forward

    def prefix_values(self):
        if self.prefix is None:
            return [], []
        return (
            [_read(v) for v in self.prefix.trainable_variables],
            [_read(v) for v in self.prefix.non_trainable_variables],
        )

    # -- the pure loss -------------------------------------------------------
    def loss_fn(self, params, data):
        """The mean loss with target weights `params`; `data` from the caller.

        `data` is `(inputs, y, other_trainable_values, non_trainable_values)`
        where `inputs` are the head's inputs (the prefix features, or the
        model inputs when the products run through the whole model).
        """
        return self.output_loss(self.prediction_fn(params, data), data)

    def output_loss(self, predictions, data):
        """The mean loss of `predictions` against the targets in `data`."""
        loss = ops.convert_to_tensor(self.loss(data[1], predictions))
        return ops.mean(_at_least_float32(loss))

    def prediction_fn(self, params, data):
        """The model's outputs with target weights `params` (see `loss_fn`).

        Half-precision outputs (mixed precision) are cast to float32.
        """
        inputs, y, others, non_trainable = data
        trainable = [None] * self._num_head_vars
        for position, value in zip(self._target_positions, params):
            trainable[position] = value
        for position, value in zip(self._other_positions, others):
            trainable[position] = value
        predictions, _ = self.head.stateless_call(
            trainable, non_trainable, inputs, **_training_kwargs(self.head, self.training)
        )
        return keras.tree.map_structure(_at_least_float32, predictions)


def _at_least_float32(tensor):
    if keras.backend.standardize_dtype(tensor.dtype) in ("float16", "bfloat16"):
        return ops.cast(tensor, "float32")
    return tensor


def _read(variable):
    """The current value of `variable` as a tensor, never the variable itself.

    The compiled products watch and differentiate their `params`, so they
    must receive values. On TensorFlow, `convert_to_tensor` returns a
    `tf.Variable` unchanged; inside `tf.distribute.MirroredStrategy.scope()`
    (where Keras runs `fit` and its callbacks) that variable is a
    `DistributedVariable`, whose handle, which a tape or
    `ForwardAccumulator` watches, exists only in a replica context. Copying
    reads the mirrored value (identical on every replica) into a tensor.
    """
    value = ops.convert_to_tensor(variable.value)
    if keras.backend.backend() == "tensorflow":
        value = ops.copy(value)
    return value


def _resolve_layer(model, layer):
    """The target layer, or None for every trainable weight ("all")."""
    if isinstance(layer, str) and layer == ALL_LAYERS:
        return None
    if layer is None:
        for candidate in reversed(model.layers):
            if candidate.trainable_weights:
                return candidate
        raise ValueError(
            f"Model {model.name!r} has no layer with trainable weights."
        )
    if isinstance(layer, str):
        names = [candidate.name for candidate in model.layers]
        if layer not in names:
            raise ValueError(
                f"Argument `layer` names no layer of model {model.name!r}. "
                f"Received: layer={layer!r}; layers are {names}"
            )
        layer = model.get_layer(layer)
    if not isinstance(layer, keras.layers.Layer):
        raise ValueError(
            "Argument `layer` must be a layer, a layer name, None or 'all'. "
            f"Received: layer={layer!r}"
        )
    if not layer.trainable_weights:
        raise ValueError(
            f"Argument `layer` has no trainable weights. Received: "
            f"layer={layer.name!r}"
        )
    model_ids = {id(v) for v in model.trainable_variables}
    if not all(id(v) in model_ids for v in layer.trainable_weights):
        raise ValueError(
            f"Argument `layer` is not part of model {model.name!r}. "
            f"Received: layer={layer.name!r}"
        )
    return layer


def _resolve_layers(model, layers):
    """Each layer of a list (names or layers), once, in the list's order."""
    resolved, seen = [], set()
    for one in layers:
        if one is None or (isinstance(one, str) and one == ALL_LAYERS):
            raise ValueError(
                "Argument `layer` must hold layers or layer names when it is "
                f"a list (not None or 'all'). Received: layer={layers!r}"
            )
        layer = _resolve_layer(model, one)
        if id(layer) not in seen:
            seen.add(id(layer))
            resolved.append(layer)
    return resolved


def _resolve_loss(model, loss):
    """The loss as the compiled model computes it (see `compiled_loss`)."""
    if len(keras.tree.flatten(getattr(model, "outputs", None) or [None])) > 1:
        raise ValueError(
            "The Hessian is estimated for single-output models; model "
            f"{model.name!r} has {len(model.outputs)} outputs. Build a "
            "single-output model of the output you want (keras.Model("
            "model.inputs, model.outputs[i])) and estimate on it."
        )
    if loss is None:
        compiled = keras_compat.compiled_loss(model)
        if compiled is None:
            raise ValueError(
                "Argument `loss` is None and the model has no compiled loss. "
                "Pass `loss=` (a Keras loss object, name or callable) or "
                "compile the model with a loss."
            )
        return compiled
    if isinstance(loss, (list, tuple)) and len(loss) == 1:
        loss = loss[0]
    if isinstance(loss, (dict, list, tuple)):
        raise ValueError(
            "Argument `loss` must be a single loss (the Hessian is estimated "
            f"for single-output models). Received: loss={loss!r}"
        )
    if not (isinstance(loss, str) or callable(loss)):
        raise ValueError(
            "Argument `loss` must be a Keras loss object, name or callable. "
            f"Received: loss={loss!r}"
        )
    if isinstance(loss, str):
        try:
            keras.losses.get(loss)
        except ValueError:
            if loss not in ("crossentropy", "ce"):
                raise ValueError(
                    f"Argument `loss` names no Keras loss. Received: loss={loss!r}"
                ) from None
    return keras_compat.compiled_loss(model, loss)


def _same_tensors(a, b):
    flat_a, flat_b = keras.tree.flatten(a), keras.tree.flatten(b)
    return len(flat_a) == len(flat_b) and all(
        x is y for x, y in zip(flat_a, flat_b)
    )


def _training_kwargs(model, training):
    """`training=` only for models whose `call` accepts it (as `__call__`)."""
    if keras_compat.call_accepts_training(model):
        return {"training": training}
    return {}
