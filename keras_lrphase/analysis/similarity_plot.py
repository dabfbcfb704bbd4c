"""The layer-similarity heatmap of Gotmare et al. (2019), Figures 5, 6 and 14."""

import numpy as np

from keras_lrphase._validation import fail


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "plot_layer_similarity needs matplotlib: "
            "pip install 'keras-lrphase[plot]'"
        ) from None
    return Figure


def _check_matrix(name, value):
    matrix = np.asarray(value, dtype=np.float64)
    if matrix.ndim != 2 or 0 in matrix.shape:
        fail(name, f"<array of shape {matrix.shape}>",
             "must be a non-empty 2D array")
    return matrix


def _check_names(name, names, count):
    if names is None:
        return [str(k) for k in range(count)]
    names = [str(n) for n in names]
    if len(names) != count:
        fail(name, names, f"must hold {count} names, one per matrix "
             f"{'row' if name == 'names_a' else 'column'}")
    return names


def plot_layer_similarity(
    matrix,
    names_a=None,
    names_b=None,
    *,
    reference=None,
    title=None,
    label_a="model A",
    label_b="model B",
    cmap=None,
    figsize=None,
):
    """Draws a layer-similarity matrix as a heatmap with a colorbar.

    Rows (layers of model A) run up the vertical axis and columns (layers of
    model B) along the horizontal one, the first layer at the origin, so
    "same layer" is the rising diagonal, as in the paper's figures; lighter
    cells are more similar. With `reference`, the heatmap shows the
    difference `|matrix - reference|` instead (the third panel of the
    paper's Figure 6: where a distilled and an independently trained student
    differ in their similarity to the teacher).

    Args:
        matrix: 2D array, e.g. the output of `layer_similarity`.
        names_a: List of strings, the row (model A) layer names. Defaults to
            the row indices.
        names_b: List of strings, the column (model B) layer names. Defaults
            to the column indices.
        reference: 2D array of `matrix`'s shape, or None. When given, plot
            `|matrix - reference|`. Defaults to `None`.
        title: String or None. Axes title. Defaults to `None`.
        label_a: String. Vertical axis label. Defaults to `"model A"`.
        label_b: String. Horizontal axis label. Defaults to `"model B"`.
        cmap: String or None. Matplotlib colormap. Defaults to `"magma"`
            (`"viridis"` for a difference).
        figsize: Tuple or None. Figure size in inches. Defaults to a size
            that grows with the number of layers.

    Returns:
        A `matplotlib.figure.Figure` (not attached to pyplot: save it with
        `figure.savefig(path)`).

    Raises:
        ImportError: If matplotlib is not installed.
        ValueError: If the matrix is not 2D, `reference` has another shape,
            or the names do not match the matrix.

    Example:

    >>> figure = plot_layer_similarity(np.eye(3), ["a1", "a2", "a3"],
    ...                                ["b1", "b2", "b3"], title="eye")
    >>> [label.get_text() for label in figure.axes[0].get_xticklabels()]
    ['b1', 'b2', 'b3']

    References:
        Gotmare et al., "A Closer Look at Deep Learning Heuristics: Learning
        Rate Restarts, Warmup and Distillation", ICLR 2019, Figures 5, 6, 14.
    """
    Figure = _figure_class()
    values = _check_matrix("matrix", matrix)
    colorbar_label = "SVCCA similarity"
    if reference is not None:
        other = _check_matrix("reference", reference)
        if other.shape != values.shape:
            fail("reference", f"<array of shape {other.shape}>",
                 f"must have the shape of `matrix` {values.shape}")
        values = np.abs(values - other)
        colorbar_label = "|difference| of SVCCA similarity"
    rows, columns = values.shape
    names_a = _check_names("names_a", names_a, rows)
    names_b = _check_names("names_b", names_b, columns)
    if figsize is None:
        side = min(14.0, max(4.0, 0.32 * max(rows, columns) + 2.5))
        figsize = (side + 1.2, side)
    figure = Figure(figsize=figsize, layout="constrained")
    axes = figure.subplots()
    finite = values[np.isfinite(values)]
    vmax = 1.0
    if reference is not None and finite.size:
        vmax = max(float(finite.max()), 1e-12)  # a difference: its own scale
    image = axes.imshow(
        values, origin="lower", vmin=0.0, vmax=vmax, interpolation="nearest",
        cmap=cmap or ("magma" if reference is None else "viridis"),
    )
    axes.set_xticks(range(columns), names_b, rotation=90, fontsize=8)
    axes.set_yticks(range(rows), names_a, fontsize=8)
    axes.set_xlabel(label_b)
    axes.set_ylabel(label_a)
    if title:
        axes.set_title(title)
    figure.colorbar(image, ax=axes, label=colorbar_label, shrink=0.8)
    return figure
