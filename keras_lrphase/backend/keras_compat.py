"""Every access to Keras internals, in one place.

Checked against Keras 3.15.1 (TensorFlow, JAX and torch backends). When
Keras changes one of these, this is the one module to update.

* `learning_rate_owner(optimizer)`: the optimizer whose `_learning_rate` the
  update reads (through `LossScaleOptimizer`, `LARSWrapper`).
* `raw_step(optimizer)`: the raw step counter `_iterations` that Keras
  passes to learning rate schedules (micro-steps under gradient
  accumulation), as an int.
* `current_learning_rate_object` / `replace_learning_rate_object`: read and
  replace `_learning_rate` without Keras' setter, which would untrack the
  optimizer's float learning-rate variable (it must stay an optimizer
  variable: checkpoints save it, and on JAX it is then part of the train
  step's state rather than a constant of the trace).
* `CheckpointStateStore`: a `KerasSaveable` that, set as an attribute of a
  model, is saved and restored by every Keras weight checkpoint of that
  model (`model.save_weights`, `BackupAndRestore`, `ModelCheckpoint`,
  `model.save`), in the same file as the weights, under the attribute's
  name. A file without it loads as before; a model without it ignores it.
* `functional_graph`, `calls_in_graph`, `call_input`: a layer's call in a
  model's own graph (`_nodes_by_depth`), which `layer.input` is not for a
  model built on an intermediate tensor (Keras calls a clone of the graph).
* `call_accepts_training`, `optimizer_variables_to_train`,
  `variable_index`: what `LARSWrapper` and the Hessian restriction read of
  a model's call signature and an optimizer's variable bookkeeping.
* `learning_rate_slots`: the slot variables that hold an optimizer's
  learning rate (momentum correction): what the optimizer declares with
  its own `learning_rate_slots()` method, or Keras' `SGD`'s `momentums`.
* `compiled_loss`: Keras' `CompileLoss`, the loss exactly as `fit`
  computes it (label reshaping, the `"crossentropy"` shorthand).
* `print_msg`: Keras' own printer (respects `keras.config.disable_interactive_logging`).
* `set_initial_epoch`: the attribute `fit` reads after `on_train_begin`,
  which `keras.callbacks.BackupAndRestore` sets the same way (and never
  resets).
* `filter_applied_variables`, `producing_call`, `trace_train_function_anew`:
  a filter in front of the
  `apply` of the optimizer that owns the slots (every route of a train step
  reaches it: the trainers, `stateless_apply`, `LossScaleOptimizer`,
  `LARSWrapper`), the call of a Functional graph that produced a tensor,
  and a new trace of the train step without clearing JAX's caches
  (`FreezeLayers`, `ControlledLearningRate`).
* `exact_batch_moments`: on TensorFlow, BatchNormalization's batch
  statistics with exact second derivatives while the package's products
  are traced (Keras' TensorFlow `moments` is `tf.nn.moments`, which stops
  the gradient of the mean inside the variance).
* `train_function`, `set_train_function`, `drop_train_function`,
  `intercept_make_train_function`: the train step `fit` calls
  (`model.train_function`, which Keras keeps from one `fit` to the next),
  and a hook on `model.make_train_function`, which every `fit` and
  `train_on_batch` calls before the callbacks' `on_train_begin`.
* `serialize_learning_rate_as`: the learning rate an optimizer's
  `get_config` records (so a saved model never needs the package).
* `same_fit`: whether two callbacks are in the same `fit` call (Keras
  hands every callback of one call the same `params` dict).
* `shuffle_random_state`, `set_shuffle_random_state`: the global random
  generators Keras' data adapters draw each epoch's shuffle order from
  (see `shuffle_random_state`), so that `BackupAndRestore` resumes the
  order of an uninterrupted run.
* `is_distiller`, `distiller_student_loss`, `distiller_teacher_features`:
  `keras.distillation.Distiller` (absent before Keras 3.12), the student
  loss as its `compile` converted it, and the teacher's outputs (and the
  features its distillation losses name) as its `compute_loss` reads them
  (`keras_lrphase.hessian.distillation`).
"""

import base64
import contextlib
import functools
import json
import random

import keras
import numpy as np
from keras.src.saving.keras_saveable import KerasSaveable
from keras.src.trainers.compile_utils import CompileLoss
from keras.src.utils.io_utils import print_msg  # noqa: F401  (re-exported)


def learning_rate_owner(optimizer):
    """The optimizer object whose `_learning_rate` is used in the update."""
    seen = optimizer
    while hasattr(seen, "inner_optimizer"):
        seen = seen.inner_optimizer
    if not isinstance(seen, keras.optimizers.Optimizer):
        raise ValueError(
            "Argument `optimizer` must be a keras.optimizers.Optimizer. "
            f"Received: optimizer={optimizer!r}"
        )
    return seen


def raw_step(optimizer):
    """The raw step counter schedules are called with, as a Python int."""
    owner = learning_rate_owner(optimizer)
    return int(keras.ops.convert_to_numpy(owner._iterations))


def raw_step_variable(optimizer):
    """The raw step counter variable itself (read inside the train step)."""
    return learning_rate_owner(optimizer)._iterations


def current_learning_rate_object(optimizer):
    """The float variable, schedule or callable the update reads."""
    return learning_rate_owner(optimizer)._learning_rate


def replace_learning_rate_object(optimizer, value):
    """Sets `_learning_rate` directly, keeping the variables tracked."""
    learning_rate_owner(optimizer)._learning_rate = value


def compiled_loss(model, loss=None):
    """The loss as `fit` computes it, as a callable `loss(y_true, y_pred)`.

    With `loss=None`, the model's own compiled loss (`model.compile(loss=...)`
    with its loss weights); otherwise `loss` compiled the same way. Keras'
    `CompileLoss` resolves names and the `"crossentropy"` shorthand from the
    shapes it first sees and reshapes the labels to the predictions (labels
    of shape (N,) for an output of shape (N, 1)), which calling the loss
    function directly does not. The regularisation terms (`model.losses`)
    are not part of it. Returns None when the model has no compiled loss.
    """
    if loss is None:
        return getattr(model, "_compile_loss", None)
    return CompileLoss(loss)


def user_losses(loss_object):
    """The loss objects a user passed to compile, flattened.

    `compiled_loss` returns Keras' `CompileLoss`, which keeps what the user
    gave (a string, a `keras.losses.Loss`, a structure of them) as its
    private `_user_loss`; anything else is returned as it is. Used to read
    a loss's `from_logits`. Returns `[]` for None.
    """
    if loss_object is None:
        return []
    user = getattr(loss_object, "_user_loss", loss_object)
    return keras.tree.flatten(user) if user is not None else []


def functional_graph(model):
    """The Functional graph of a Functional or Sequential model, or None."""
    graph = getattr(model, "_functional", None) or model
    try:
        graph.input, graph.output
    except (AttributeError, ValueError):
        return None
    return graph if hasattr(graph, "_nodes_by_depth") else None


def calls_in_graph(graph, layer):
    """The nodes (calls) of `layer` in this graph."""
    return [
        node for nodes in graph._nodes_by_depth.values() for node in nodes
        if node.operation is layer
    ]


def call_input(node):
    """The input tensor(s) of one call of a layer, shaped like `layer.input`."""
    tensors = list(node.input_tensors)
    return tensors[0] if len(tensors) == 1 else tensors


def call_accepts_training(model):
    """Whether `model.call` takes `training=` (as `model.__call__` checks)."""
    return getattr(model, "_call_has_training_arg", True)


def optimizer_variables_to_train(optimizer):
    """The model variables a built optimizer updates, in its index order."""
    return optimizer._trainable_variables


def variable_index(optimizer, variable):
    """The index of `variable` in the optimizer's slot lists."""
    return optimizer._get_variable_index(variable)


def uses_weight_decay(optimizer, variable):
    """Whether `optimizer`'s weight decay applies to `variable`.

    Keras' own decision (`exclude_from_weight_decay`), which an optimizer
    subclass that applies the decay in its `update_step` must follow.
    """
    return optimizer._use_weight_decay(variable)


def backup_file_paths(callback):
    """`(weights, metadata)`: the files of a `keras.callbacks.BackupAndRestore`.

    The paths Keras' callback reads and writes in its `backup_dir`; a
    subclass that writes them itself must use the same ones.
    """
    return callback._weights_path, callback._training_metadata_path


def learning_rate_slots(optimizer):
    """The slot variables that hold the optimizer's learning rate, or None.

    Momentum correction multiplies these by r when the learning rate
    changes by r. An optimizer declares them with a method
    `learning_rate_slots()` returning the variables (an empty list before
    `build` or without momentum), and their decay per update as its float
    attribute `momentum`: the package's `LARS` does, and so can any user
    optimizer. Keras' `SGD` declares nothing; its velocity `momentums`
    (v = m v - lr g, absent before `build`, empty with `momentum=0`) is
    read here. Any other optimizer gets None (Adam's moments, for one, do
    not hold the learning rate): no momentum correction applies to it.
    """
    owner = learning_rate_owner(optimizer)
    declared = getattr(owner, "learning_rate_slots", None)
    if callable(declared):
        if not isinstance(getattr(owner, "momentum", None), (int, float)):
            raise ValueError(
                f"{type(owner).__name__} defines `learning_rate_slots()` "
                "but no float attribute `momentum` (the decay of those "
                "slots per update), which momentum correction needs. "
                f"Received: optimizer={owner!r}"
            )
        return list(declared())
    if isinstance(owner, keras.optimizers.SGD):
        return list(getattr(owner, "momentums", None) or [])
    return None


def set_initial_epoch(model, epoch):
    """The epoch the running `fit` starts at (what BackupAndRestore sets).

    `None` lets `fit` start at its own `initial_epoch`. Keras never resets
    the attribute: once a `BackupAndRestore` resumed a `fit`, every later
    `fit` of the model started at that epoch, whatever its `initial_epoch`.
    """
    model._initial_epoch = None if epoch is None else int(epoch)


def drop_train_function(model):
    """Makes the next `fit` make the train step anew (Keras' own way)."""
    if getattr(model, "train_function", None) is not None:
        model.train_function = None


def train_function(model):
    """The train step `fit` calls next (None before the first `fit`)."""
    return getattr(model, "train_function", None)


def set_train_function(model, function):
    """Makes `fit` call `function` (one `train_function` made earlier)."""
    model.train_function = function


def intercept_make_train_function(model, before):
    """Runs `before(force)` whenever the train step of `model` is made.

    Keras' trainers make the train step through `model.make_train_function`
    at the start of every `fit` and `train_on_batch` call (before any
    callback's `on_train_begin`) and, with `force=True`, for whoever asks
    for a new one. While set, the hook is an attribute of this model
    instance: `before(force)` runs first and returns True when it made the
    train step itself, else Keras' own method runs. `before=None` removes
    the hook.
    """
    if before is None:
        model.__dict__.pop("make_train_function", None)
        return

    def make_train_function(force=False):
        if not before(force):
            type(model).make_train_function(model, force=force)

    object.__setattr__(model, "make_train_function", make_train_function)


def same_fit(callback, other):
    """Whether `callback` and `other` are callbacks of the same `fit` call.

    Keras' `CallbackList` hands one `params` dict, made anew for each
    `fit` call, to every callback of that call (`set_params`, before any
    `on_train_begin`).
    """
    params = getattr(callback, "params", None)
    return params is not None and params is getattr(other, "params", None)


def serialize_learning_rate_as(optimizer, plain):
    """Makes the optimizer's config record `plain()` as its learning rate.

    `optimizer.get_config()` (what `model.save`, `ModelCheckpoint` and
    `keras.optimizers.serialize` record) then serialises the optimizer as
    if `plain()` (a float variable or a schedule) were its learning rate,
    whatever callable the train step reads meanwhile. The hook is an
    attribute of this optimizer instance; `plain=None` removes it.
    """
    owner = learning_rate_owner(optimizer)
    if plain is None:
        owner.__dict__.pop("get_config", None)
        return

    def get_config():
        current = owner._learning_rate
        owner._learning_rate = plain()
        try:
            return type(owner).get_config(owner)
        finally:
            owner._learning_rate = current

    object.__setattr__(owner, "get_config", get_config)


class CheckpointStateStore(KerasSaveable):
    """JSON-serialisable state saved inside a model's weight checkpoints.

    `entries` maps a name to a callable returning that participant's state
    (a JSON-serialisable dict) at save time. `loaded` maps each name found
    in the last checkpoint loaded into the model to its state, and
    `load_count` counts loads, so a participant can tell a fresh restore
    from an old one.
    """

    def __init__(self):
        self.entries = {}
        self.loaded = {}
        self.load_count = 0

    def _obj_type(self):
        return "Operation"

    def save_own_variables(self, store):
        payload = {name: get() for name, get in self.entries.items()}
        text = json.dumps(payload, allow_nan=True, sort_keys=True)
        store["state"] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)

    def load_own_variables(self, store):
        self.load_count += 1
        if "state" not in store.keys():
            self.loaded = {}
            return
        text = bytes(np.asarray(store["state"], dtype=np.uint8)).decode("utf-8")
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(
                "The keras_lrphase state stored in this checkpoint is "
                f"damaged and cannot be read ({error})."
            ) from None
        self.loaded = payload if isinstance(payload, dict) else {}


def filter_applied_variables(optimizer, skipped):
    """Leaves the variables `skipped()` names out of the optimizer's `apply`.

    The filter is an attribute `apply` of the optimizer that owns the slots
    (`learning_rate_owner`), which the trainers, `stateless_apply` (JAX),
    `LossScaleOptimizer` and `LARSWrapper` all call with the gradients of
    every trainable variable. It drops the (gradient, variable) pairs of
    the variables `skipped()` returns (a collection of variables; called
    when `apply` runs, so once per trace of a compiled train step) and
    passes the rest to the optimizer's own `apply`, which then clips,
    decays, accumulates and updates only those: the skipped variables and
    their slots are not written. An optimizer built here is built on all
    the variables, as `apply` builds it. `skipped=None` removes the filter.
    """
    owner = learning_rate_owner(optimizer)
    if skipped is None:
        own = vars(owner).get("apply")
        if own is not None and hasattr(own, "_lrphase_previous"):
            if own._lrphase_previous is None:
                del owner.__dict__["apply"]
            else:
                object.__setattr__(owner, "apply", own._lrphase_previous)
        return
    previous = vars(owner).get("apply")
    plain_apply = previous or type(owner).apply.__get__(owner)

    def apply(grads, trainable_variables=None):
        variables_out = skipped()
        if not variables_out or (trainable_variables is None and not owner.built):
            return plain_apply(grads, trainable_variables)
        if trainable_variables is None:
            variables = owner._trainable_variables
        else:
            variables = list(trainable_variables)
            if not owner.built:
                with keras.name_scope(owner.name, caller=owner):
                    owner.build(variables)
                owner.built = True
        out = {owner._get_variable_index(v) for v in variables_out}
        kept = [
            (g, v) for g, v in zip(grads, variables)
            if owner._get_variable_index(v) not in out
        ]
        return plain_apply([g for g, _ in kept], [v for _, v in kept])

    apply._lrphase_previous = previous
    object.__setattr__(owner, "apply", apply)


def producing_call(tensor):
    """The layer that produced a symbolic tensor, and that call's inputs.

    Returns `(layer, input_tensors)` (a flat list), or None for a model
    input.
    """
    history = getattr(tensor, "_keras_history", None)
    if history is None or history.operation is None:
        return None
    node = history.operation._inbound_nodes[history.node_index]
    return node.operation, list(keras.tree.flatten(node.input_tensors))


def trace_train_function_anew(model):
    """Makes the next train step a new trace of `model.train_step`; returns it.

    TensorFlow and torch: a new `tf.function` (a new function). JAX: Keras
    jits the bound method `model.train_step`, and JAX's trace cache, keyed
    on that function, hands a new `jit` of an equal bound method the old
    trace while the old one lives (its constants, e.g. the package's
    warmup ramp, included). Here the new `jit` is of a new
    `functools.partial`, equal to no earlier function, so it is traced anew
    and no cache of the process is cleared. The callers make every train
    step that differs from Keras' own this way (the package's in-graph
    learning rate, `FreezeLayers`' filter), so the bound-method traces of
    the later `fit` calls that Keras makes are always the plain step. Keras'
    own `make_train_function` is called, past any instance hook of
    `intercept_make_train_function`.
    """
    if keras.backend.backend() != "jax":
        type(model).make_train_function(model, force=True)
        return model.train_function
    object.__setattr__(
        model, "train_step", functools.partial(type(model).train_step, model)
    )
    try:
        type(model).make_train_function(model, force=True)
    finally:
        del model.__dict__["train_step"]
    return model.train_function


def is_distiller(model):
    """Whether `model` is a `keras.distillation.Distiller` (Keras >= 3.12)."""
    distillation = getattr(keras, "distillation", None)
    distiller = getattr(distillation, "Distiller", None)
    return distiller is not None and isinstance(model, distiller)


def distiller_student_loss(distiller):
    """The student loss as `Distiller.compile` converted it, or None before."""
    return getattr(distiller, "_student_loss", None)


def distiller_teacher_features(distiller, x):
    """The teacher's outputs on `x` as `Distiller.compute_loss` reads them.

    A dict: `"final_output"` and, for each distillation loss that names a
    teacher layer, that layer's output (the teacher runs with
    `training=False`).
    """
    return distiller._extract_all_teacher_features(x)


@contextlib.contextmanager
def exact_batch_moments():
    """Batch statistics that are exact to second order, on TensorFlow.

    Keras' TensorFlow `moments` (BatchNormalization in training mode) is
    `tf.nn.moments`, whose variance is mean((x - stop_gradient(mean))^2):
    the same values and exact gradients (the mean's term vanishes there),
    but second derivatives that miss the mean's dependence on the inputs.
    Inside this context Keras' `_compute_moments` is the same computation
    without the `stop_gradient`, so a Hessian through batch statistics is
    exact; functions traced inside keep it. Other backends compute the
    variance without stopping gradients and are left alone.
    """
    if keras.backend.backend() != "tensorflow":
        yield
        return
    import tensorflow as tf
    from keras.src.backend.tensorflow import nn

    original = nn._compute_moments

    def compute_moments(x, axes, keepdims):
        mean = tf.reduce_mean(x, axes, keepdims=True)
        variance = tf.reduce_mean(tf.math.squared_difference(x, mean), axes,
                                  keepdims=True)
        if not keepdims:
            mean = tf.squeeze(mean, axes)
            variance = tf.squeeze(variance, axes)
        return mean, variance

    nn._compute_moments = compute_moments
    try:
        yield
    finally:
        nn._compute_moments = original


def shuffle_random_state():
    """The state of the generators `fit(shuffle=True)` draws its order from.

    Keras draws each epoch's shuffle order, when the epoch's first batch
    is requested, from global generators: NumPy arrays from `np.random` on
    JAX (`ArrayDataAdapter._get_iterator`), from torch's default generator
    on torch (its `RandomSampler` and `DataLoader` seed), a
    `keras.utils.PyDataset` from Python's `random` on every backend. None
    of them is saved by `BackupAndRestore`, so a resumed run drew the order
    of the uninterrupted run's first epochs again. (On TensorFlow, arrays
    are shuffled by a tf.data op seeded by the global seed, in the same
    order every epoch.) Returns a JSON-serialisable dict.
    """
    name, keys, position, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
        "numpy": [name, np.asarray(keys).tolist(), int(position),
                  int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss_next],
    }
    if keras.backend.backend() == "torch":
        import torch

        state["torch"] = base64.b64encode(
            torch.get_rng_state().numpy().tobytes()).decode("ascii")
    return state


def set_shuffle_random_state(state):
    """Restores `shuffle_random_state()`'s output (parts absent are kept)."""
    if "numpy" in state:
        name, keys, position, has_gauss, cached = state["numpy"]
        np.random.set_state(
            (name, np.asarray(keys, np.uint32), position, has_gauss, cached))
    if "python" in state:
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))
    if "torch" in state and keras.backend.backend() == "torch":
        import torch

        data = np.frombuffer(base64.b64decode(state["torch"]), np.uint8)
        torch.set_rng_state(torch.from_numpy(data.copy()))
