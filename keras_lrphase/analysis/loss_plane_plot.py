"""Contour plots of a loss plane (Gotmare et al., 2019, Figure 3)."""

import numpy as np

from keras_lrphase._validation import check_choice
from keras_lrphase._validation import fail
from keras_lrphase.analysis.loss_plane import LossPlane


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "plot_loss_plane needs matplotlib: "
            "pip install 'keras-lrphase[plot]'"
        ) from None
    return Figure


def plot_loss_plane(
    plane,
    path=None,
    *,
    metric="loss",
    log_scale=True,
    levels=20,
    labels=("w1", "w2", "w3"),
    points_label="projected points",
    curve=None,
    title=None,
    figsize=(6.0, 5.0),
    aspect=None,
):
    """Draws a `LossPlane` as filled contours, with its anchors and points.

    The three points that define the plane are marked and labelled, the
    projections of the other points (e.g. the iterates of a run) are drawn
    as a connected line of dots, and `curve` (e.g. a fitted curve's points)
    as a line, as in the paper's Figure 3.

    Args:
        plane: A `LossPlane` from `loss_plane`.
        path: String or None. When given, the figure is saved there as an
            image (PNG for a `.png` name). Defaults to `None`.
        metric: `"loss"` or `"error"` (100 - accuracy in %). Defaults to
            `"loss"`.
        log_scale: Bool. Contour the natural log of the values, as the
            paper does. Defaults to `True`.
        levels: Int. Number of contour levels. Defaults to `20`.
        labels: Three strings, the names of `w1`, `w2`, `w3`. Defaults to
            `("w1", "w2", "w3")`.
        points_label: String. Legend entry of the projections. Defaults to
            `"projected points"`.
        curve: Array `(n, 2)` of plane coordinates (e.g. `plane.project`
            of `curve.weights_at(t)` for a grid of `t`) or None. Defaults
            to `None`.
        title: String or None. Defaults to `None`.
        figsize: Tuple. Figure size in inches. Defaults to `(6.0, 5.0)`.
        aspect: `"equal"` (distances on the plane drawn to scale, as in
            the paper), `"auto"` (the axes fill the figure) or None: equal
            unless one axis' range is more than 4 times the other's (a bend
            close to the segment between two distant end points), where an
            equal aspect would leave a sliver. Defaults to `None`.

    Returns:
        A `matplotlib.figure.Figure` (not attached to pyplot).

    Raises:
        ImportError: If matplotlib is not installed.
        ValueError: For an unknown metric or a plane without finite values.

    Example:

    >>> x, y = np.linspace(-1, 1, 5), np.linspace(-1, 1, 4)
    >>> loss = 1.0 + x[None, :] ** 2 + y[:, None] ** 2
    >>> anchors = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> plane = LossPlane(x, y, loss, np.full_like(loss, np.nan), anchors,
    ...                   np.zeros((0, 2)), None, None, None, ())
    >>> figure = plot_loss_plane(plane, title="bowl")
    >>> figure.axes[0].get_title()
    'bowl'

    References:
        Gotmare et al., "A Closer Look at Deep Learning Heuristics: Learning
        Rate Restarts, Warmup and Distillation", ICLR 2019, Figure 3.
    """
    Figure = _figure_class()
    if not isinstance(plane, LossPlane):
        fail("plane", type(plane).__name__, "must be a LossPlane")
    check_choice("metric", metric, ("loss", "error"))
    if aspect is not None:
        check_choice("aspect", aspect, ("equal", "auto"))
    if metric == "loss":
        values = np.array(plane.loss, dtype=np.float64)
        name = "loss"
    else:
        values = 100.0 * (1.0 - np.array(plane.accuracy, dtype=np.float64))
        name = "error (%)"
    if log_scale:
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.log(np.maximum(values, 1e-12))
        name = f"log {name}"
    if not np.any(np.isfinite(values)):
        fail("plane", "<LossPlane>", f"must hold finite {metric} values")
    figure = Figure(figsize=figsize, layout="constrained")
    axes = figure.subplots()
    grid_x, grid_y = np.meshgrid(plane.x, plane.y)
    filled = axes.contourf(grid_x, grid_y, np.ma.masked_invalid(values),
                           levels=levels, cmap="viridis")
    axes.contour(grid_x, grid_y, np.ma.masked_invalid(values), levels=levels,
                 colors="k", linewidths=0.3, alpha=0.5)
    figure.colorbar(filled, ax=axes, label=name)
    if curve is not None:
        curve = np.asarray(curve, dtype=np.float64).reshape(-1, 2)
        axes.plot(curve[:, 0], curve[:, 1], color="white", linewidth=1.5,
                  label="curve")
    if len(plane.projections):
        axes.plot(plane.projections[:, 0], plane.projections[:, 1], ".-",
                  color="orange", markersize=5, linewidth=0.8,
                  label=points_label)
    axes.scatter(plane.anchors[:, 0], plane.anchors[:, 1], color="red",
                 marker="o", s=30, zorder=3)
    for (px, py), label in zip(plane.anchors, labels):
        axes.annotate(str(label), (px, py), textcoords="offset points",
                      xytext=(4, 4), color="red")
    if curve is not None or len(plane.projections):
        axes.legend(loc="best", fontsize=8)
    axes.set_xlabel("u")
    axes.set_ylabel("v")
    if aspect is None:
        width, height = np.ptp(plane.x), np.ptp(plane.y)
        aspect = "equal" if max(width, height) <= 4 * min(width, height) else "auto"
    axes.set_aspect(aspect, adjustable="box")
    if title:
        axes.set_title(title)
    if path is not None:
        figure.savefig(path, dpi=120)
    return figure
