"""The curvature of a Keras model's loss over a dataset, as a linear operator.

`HessianOperator` multiplies vectors by the Hessian (or the Gauss-Newton
matrix) of a model's mean loss over a whole dataset, in any set of its
trainable weights: every weight, one layer, or a list of layers. It is what
the spectrum estimators of `keras_lrphase.hessian.spectrum` run on, and
what a user hands to SciPy (`as_linear_operator`) for anything else.

The products are those of the eigenvalue engine (`HessianEigenvalueEstimator`):
forward-over-back on each backend, through `stateless_call` (no variable of
the model is touched), restricted to the head after the earliest measured
layer where the model splits there (the prefix runs once per batch, not
once per product).
"""

import sys

import keras
import numpy as np
from keras import ops

from keras_lrphase._validation import check_bool
from keras_lrphase._validation import check_choice
from keras_lrphase._validation import check_integer
from keras_lrphase._validation import check_optional_integer
from keras_lrphase._validation import fail
from keras_lrphase.backend import autodiff
from keras_lrphase.hessian.batch import as_arrays
from keras_lrphase.hessian.batch import validate_batch
from keras_lrphase.hessian.estimator import cached_product
from keras_lrphase.hessian.estimator import compiled_loss_key
from keras_lrphase.hessian.estimator import identity_key
from keras_lrphase.hessian.estimator import model_uses_xla
from keras_lrphase.hessian.estimator import to_tensors
from keras_lrphase.hessian.restriction import RestrictedLoss

CURVATURES = ("hessian", "gauss_newton")
PRODUCT_MODES = ("forward_over_back", "reverse_over_reverse")


class HessianOperator:
    """The Hessian (or Gauss-Newton matrix) of a model's loss over a dataset.

    `operator.matvec(v)` is H v for a flat vector `v` over the chosen
    weights, where H is the Hessian of the model's mean loss over every
    sample of `data`: the products of the batches are summed, each weighted
    by its number of samples, so the result equals the full-batch product
    exactly whatever the batch size (in inference mode). In a multi-worker
    run, each worker passes its own shard and the products are summed over
    the workers too, through `reducer`: every worker gets the Hessian of the
    mean loss over all workers' samples.

    Use it to run your own linear algebra on the curvature
    (`as_linear_operator()` for `scipy.sparse.linalg`), or through the
    estimators `top_hessian_eigenvalues`, `hessian_trace` and
    `hessian_density`, which build one from the same arguments.

    `curvature="gauss_newton"` gives the generalised Gauss-Newton matrix
    G = J^T H_L J (J: the Jacobian of the model's outputs in the weights,
    H_L: the Hessian of the loss in the outputs), positive semi-definite
    whenever the loss is convex in the model's outputs (cross-entropy on
    logits or on probabilities, mean squared error).

    The batches are read once, at construction, and held in memory (as the
    head's inputs when the products are restricted): pass the sample the
    Hessian is to be measured on (e.g. `dataset.take(8)`, or `steps=`).
    The weights are read at construction and by `refresh()`.

    Args:
        model: A built `keras.Model` (or a compiled
            `keras.distillation.Distiller`: its student).
        data: `(x, y)` arrays (split into batches of `batch_size`), a
            `tf.data.Dataset` or a `keras.utils.PyDataset` yielding
            `(x, y)` batches, or an iterable of `(x, y)` batches.
        layer: The weights: `"all"` (every trainable weight), a layer or
            layer name, a list of them, or `None` (the last layer with
            trainable weights). Defaults to `"all"`.
        loss: A Keras loss (object, name or callable); `None` uses the
            model's compiled loss. Regularisation losses (`model.losses`)
            are not part of the Hessian. Defaults to `None`.
        curvature: `"hessian"` or `"gauss_newton"`. Defaults to
            `"hessian"`.
        training: Bool. Whether BatchNormalization and Dropout run in
            training mode. In inference mode (the default) BatchNorm is a
            fixed affine map with its moving statistics, the loss is a mean
            of per-sample losses, and the Hessian does not depend on the
            batching. In training mode each batch is normalised with its
            own statistics, which depend on every weight before the layer
            and on the batch: the Hessian is that of the mean of the batch
            losses as training computes them, and changes with the batch
            size; the moving statistics are not updated. Dropout then
            draws one mask per batch (the model's seed state, not
            advanced), the same for every product, so the Hessian is that
            of one thinned network per batch. Defaults to `False`.
        batch_size: Int >= 1. Samples per batch when `data` are arrays.
            Defaults to `128`.
        steps: Int >= 1 or None. Batches read from a dataset, a PyDataset
            or an iterable (required when it is infinite). Defaults to
            `None` (all).
        reducer: A `MetricReducer` or None. Sums the products over the
            workers of a multi-worker run. Defaults to `None`:
            `keras_lrphase.distributed.default_reducer()`.
        hvp: `"forward_over_back"` or `"reverse_over_reverse"`: how a
            Hessian-vector product is differentiated. Defaults to
            `"forward_over_back"`.

    Example:

    >>> import numpy as np, keras
    >>> from keras_lrphase.hessian import HessianOperator
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> x = np.eye(3, dtype="float32"); y = np.zeros((3, 2), "float32")
    >>> operator = HessianOperator(model, (x, y), loss="mse", batch_size=2)
    >>> operator.size, operator.samples
    (8, 3)
    >>> round(float(np.linalg.eigvalsh(operator.dense())[-1]), 4)  # 2/6 * 4
    1.3333
    """

    def __init__(
        self,
        model,
        data,
        *,
        layer="all",
        loss=None,
        curvature="hessian",
        training=False,
        batch_size=128,
        steps=None,
        reducer=None,
        hvp="forward_over_back",
    ):
        self.curvature = check_choice("curvature", curvature, CURVATURES)
        self.hvp = check_choice("hvp", hvp, PRODUCT_MODES)
        self.training = check_bool("training", training)
        self.batch_size = check_integer("batch_size", batch_size, 1)
        self.steps = check_optional_integer("steps", steps, 1)
        if not isinstance(model, keras.Model):
            fail("model", model, "must be a keras.Model")
        if reducer is None:
            from keras_lrphase.distributed.reducer_selection import default_reducer

            reducer = default_reducer()
        self.reducer = reducer
        self.model = model
        (self._restricted, self._prefix, self._product,
         self._gradient) = self._compiled(model, layer, loss)
        restricted = self._restricted
        self.shapes = [tuple(v.shape) for v in restricted.targets]
        self._sizes = [int(np.prod(s)) for s in self.shapes]
        self.size = int(sum(self._sizes))
        self.dtype = keras.backend.result_type(
            *[v.dtype for v in restricted.targets]
        )
        self._batches = []
        for x, y in batches_of(data, self.batch_size, self.steps):
            targets = to_tensors(restricted.loss_targets(x, y))
            self._batches.append([to_tensors(x), targets, len_of(x)])
        self.samples = sum(batch[2] for batch in self._batches)
        self.products = 0
        self.refresh(check=True)

    # -- compiled functions, shared by operators on one model ----------------
    def _compiled(self, model, layer, loss):
        key = (
            "spectrum",
            _layer_key(layer),
            identity_key(loss),
            compiled_loss_key(model) if loss is None else None,
            self.curvature,
            self.hvp,
            self.training,
            model_uses_xla(model),
        )
        return cached_product(
            model, key, lambda: self._compile(model, layer, loss))

    def _compile(self, model, layer, loss):
        restricted = RestrictedLoss(
            model, layer=layer, loss=loss, training=self.training
        )
        backend = autodiff()
        prefix = None
        if restricted.prefix is not None:
            prefix = backend.compile(
                restricted.prefix_function(),
                jit_compile=model_uses_xla(model),
            )
        whole = getattr(backend, "whole_batch_loss", lambda fn: fn)
        if self.curvature == "hessian":
            product = backend.hessian_vector_product(
                whole(restricted.loss_fn), self.hvp
            )
        else:
            product = backend.gauss_newton_vector_product(
                restricted.prediction_fn, whole(restricted.output_loss)
            )
        gradient = backend.gradient(whole(restricted.loss_fn))
        shapes = [tuple(v.shape) for v in restricted.targets]

        def flat_product(params, flat, data):
            return _concatenate(product(params, _split(flat, shapes), data))

        def flat_gradient(params, data):
            return _concatenate(gradient(params, data))

        return (
            restricted,
            prefix,
            backend.compile(flat_product),
            backend.compile(flat_gradient),
        )

    # -- state -----------------------------------------------------------------
    @property
    def layer(self):
        """The measured weights: `"all"`, a layer name, or names joined by `+`."""
        return self._restricted.layer_name

    @property
    def restricted(self):
        """Whether the products run through a head of the model only."""
        return self._restricted.restricted

    def refresh(self, check=False):
        """Reads the model's weights again (after training changed them).

        Recomputes the head's inputs of every batch when the products are
        restricted to a head.
        """
        restricted = self._restricted
        self._params = restricted.target_values()
        self._fixed = restricted.fixed_values()
        prefix_values = restricted.prefix_values()
        self._inputs = []
        for index, (x, _, _) in enumerate(self._batches):
            try:
                inputs = x
                if self._prefix is not None:
                    inputs = self._prefix(*prefix_values, x)
                self._inputs.append(inputs)
                if check and index == 0:
                    restricted.loss_fn(self._params, self._data(0))
            except Exception as error:  # noqa: BLE001 - re-raised with context
                detail = str(error).strip().splitlines()
                raise ValueError(
                    f"Argument `data` cannot be used with model "
                    f"{self.model.name!r}: evaluating its loss on batch "
                    f"{index} failed with {type(error).__name__}: "
                    f"{detail[0] if detail else ''}"
                ) from error

    def _data(self, index):
        others, non_trainable = self._fixed
        return (self._inputs[index], self._batches[index][1], others,
                non_trainable)

    # -- products ----------------------------------------------------------------
    def matvec(self, vector):
        """H v (or G v) for a flat vector `v` of `size` entries, as float64."""
        vector = self._check_vector(vector)
        flat = ops.convert_to_tensor(vector.astype(self.dtype))
        total = np.zeros(self.size)
        for index, batch in enumerate(self._batches):
            product = self._product(self._params, flat, self._data(index))
            total += batch[2] * ops.convert_to_numpy(product).astype(np.float64)
        self.products += 1
        return self._mean_over_workers(total)

    def gradient(self):
        """The gradient of the mean loss over the data, flat, as float64."""
        total = np.zeros(self.size)
        for index, batch in enumerate(self._batches):
            gradient = self._gradient(self._params, self._data(index))
            total += batch[2] * ops.convert_to_numpy(gradient).astype(np.float64)
        return self._mean_over_workers(total)

    def dense(self):
        """The whole matrix, column by column (`size` products): small models."""
        columns = np.eye(self.size)
        matrix = np.stack([self.matvec(column) for column in columns], axis=1)
        return (matrix + matrix.T) / 2

    def as_linear_operator(self):
        """This operator as a `scipy.sparse.linalg.LinearOperator` (float64)."""
        from scipy.sparse.linalg import LinearOperator

        return LinearOperator(
            (self.size, self.size), matvec=self.matvec, rmatvec=self.matvec,
            dtype=np.float64,
        )

    @property
    def world_size(self):
        """Number of workers the products are summed over."""
        return int(getattr(self.reducer, "world_size", 1))

    def _mean_over_workers(self, total):
        if self.world_size == 1:
            return total / self.samples
        means = self.reducer.reduce_mean_array(np.append(total, self.samples))
        return means[:-1] / means[-1]

    def _check_vector(self, vector):
        vector = np.asarray(vector, dtype=np.float64).reshape(-1)
        if vector.size != self.size:
            raise ValueError(
                f"The vector must have {self.size} entries (the measured "
                f"weights of {self.layer!r}). Received a vector of "
                f"{vector.size} entries."
            )
        return vector

    # -- layout ----------------------------------------------------------------
    def unflatten(self, flat):
        """A flat vector as a list of arrays shaped like the measured weights."""
        flat = np.asarray(flat).reshape(-1)
        parts = np.split(flat, np.cumsum(self._sizes)[:-1])
        return [p.reshape(s) for p, s in zip(parts, self.shapes)]

    def flatten(self, arrays):
        """A list of arrays shaped like the measured weights, as one vector."""
        got = [tuple(np.shape(a)) for a in arrays]
        if got != self.shapes:
            raise ValueError(
                f"The arrays must have the shapes of the measured weights "
                f"{self.shapes}. Received shapes: {got}"
            )
        return np.concatenate(
            [np.ravel(a).astype(np.float64) for a in arrays]
        )


def _concatenate(tensors):
    return ops.concatenate([ops.reshape(t, (-1,)) for t in tensors], axis=0)


def _split(flat, shapes):
    parts, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        parts.append(ops.reshape(flat[start:start + size], shape))
        start += size
    return parts


def _layer_key(layer):
    if isinstance(layer, (list, tuple)):
        return ("layers",) + tuple(identity_key(one) for one in layer)
    return identity_key(layer)


def len_of(x):
    """The number of samples of a batch (its first array's length)."""
    return int(np.shape(keras.tree.flatten(x)[0])[0])


def batches_of(data, batch_size, steps=None, name="data"):
    """The `(x, y)` batches of `data`, as NumPy nests (a list).

    Args:
        data: `(x, y)` arrays, a `tf.data.Dataset`, a `keras.utils.PyDataset`
            or an iterable of `(x, y)` batches.
        batch_size: Int. Samples per batch for arrays.
        steps: Int or None. Most batches read from the other forms.
        name: String. The argument's name, for error messages.
    """
    if _is_pair_of_arrays(data):
        x, y = as_arrays(data[0]), as_arrays(data[1])
        size = validate_batch(x, y)
        return [
            (_slice(x, start, batch_size), _slice(y, start, batch_size))
            for start in range(0, size, batch_size)
        ]
    if isinstance(data, keras.utils.PyDataset):
        count = data.num_batches
        if count is None and steps is None:
            fail(name, data, "is an infinite PyDataset: pass `steps`")
        count = steps if count is None else min(count, steps or count)
        elements = (data[i] for i in range(count))
    else:
        tf = sys.modules.get("tensorflow")
        if tf is not None and isinstance(data, tf.data.Dataset):
            if steps is None and int(data.cardinality()) == int(
                tf.data.INFINITE_CARDINALITY
            ):
                fail(name, data, "is an infinite dataset: pass `steps`")
            if steps is not None:
                data = data.take(steps)
            elements = iter(data)
        elif hasattr(data, "__iter__") and not isinstance(data, (str, dict)) \
                and not hasattr(data, "shape"):
            elements = iter(data)
        else:
            fail(name, f"<{type(data).__name__}>",
                 "must be `(x, y)` arrays, a tf.data.Dataset, a "
                 "keras.utils.PyDataset or an iterable of `(x, y)` batches")
    batches = []
    for element in elements:
        if steps is not None and len(batches) == steps:
            break
        if not isinstance(element, (tuple, list)) or len(element) not in (2, 3):
            fail(name, f"<a batch of type {type(element).__name__}>",
                 "must yield `(x, y)` batches")
        if len(element) == 3 and element[2] is not None:
            fail(name, "<(x, y, sample_weight) batches>",
                 "must yield `(x, y)` batches: sample weights are not part "
                 "of the Hessian's loss")
        x, y = as_arrays(element[0]), as_arrays(element[1])
        validate_batch(x, y)
        batches.append((x, y))
    if not batches:
        fail(name, f"<{type(data).__name__}>", "holds no batch")
    return batches


def _is_pair_of_arrays(data):
    """Whether `data` is `(x, y)` arrays rather than a list of batches."""
    if isinstance(data, tuple):
        return len(data) == 2
    return (isinstance(data, list) and len(data) == 2
            and not any(isinstance(part, tuple) for part in data))


def _slice(nest, start, size):
    return keras.tree.map_structure(lambda a: a[start:start + size], nest)
