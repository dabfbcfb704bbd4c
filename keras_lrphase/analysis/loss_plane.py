"""Loss and accuracy on the plane through three points of weight space.

Gotmare et al. (2019, Figure 3) draw the training and validation loss on the
plane through two iterates of SGD with restarts and the bend of the curve
that connects them, with the other iterates projected onto it; Garipov et
al. (2018) draw such planes through the end points and bend of their
curves. The plane through `w1`, `w2`, `w3` has the orthonormal basis
`u = (w2 - w1) / |w2 - w1|` and `v` = `w3 - w1` with its `u` component
removed, normalised; a point `(x, y)` of the plane is `w1 + x u + y v`, so
`w1` is at `(0, 0)`, `w2` at `(|w2 - w1|, 0)` and `w3` at
`(u . (w3 - w1), |v|)`.

The plane is spanned by the trainable weights. The non-trainable weights
(BatchNorm moving statistics) of a point are the same affine combination
of those of `w1`, `w2`, `w3` as its trainable weights (exact at the three
points); pass `recalibrate_data` to recompute the BatchNorm statistics at
every grid point instead, as Garipov et al. do (one pass over that data per
point). Work: one evaluation of `data` per grid point.
"""

import dataclasses

import keras
import numpy as np

from keras_lrphase._validation import check_integer
from keras_lrphase._validation import check_number
from keras_lrphase._validation import fail
from keras_lrphase.analysis import weight_space
from keras_lrphase.analysis.batch_norm_statistics import recalibrate_batch_norm


@dataclasses.dataclass(frozen=True)
class LossPlane:
    """Loss and accuracy on a grid of the plane through three weight vectors.

    Attributes:
        x: 1D float64 array, the grid's coordinates along `u`.
        y: 1D float64 array, the grid's coordinates along `v`.
        loss: Float64 array of shape `(len(y), len(x))`; `loss[i, j]` is the
            loss at `(x[j], y[i])`.
        accuracy: Same shape; NaN where accuracy has no meaning.
        anchors: Float64 array `(3, 2)`, the coordinates of `w1`, `w2`, `w3`
            (always grid points).
        projections: Float64 array `(n, 2)`, the coordinates of the
            orthogonal projections of the `points` given.
        origin, u, v: Float64 vectors of the flattened trainable weights: the
            plane is `origin + x u + y v`.
        trainable: Indices (into `get_weights()`) of the weights in the
            flattened vectors.
    """

    x: np.ndarray
    y: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    anchors: np.ndarray
    projections: np.ndarray
    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    trainable: tuple

    def project(self, weights):
        """The `(x, y)` coordinates of the projection of one weight list."""
        flat = _flatten(weights, self.trainable) - self.origin
        return np.array([flat @ self.u, flat @ self.v])


def _flatten(weights, indices):
    return np.concatenate([np.ravel(weights[k]).astype(np.float64)
                           for k in indices])


def _axis(name, values, anchors, grid, margin):
    # `grid` evenly spaced values over the anchors' range widened by
    # `margin`, merged with the anchors' own coordinates.
    if values is not None:
        values = np.asarray(values, dtype=np.float64).ravel()
        if values.size < 1 or not np.all(np.isfinite(values)):
            fail(name, values.tolist(), "must hold finite coordinates")
    else:
        low, high = float(anchors.min()), float(anchors.max())
        width = high - low
        values = np.linspace(low - margin * width, high + margin * width,
                             grid)
    spacing = (values.max() - values.min()) or 1.0
    keep = [v for v in values
            if np.min(np.abs(anchors - v)) > 1e-9 * spacing]
    return np.unique(np.concatenate([keep, anchors]))


def loss_plane(w1, w2, w3, model, data, *, grid=21, margin=0.2, points=(),
               loss=None, recalibrate_data=None, batch_size=128):
    """Loss and accuracy of `model` on the plane through `w1`, `w2`, `w3`.

    For the paper's Figure 3, pass the two end points and the bend of a
    fitted curve (`curve.start`, `curve.end`, `curve.bend`) and the
    training iterates in between as `points`; draw the result with
    `plot_loss_plane`.

    Args:
        w1, w2, w3: Weight lists in `model.get_weights()` order (or models
            of `model`'s architecture). `w1` is the origin; `w2 - w1` is
            the first axis. They must not be collinear.
        model: A built `keras.Model` of their architecture (not modified).
        data: Tuple `(x, y)` of arrays to evaluate on.
        grid: Int, the number of evenly spaced values along each axis, over
            the range of the three points widened by `margin` on each side;
            or a pair `(xs, ys)` of coordinate arrays. The coordinates of
            the three points are always added to the axes. Defaults to `21`.
        margin: Float >= 0. Widening of the default range, as a fraction of
            it. Defaults to `0.2` (as Garipov et al.'s `plane.py`).
        points: Sequence of weight lists (or models) to project onto the
            plane, e.g. training iterates. Defaults to `()`.
        loss: Loss or None for `model`'s compiled loss. Defaults to `None`.
        recalibrate_data: Tuple `(x, y)` or None. When given, BatchNorm
            statistics are recomputed on it at every grid point. Defaults
            to `None`.
        batch_size: Int. Defaults to `128`.

    Returns:
        A `LossPlane`.

    Raises:
        ValueError: For weight lists that do not fit `model`, collinear
            points, a bad grid or margin, or an uncompiled model without
            `loss`.

    Example:

    >>> import keras
    >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    >>> model.compile(loss="mse")
    >>> point = lambda k, b: [np.full((1, 1), k), np.full((1,), b)]
    >>> data = (np.ones((4, 1)), np.zeros((4, 1)))
    >>> plane = loss_plane(point(0, 0), point(1, 0), point(0, 1), model,
    ...                    data, grid=3)
    >>> plane.anchors.tolist()
    [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    >>> np.round(plane.x, 6).tolist(), round(float(plane.loss[-1, -1]), 4)
    ([-0.2, 0.0, 0.5, 1.0, 1.2], 5.76)

    References:
        Gotmare et al., "A Closer Look at Deep Learning Heuristics: Learning
        Rate Restarts, Warmup and Distillation", ICLR 2019, Figure 3.
        Garipov et al., "Loss Surfaces, Mode Connectivity, and Fast
        Ensembling of DNNs", NeurIPS 2018 (`plane.py` of their code).
    """
    weight_space.check_model("model", model)
    layout = weight_space.WeightLayout(model)
    anchors_w = [weight_space.check_point(name, w, layout)
                 for name, w in (("w1", w1), ("w2", w2), ("w3", w3))]
    others = [weight_space.check_point("points", p, layout) for p in points]
    loss_object = weight_space.resolve_loss("loss", model, loss)
    x_data, y_data, size = weight_space.check_data("data", data)
    if recalibrate_data is not None:
        weight_space.check_data("recalibrate_data", recalibrate_data)
    margin = check_number("margin", margin, minimum=0.0)
    batch_size = weight_space.check_batch_size(batch_size)
    axes_given = None
    if isinstance(grid, (tuple, list)) and len(grid) == 2:
        axes_given = grid
    else:
        grid = check_integer("grid", grid, 2)

    indices = tuple(layout.trainable)
    flat = [_flatten(w, indices) for w in anchors_w]
    u = flat[1] - flat[0]
    dx = float(np.linalg.norm(u))
    if dx == 0.0:
        fail("w2", "<weights equal to w1>", "must differ from `w1`")
    u = u / dx
    v = flat[2] - flat[0]
    v = v - (v @ u) * u
    dy = float(np.linalg.norm(v))
    # Collinear up to float32 rounding of the weights.
    if dy <= 1e-6 * max(dx, float(np.linalg.norm(flat[2] - flat[0]))):
        fail("w3", "<weights on the line through w1 and w2>",
             "must not be collinear with `w1` and `w2`")
    v = v / dy
    x3 = float((flat[2] - flat[0]) @ u)
    anchors = np.array([[0.0, 0.0], [dx, 0.0], [x3, dy]])
    xs = _axis("grid", None if axes_given is None else axes_given[0],
               anchors[:, 0], grid, margin)
    ys = _axis("grid", None if axes_given is None else axes_given[1],
               anchors[:, 1], grid, margin)
    plane = LossPlane(xs, ys, np.full((ys.size, xs.size), np.nan),
                      np.full((ys.size, xs.size), np.nan), anchors,
                      np.zeros((0, 2)), flat[0], u, v, indices)
    plane = dataclasses.replace(plane, projections=np.array(
        [plane.project(p) for p in others]).reshape(-1, 2))

    evaluator = weight_space.PointEvaluator(model, loss_object)
    clone = None
    if recalibrate_data is not None:
        clone = keras.models.clone_model(model)
    slices, offset = {}, 0
    for k in indices:
        slices[k] = slice(offset, offset + anchors_w[0][k].size)
        offset += anchors_w[0][k].size
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            # w1 + x u + y v = w1 + alpha (w2 - w1) + beta (w3 - w1).
            beta = y / dy
            alpha = (x - beta * x3) / dx
            exact = {(0.0, 0.0): 0, (dx, 0.0): 1, (x3, dy): 2}.get((x, y))
            point = []
            for k, (a, b, c) in enumerate(zip(*anchors_w)):
                if exact is not None:
                    value = anchors_w[exact][k]
                elif k in slices:
                    step = x * u[slices[k]] + y * v[slices[k]]
                    value = a + step.reshape(a.shape)
                else:
                    value = a + alpha * (b - a) + beta * (c - a)
                point.append(np.asarray(value, dtype=a.dtype))
            if clone is not None:
                clone.set_weights(point)
                recalibrate_batch_norm(clone, recalibrate_data,
                                       batch_size=batch_size)
                point = clone.get_weights()
            plane.loss[i, j], plane.accuracy[i, j] = evaluator(
                point, x_data, y_data, size, batch_size)
    return plane
