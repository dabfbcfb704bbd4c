"""Mode connectivity: low-loss curves between two trained models.

Garipov et al. (2018) join two independently found minima `w_a`, `w_b` of a
network's loss by a curve `phi_theta(t)`, `t` in [0, 1], with `phi(0) = w_a`
and `phi(1) = w_b`, whose bend `theta` is trained to minimise the loss
averaged along the curve, `E_{t ~ U(0, 1)} L(phi_theta(t))`: each step draws
one `t` and descends the loss of the network at `phi_theta(t)` with respect
to `theta` only. Gotmare et al. (2019, Sections 2.1 and 3) use the curves
to ask whether the iterates of SGD with restarts sit in different basins: a
barrier on the straight segment between two iterates that a curve avoids.

Curves (`t` in [0, 1]):

* `"bezier"`: `phi(t) = (1 - t)^2 w_a + 2 t (1 - t) theta + t^2 w_b`;
* `"polychain"`: `2 (t theta + (0.5 - t) w_a)` for `t <= 0.5`, then
  `2 ((t - 0.5) w_b + (1 - t) theta)`; `phi(0.5) = theta`;
* `"linear"` (`linear_path`, the baseline): `(1 - t) w_a + t w_b`.

`theta` starts at `(w_a + w_b) / 2`, where both trained curves are the
segment. The network is never rewritten: the weights at `phi(t)` are passed
to `model.stateless_call`, so every functional or Sequential Keras model,
BatchNormalization and Dropout included, works as it is, on the
TensorFlow, JAX and torch backends. Only the trainable weights follow the
curve; the non-trainable ones (BatchNorm moving statistics, weights of
frozen layers) follow the segment `(1 - t) w_a + t w_b` (what any curve
gives them with the untrained bend `(w_a + w_b) / 2`) and are never
trained. BatchNorm layers normalise with batch statistics during curve
training, so their moving statistics play no part in it; at a point of the
curve they are recomputed from data (`model_at(t, recalibrate_data=...)`,
as Garipov et al. do before every evaluation).

Memory: the end points, the bend and the optimizer's slots are held as
copies of the weights (a ResNet-20 curve is a few MiB).
"""

import numbers

import keras
import numpy as np

from keras_lrphase._validation import check_choice
from keras_lrphase._validation import check_integer
from keras_lrphase._validation import fail
from keras_lrphase.analysis import weight_space
from keras_lrphase.analysis.batch_norm_statistics import batch_norm_layers
from keras_lrphase.analysis.batch_norm_statistics import recalibrate_batch_norm
from keras_lrphase.backend import autodiff

CURVES = ("bezier", "polychain")

#: Garipov et al.'s learning rate for curve training (their CIFAR runs).
DEFAULT_LEARNING_RATE = 0.015


def check_t(name, value):
    """`value` as a float in [0, 1], or raises."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not 0.0 <= float(value) <= 1.0:
        fail(name, value, "must be a number in [0, 1]")
    return float(value)


def coefficients(curve, t):
    """The weights `(c_a, c_bend, c_b)` of `w_a`, `theta`, `w_b` at `t`.

    `phi(t) = c_a w_a + c_bend theta + c_b w_b`. Exactly `(1, 0, 0)` at
    `t = 0` and `(0, 0, 1)` at `t = 1` for every curve, and `(0, 1, 0)` at
    `t = 0.5` for the polychain.

    Example:

    >>> coefficients("bezier", 0.5), coefficients("polychain", 0.25)
    ((0.25, 0.5, 0.25), (0.5, 0.5, 0.0))
    """
    if curve == "bezier":
        return ((1.0 - t) ** 2, 2.0 * t * (1.0 - t), t * t)
    if curve == "polychain":
        if t <= 0.5:
            return (1.0 - 2.0 * t, 2.0 * t, 0.0)
        return (0.0, 2.0 - 2.0 * t, 2.0 * t - 1.0)
    if curve == "linear":
        return (1.0 - t, 0.0, t)
    fail("curve", curve, f"must be one of {list(CURVES)}")


def _tensor_coefficients(curve, t):
    # `coefficients` with `t` a scalar tensor (inside the traced step).
    ops = keras.ops
    if curve == "bezier":
        return (ops.square(1.0 - t), 2.0 * t * (1.0 - t), ops.square(t))
    first = t <= 0.5
    zero = ops.zeros_like(t)
    return (ops.where(first, 1.0 - 2.0 * t, zero),
            ops.where(first, 2.0 * t, 2.0 - 2.0 * t),
            ops.where(first, zero, 2.0 * t - 1.0))


def _combine(terms):
    # sum(c * w) over the terms with a non-zero coefficient, in w's dtype.
    terms = [(c, w) for c, w in terms if c != 0.0]
    result = terms[0][1] * terms[0][0]
    for c, w in terms[1:]:
        result = result + w * c
    return result


class ConnectingCurve:
    """A curve in weight space between two models of one architecture.

    Made by `fit_curve` (a trained Bezier curve or polychain) or
    `linear_path` (the straight segment). Points are lists of NumPy arrays
    in `model.get_weights()` order.

    Attributes:
        curve: String. `"bezier"`, `"polychain"` or `"linear"`.
        start: The weights of `model_a` (`t = 0`).
        end: The weights of `model_b` (`t = 1`).
        model: The model whose architecture the points are weights of
            (`model_a`; never modified).
    """

    def __init__(self, model, start, end, bend, curve, loss_object):
        self.model = model
        self.curve = curve
        self.start = start
        self.end = end
        self._bend = bend
        self._loss = loss_object
        self._layout = weight_space.WeightLayout(model)
        self._evaluator = None

    @property
    def bend(self):
        """Theta, the bend of the curve (a copy), in `get_weights()` order.

        For the straight segment, the mid-point `(w_a + w_b) / 2`.
        """
        return [w.copy() for w in self._bend]

    def weights_at(self, t):
        """The weights at `phi(t)`, before any BatchNorm recalibration.

        Trainable weights lie on the curve; non-trainable weights (BatchNorm
        moving statistics) on the segment `(1 - t) w_a + t w_b`. `t = 0` and
        `t = 1` give the end points bit for bit.

        Args:
            t: Float in [0, 1].

        Returns:
            List of NumPy arrays in `model.get_weights()` order.
        """
        t = check_t("t", t)
        curved = set(self._layout.trainable)
        point = []
        for k, (a, theta, b) in enumerate(zip(self.start, self._bend,
                                              self.end)):
            c_a, c_bend, c_b = coefficients(
                self.curve if k in curved else "linear", t)
            point.append(np.asarray(_combine(
                [(c_a, a), (c_bend, theta), (c_b, b)]), dtype=a.dtype))
        return point

    def model_at(self, t, recalibrate_data=None, *, batch_size=128):
        """A new Keras model with the weights at `phi(t)`.

        Args:
            t: Float in [0, 1].
            recalibrate_data: Tuple `(x, y)` (or array `x`) on which the
                BatchNorm moving statistics are recomputed
                (`recalibrate_batch_norm`), usually the training data; None
                keeps the interpolated statistics of `weights_at(t)`.
                Defaults to `None`.
            batch_size: Int. Batch size of the recalibration passes.
                Defaults to `128`.

        Returns:
            A clone of `model_a` (`keras.models.clone_model`, which also
            copies its compilation).
        """
        weights = self.weights_at(t)
        clone = keras.models.clone_model(self.model)
        clone.set_weights(weights)
        if recalibrate_data is not None:
            recalibrate_batch_norm(clone, recalibrate_data,
                                   batch_size=batch_size)
        return clone

    def evaluate(self, ts, data, *, recalibrate_data=None, batch_size=128):
        """Loss and accuracy at the points `phi(t)` for each `t` of `ts`.

        The loss is what `model.evaluate` reports (the compiled loss plus
        regularisation losses); accuracy is the argmax (or thresholded)
        accuracy of a classifier's single output, NaN for other models.
        For a model with BatchNorm, pass `recalibrate_data` (the training
        data): the statistics are then recomputed at every `t`, as Garipov
        et al. do; without it a warning says the interpolated statistics
        are used.

        Args:
            ts: Sequence of floats in [0, 1].
            data: Tuple `(x, y)` of arrays to evaluate on.
            recalibrate_data: Tuple `(x, y)` or None. Defaults to `None`.
            batch_size: Int. Defaults to `128`.

        Returns:
            A dict of float64 NumPy arrays `{"t", "loss", "accuracy"}`.
        """
        ts = np.asarray([check_t("ts", t) for t in np.ravel(ts)])
        x, y, size = weight_space.check_data("data", data)
        batch_size = weight_space.check_batch_size(batch_size)
        if recalibrate_data is not None:
            weight_space.check_data("recalibrate_data", recalibrate_data)
        elif batch_norm_layers(self.model) and np.any((ts > 0) & (ts < 1)):
            import warnings

            warnings.warn(
                "ConnectingCurve.evaluate: the model has BatchNormalization "
                "layers and no `recalibrate_data` was given; the moving "
                "statistics between the end points are interpolated, not "
                "recomputed.", stacklevel=2)
        if self._evaluator is None:
            self._evaluator = weight_space.PointEvaluator(self.model,
                                                          self._loss)
        losses, accuracies = [], []
        for t in ts:
            weights = self.weights_at(t)
            if recalibrate_data is not None:
                weights = self.model_at(t, recalibrate_data,
                                        batch_size=batch_size).get_weights()
            loss, accuracy = self._evaluator(weights, x, y, size, batch_size)
            losses.append(loss)
            accuracies.append(accuracy)
        return {"t": ts.astype(np.float64), "loss": np.asarray(losses),
                "accuracy": np.asarray(accuracies)}


def _end_points(model_a, model_b):
    weight_space.check_model("model_a", model_a)
    weight_space.check_same_architecture("model_b", model_b, model_a)
    return ([np.array(w) for w in model_a.get_weights()],
            [np.array(w) for w in model_b.get_weights()])


def _mid_point(start, end):
    return [np.asarray(0.5 * a + 0.5 * b, dtype=a.dtype)
            for a, b in zip(start, end)]


def linear_path(model_a, model_b, *, loss=None):
    """The straight segment `(1 - t) w_a + t w_b` as a `ConnectingCurve`.

    The baseline of mode connectivity: a loss barrier on the segment that a
    trained curve (`fit_curve`) avoids means the two minima are joined
    through a curved valley rather than lying in one convex basin.

    Args:
        model_a: A built `keras.Model` (`t = 0`).
        model_b: A built `keras.Model` of the same architecture (`t = 1`).
        loss: Loss for `evaluate` (a name, function or `keras.losses.Loss`)
            or None to use `model_a`'s compiled loss. Defaults to `None`.

    Returns:
        A `ConnectingCurve` with `curve == "linear"` whose `bend` is the
        mid-point.

    Example:

    >>> import keras
    >>> def model(value):
    ...     m = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    ...     m.set_weights([np.full((1, 1), value), np.zeros(1)])
    ...     return m
    >>> path = linear_path(model(1.0), model(3.0), loss="mse")
    >>> float(path.weights_at(0.25)[0][0, 0]), float(path.bend[0][0, 0])
    (1.5, 2.0)
    >>> x, y = np.ones((4, 1)), np.full((4, 1), 2.0)
    >>> path.evaluate([0.0, 0.5, 1.0], (x, y))["loss"].tolist()
    [1.0, 0.0, 1.0]

    References:
        Garipov et al., "Loss Surfaces, Mode Connectivity, and Fast
        Ensembling of DNNs", NeurIPS 2018.
        Gotmare et al., "A Closer Look at Deep Learning Heuristics: Learning
        Rate Restarts, Warmup and Distillation", ICLR 2019, Section 3.
    """
    start, end = _end_points(model_a, model_b)
    loss_object = weight_space.resolve_loss("loss", model_a, loss)
    return ConnectingCurve(model_a, start, end, _mid_point(start, end),
                           "linear", loss_object)


def learning_rate_factor(epoch, epochs):
    """Garipov et al.'s curve schedule: the factor of the base rate at `epoch`.

    1 for the first half of training, then linear down to 0.01 at 90%, then
    0.01 (`epoch` counts from 0).

    Example:

    >>> [round(learning_rate_factor(e, 10), 4) for e in (0, 5, 7, 9)]
    [1.0, 1.0, 0.505, 0.01]
    """
    alpha = epoch / epochs
    if alpha <= 0.5:
        return 1.0
    if alpha <= 0.9:
        return 1.0 - (alpha - 0.5) / 0.4 * 0.99
    return 0.01


def _curve_loss_function(model, layout, loss_object, curve):
    def loss_fn(params, data):
        x, y, t, start, end, start_state, end_state, states = data
        c_a, c_bend, c_b = _tensor_coefficients(curve, t)
        cast = keras.ops.cast
        trainable = [
            cast(c_a, a.dtype) * a + cast(c_bend, a.dtype) * theta
            + cast(c_b, a.dtype) * b
            for a, theta, b in zip(start, params, end)
        ]
        weight_state = [cast(1.0 - t, a.dtype) * a + cast(t, a.dtype) * b
                        for a, b in zip(start_state, end_state)]
        non_trainable = layout.non_trainable_list(weight_state, states)
        y_pred, _, losses = weight_space.model_call(
            model, trainable, non_trainable, x, True, True)
        return weight_space.total_loss(loss_object, y, y_pred, losses)

    return loss_fn


def fit_curve(
    model_a,
    model_b,
    train_data,
    *,
    curve="bezier",
    epochs=50,
    batch_size=128,
    optimizer=None,
    loss=None,
    seed=0,
):
    """Trains the bend of a low-loss curve between two trained models.

    Use it to test whether two solutions (two runs, or two iterates of one
    run, e.g. before and after a warm restart) are joined by a path of low
    training loss although the straight segment between them
    (`linear_path`) crosses a barrier. Compare `curve.evaluate` with
    `linear_path(...).evaluate`, and draw the plane through the end points
    and the bend with `loss_plane`.

    Each step draws `t ~ U[0, 1]` and a batch, computes the loss of the
    network at `phi(t)` in training mode (BatchNorm with batch statistics,
    Dropout active) and applies the gradient with respect to the bend
    `theta` only; the end points never move. The loss is `fit`'s: the
    compiled loss plus the model's regularisation losses, evaluated at
    `phi(t)` (Garipov et al. add weight decay the same way).

    Defaults (after Garipov et al.'s code): SGD with momentum 0.9 and base
    learning rate 0.015, held for the first half of the epochs, then
    decreased linearly to 1% of it at 90% and held there
    (`learning_rate_factor`, applied per epoch); batch size 128; data
    shuffled every epoch. Their CIFAR curves train for as many epochs as
    the end points did (200-600); `epochs=50` suits small problems.

    Args:
        model_a: A built `keras.Model`, the curve's start (`t = 0`). It is
            not modified; its compiled loss is used unless `loss` is given.
        model_b: A built `keras.Model` of the same architecture (`t = 1`).
        train_data: Tuple `(x, y)` of arrays (or nests of arrays) indexed
            along the first axis.
        curve: `"bezier"` or `"polychain"`. Defaults to `"bezier"`.
        epochs: Int. Passes over `train_data`. Defaults to `50`.
        batch_size: Int. Defaults to `128`.
        optimizer: A `keras.optimizers.Optimizer`, used as it is (with its
            own learning rate or schedule), or None for the default SGD
            with the schedule above. Defaults to `None`.
        loss: Loss (name, function or `keras.losses.Loss`) or None for
            `model_a`'s compiled loss. Defaults to `None`.
        seed: Int. Seeds the shuffling, the draws of `t` and the Dropout
            masks. Defaults to `0`.

    Returns:
        A `ConnectingCurve`.

    Raises:
        ValueError: Before any training, for an unknown curve, models of
            different architectures, an uncompiled `model_a` without
            `loss`, malformed data or a bad count.

    Example:

    >>> import keras
    >>> def model(value):
    ...     m = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    ...     m.set_weights([np.full((1, 1), value), np.zeros(1)])
    ...     return m
    >>> x, y = np.ones((8, 1)), np.full((8, 1), 2.0)
    >>> fitted = fit_curve(model(1.0), model(3.0), (x, y), loss="mse",
    ...                    epochs=2, batch_size=4)
    >>> [float(fitted.weights_at(t)[0][0, 0]) for t in (0.0, 1.0)]
    [1.0, 3.0]

    References:
        Garipov et al., "Loss Surfaces, Mode Connectivity, and Fast
        Ensembling of DNNs", NeurIPS 2018.
        Gotmare et al., "A Closer Look at Deep Learning Heuristics: Learning
        Rate Restarts, Warmup and Distillation", ICLR 2019, Sections 2.1, 3.
    """
    check_choice("curve", curve, CURVES)
    start, end = _end_points(model_a, model_b)
    loss_object = weight_space.resolve_loss("loss", model_a, loss)
    x, y, size = weight_space.check_data("train_data", train_data)
    epochs = check_integer("epochs", epochs, 1)
    batch_size = weight_space.check_batch_size(batch_size)
    seed = check_integer("seed", seed, 0)
    if optimizer is not None and not isinstance(
            optimizer, keras.optimizers.Optimizer):
        fail("optimizer", optimizer, "must be a keras.optimizers.Optimizer "
             "or None")
    scheduled = optimizer is None
    if scheduled:
        optimizer = keras.optimizers.SGD(DEFAULT_LEARNING_RATE, momentum=0.9)

    layout = weight_space.WeightLayout(model_a)
    rng = np.random.default_rng(seed)
    bend = _mid_point(start, end)
    to_tensor = keras.ops.convert_to_tensor
    start_trainable, start_state = layout.split(start)
    end_trainable, end_state = layout.split(end)
    ends = tuple([to_tensor(w) for w in part] for part in
                 (start_trainable, end_trainable, start_state, end_state))
    # Check the loss on one batch before training (and build it eagerly).
    first = next(weight_space.batches(x, y, size, batch_size))
    loss_fn = _curve_loss_function(model_a, layout, loss_object, curve)
    theta = [keras.Variable(w, trainable=True, name=f"bend_{k}")
             for k, w in enumerate(layout.split(bend)[0])]
    try:
        loss_fn([to_tensor(v) for v in theta],
                (*first, to_tensor(np.float32(0.5)), *ends,
                 [to_tensor(s) for s in layout.state_values()]))
    except Exception as error:  # noqa: BLE001  (re-raised with context)
        fail("train_data", "<(x, y)>", "must fit the model and the loss "
             f"({type(error).__name__}: {error})")

    gradient = autodiff().gradient(loss_fn)
    optimizer.build(theta)
    for epoch in range(epochs):
        if scheduled:
            optimizer.learning_rate.assign(
                DEFAULT_LEARNING_RATE * learning_rate_factor(epoch, epochs))
        order = rng.permutation(size)
        for bx, by in weight_space.batches(x, y, size, batch_size, order):
            t = to_tensor(np.float32(rng.uniform()))
            states = [to_tensor(s) for s in layout.fresh_states(rng)]
            grads = gradient([to_tensor(v) for v in theta],
                             (bx, by, t, *ends, states))
            optimizer.apply(grads, theta)

    trained = [keras.ops.convert_to_numpy(v) for v in theta]
    for k, value in zip(layout.trainable, trained):
        bend[k] = np.asarray(value, dtype=bend[k].dtype)
    return ConnectingCurve(model_a, start, end, bend, curve, loss_object)
