"""A model's weights as points of weight space, and the loss at such points.

The mode-connectivity tools (`mode_connectivity`, `loss_plane`) move through
weight space without rewriting the model: a point is a list of arrays in
`model.get_weights()` order, and the model is run at that point with
`model.stateless_call`, which takes the values of the trainable and the
non-trainable variables as arguments and leaves the model's own variables
untouched. `WeightLayout` maps between the two orders; `PointEvaluator`
computes the loss and accuracy at a point over a data set, in one compiled
function of the active backend (the weights are its arguments, so moving
to another point does not trace it again).

Variables that a model holds besides its weights (the states of the seed
generators of `Dropout` and other random layers) are not part of a point:
they are read from the model and, where training needs fresh randomness,
replaced with values drawn from the caller's seed.
"""

import numbers

import keras
import numpy as np

from keras_lrphase._validation import fail
from keras_lrphase.backend import autodiff
from keras_lrphase.backend import keras_compat


def check_model(name, model):
    """Raises unless `model` is a built `keras.Model` with weights."""
    if not isinstance(model, keras.Model):
        fail(name, model, "must be a keras.Model")
    if not model.built or not model.weights:
        fail(name, model.name, "must be a built keras.Model with weights")
    return model


def architecture(model):
    """What two models must share to be points of one weight space."""
    return ([type(layer).__name__ for layer in model.layers],
            [(tuple(v.shape), str(v.dtype), bool(v.trainable))
             for v in model.weights])


def check_same_architecture(name, model, reference):
    """Raises unless `model` has the layers and weight shapes of `reference`."""
    check_model(name, model)
    if architecture(model) != architecture(reference):
        fail(name, model.name, "must have the architecture of "
             f"{reference.name!r} (the same layers and weight shapes, "
             "dtypes and trainable flags, in the same order)")
    return model


def check_point(name, weights, layout):
    """`weights` as a list of NumPy arrays shaped like the model's weights."""
    if isinstance(weights, keras.Model):
        check_same_architecture(name, weights, layout.model)
        return [np.asarray(w) for w in weights.get_weights()]
    if isinstance(weights, (str, bytes)) or not hasattr(weights, "__len__"):
        fail(name, type(weights).__name__, "must be a list of arrays in "
             "`model.get_weights()` order, or a keras.Model")
    if len(weights) != len(layout.shapes):
        fail(name, f"<list of {len(weights)} arrays>", "must hold "
             f"{len(layout.shapes)} arrays, one per weight of the model")
    arrays = []
    for k, (w, shape, dtype) in enumerate(zip(weights, layout.shapes,
                                              layout.dtypes)):
        w = np.asarray(w)
        if w.shape != shape:
            fail(name, f"<list with array {k} of shape {w.shape}>",
                 f"must match the model's weight shapes (array {k}: {shape})")
        arrays.append(w.astype(dtype, copy=False))
    return arrays


class WeightLayout:
    """Where each weight of `model.get_weights()` goes in a stateless call.

    Attributes:
        model: The model.
        shapes, dtypes: Shape and NumPy dtype of each weight.
        trainable: Indices (into `get_weights()`) of the trainable weights,
            in `model.trainable_variables` order.
        non_trainable: For each of `model.non_trainable_variables`, the
            index of the weight it holds, or None for a variable that is not
            a weight (a seed generator's state).
    """

    def __init__(self, model):
        self.model = model
        weights = model.weights
        position = {id(v): k for k, v in enumerate(weights)}
        self.shapes = [tuple(v.shape) for v in weights]
        self.dtypes = [np.dtype(keras.backend.standardize_dtype(v.dtype))
                       for v in weights]
        self.trainable = [position[id(v)] for v in model.trainable_variables]
        self.non_trainable = [position.get(id(v))
                              for v in model.non_trainable_variables]
        self.weights_of_state = [k for k in self.non_trainable
                                 if k is not None]
        self.states = [v for v, k in zip(model.non_trainable_variables,
                                         self.non_trainable) if k is None]

    def split(self, weights):
        """(trainable values, non-trainable weight values) of a point."""
        return ([weights[k] for k in self.trainable],
                [weights[k] for k in self.weights_of_state])

    def state_values(self):
        """The current values of the variables that are not weights."""
        return [keras.ops.convert_to_numpy(v) for v in self.states]

    def fresh_states(self, rng):
        """New values for the non-weight variables (seed states) from `rng`."""
        values = []
        for v in self.states:
            dtype = np.dtype(keras.backend.standardize_dtype(v.dtype))
            if np.issubdtype(dtype, np.integer):
                values.append(rng.integers(0, 2**30, size=tuple(v.shape))
                              .astype(dtype))
            else:
                values.append(keras.ops.convert_to_numpy(v))
        return values

    def non_trainable_list(self, weight_values, state_values):
        """`model.non_trainable_variables` order from the two kinds."""
        weights, states = iter(weight_values), iter(state_values)
        return [next(states) if k is None else next(weights)
                for k in self.non_trainable]

    def point_from_call(self, weights, non_trainable_values):
        """`weights` with the non-trainable weights a stateless call returned."""
        point = list(weights)
        for k, value in zip(self.non_trainable, non_trainable_values):
            if k is not None:
                point[k] = keras.ops.convert_to_numpy(value).astype(
                    self.dtypes[k], copy=False)
        return point


def resolve_loss(name, model, loss):
    """The loss `fit` would compute for `model` (its own, or `loss`)."""
    compiled = keras_compat.compiled_loss(model, loss)
    if compiled is None:
        fail(name, loss, f"must be given when model {model.name!r} is not "
             "compiled with a loss")
    return compiled


def check_data(name, data):
    """`(x, y)` as NumPy nests with a common first axis."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        fail(name, type(data).__name__, "must be a tuple `(x, y)` of arrays "
             "indexed along the first axis")
    x, y = (keras.tree.map_structure(np.asarray, part) for part in data)
    sizes = {a.shape[0] if a.ndim else -1
             for a in keras.tree.flatten(x) + keras.tree.flatten(y)}
    if len(sizes) != 1 or min(sizes) < 1:
        fail(name, "<arrays of lengths " + str(sorted(sizes)) + ">",
             "must hold arrays of one common length >= 1")
    return x, y, sizes.pop()


def check_batch_size(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or value < 1:
        fail("batch_size", value, "must be an integer >= 1")
    return int(value)


def batches(x, y, size, batch_size, order=None):
    """Yields `(x, y)` batches, in `order` (an index permutation) if given."""
    for start in range(0, size, batch_size):
        if order is None:
            index = slice(start, start + batch_size)
        else:
            index = order[start:start + batch_size]
        yield (keras.tree.map_structure(lambda a: a[index], x),
               keras.tree.map_structure(lambda a: a[index], y))


def model_call(model, trainable, non_trainable, x, training, return_losses):
    """`model.stateless_call`, with `training` only where `call` takes it."""
    kwargs = {"return_losses": return_losses}
    if keras_compat.call_accepts_training(model):
        kwargs["training"] = training
    return model.stateless_call(trainable, non_trainable, x, **kwargs)


def total_loss(loss_object, y, y_pred, losses):
    """The compiled loss plus the model's own losses (regularisers), as `fit`.

    Run in a `StatelessScope`: Keras' loss of a multi-output model updates
    per-output tracking metrics, whose writes are dropped here.
    """
    with keras.StatelessScope():
        value = loss_object(y, y_pred)
    for extra in losses:
        value = value + keras.ops.cast(extra, value.dtype)
    return value


def accuracy_kind(model, loss_object, x, y):
    """How `PointEvaluator` scores accuracy for this model and these labels.

    `"sparse"` (labels are class indices) and `"categorical"` (one-hot
    labels) for an output of several classes (argmax); `"binary"` /
    `"binary_logits"` for one output unit (threshold 0.5 on a probability,
    0 on a logit, read from the loss's `from_logits`); None where accuracy
    has no meaning (several outputs, regression targets).
    """
    outputs = model.outputs if hasattr(model, "outputs") else None
    if outputs is None or len(outputs) != 1 or keras.tree.is_nested(y):
        return None
    classes = outputs[0].shape[-1]
    y = np.asarray(y)
    if classes is None or len(outputs[0].shape) != 2:
        return None
    if classes == 1:
        losses = keras.tree.flatten(getattr(model, "loss", None))
        losses += keras_compat.user_losses(loss_object)
        logits = any(getattr(l, "from_logits", False) for l in losses)
        return "binary_logits" if logits else "binary"
    if y.ndim == 2 and y.shape[-1] == classes:
        return "categorical"
    if y.ndim == 1 or (y.ndim == 2 and y.shape[-1] == 1):
        return "sparse"
    return None


def _correct(kind, y, y_pred):
    ops = keras.ops
    if kind == "sparse":
        truth = ops.cast(ops.reshape(y, (-1,)), "int32")
        guess = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
    elif kind == "categorical":
        truth = ops.argmax(y, axis=-1)
        guess = ops.argmax(y_pred, axis=-1)
    else:
        threshold = 0.0 if kind == "binary_logits" else 0.5
        truth = ops.reshape(ops.cast(y, "float32"), (-1,)) > 0.5
        guess = ops.reshape(ops.cast(y_pred, "float32"), (-1,)) > threshold
    return ops.sum(ops.cast(ops.equal(truth, guess), "float32"))


class PointEvaluator:
    """Loss and accuracy of `model` at points of its weight space.

    The loss is the one `model.evaluate` reports: the compiled loss plus the
    model's regularisation losses, averaged over the batches weighted by
    their sizes. Accuracy follows `accuracy_kind` (NaN where it has no
    meaning). The model runs in inference mode (`training=False`).
    """

    def __init__(self, model, loss_object):
        self.model = model
        self.layout = WeightLayout(model)
        self.loss_object = loss_object
        self._functions = {}

    def _function(self, kind):
        if kind not in self._functions:
            model, loss_object = self.model, self.loss_object

            def evaluate(trainable, non_trainable, x, y):
                y_pred, _, losses = model_call(model, trainable, non_trainable,
                                               x, False, True)
                loss = total_loss(loss_object, y, y_pred, losses)
                correct = (keras.ops.zeros(()) if kind is None
                           else _correct(kind, y, y_pred))
                return loss, correct

            self._functions[kind] = autodiff().compile(evaluate)
        return self._functions[kind]

    def __call__(self, weights, x, y, size, batch_size):
        """(loss, accuracy) at `weights` over `(x, y)`."""
        layout = self.layout
        kind = accuracy_kind(self.model, self.loss_object, x, y)
        function = self._function(kind)
        trainable, weight_state = layout.split(weights)
        non_trainable = layout.non_trainable_list(weight_state,
                                                  layout.state_values())
        to_tensor = keras.ops.convert_to_tensor
        trainable = [to_tensor(w) for w in trainable]
        non_trainable = [to_tensor(w) for w in non_trainable]
        loss_sum = correct = 0.0
        for bx, by in batches(x, y, size, batch_size):
            count = len(keras.tree.flatten(by)[0])
            loss, hits = function(trainable, non_trainable, bx, by)
            loss_sum += float(keras.ops.convert_to_numpy(loss)) * count
            correct += float(keras.ops.convert_to_numpy(hits))
        accuracy = correct / size if kind is not None else float("nan")
        return loss_sum / size, accuracy
