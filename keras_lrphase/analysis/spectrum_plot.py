"""Figures of the Hessian spectrum: densities, eigenvalue trajectories, layers."""

import os

import numpy as np

from keras_lrphase._validation import fail


def _figure_class(name):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            f"{name} needs matplotlib: pip install 'keras-lrphase[plot]'"
        ) from None
    return Figure


def _get(density, name):
    if isinstance(density, dict):
        return density.get(name)
    return getattr(density, name, None)


def _finish(figure, path, title, axes=None):
    """Titles the figure (or its one `axes`) and saves it at `path`."""
    if title:
        if axes is None:
            figure.suptitle(title)
        else:
            axes.set_title(title)
    if path is not None:
        figure.savefig(path, dpi=120)
    return figure


def plot_hessian_density(densities, path=None, *, eigenvalues=None,
                         sigma=None, points=2000, title=None, log=True,
                         figsize=(7.0, 4.0)):
    """Draws spectral densities of the Hessian (stochastic Lanczos quadrature).

    A network's Hessian has a bulk of eigenvalues near 0 and a few
    outliers; on the default logarithmic axis both show. Densities that
    carry their quadrature nodes and weights are smoothed again here with
    one Gaussian width on one grid, so that they compare; each integrates
    to 1 (the fraction of eigenvalues per unit).

    Args:
        densities: A `HessianDensityResult` (or a record's `"density"`
            dict), or a dict `{label: density}` of them.
        path: String or None. Where to save the figure (PNG for `.png`).
            Defaults to `None`.
        eigenvalues: Dict `{label: values}` or None. Top eigenvalues drawn
            as ticks along the bottom, in each label's colour. Defaults to
            `None`.
        sigma: Float or None. The common Gaussian width. Defaults to
            `None`: 1/100 of the span of all nodes.
        points: Int. Points of the common grid. Defaults to `2000`.
        title: String or None. Defaults to `None`.
        log: Bool. Logarithmic density axis. Defaults to `True`.
        figsize: Tuple. Figure size in inches. Defaults to `(7.0, 4.0)`.

    Returns:
        A `matplotlib.figure.Figure` (not attached to pyplot).

    Example:

    >>> grid = np.linspace(-1, 5, 200)
    >>> density = {"grid": grid, "density": np.exp(-grid ** 2) / np.sqrt(np.pi)}
    >>> figure = plot_hessian_density({"model": density})
    >>> figure.axes[0].get_xlabel()
    'eigenvalue'

    References:
        Ghorbani, Krishnan, Xiao, "An Investigation into Neural Net
        Optimization via Hessian Eigenvalue Density", ICML 2019, Figure 1.
    """
    Figure = _figure_class("plot_hessian_density")
    if not isinstance(densities, dict) or "grid" in densities:
        densities = {None: densities}
    if not densities:
        fail("densities", densities, "must hold at least one density")
    from keras_lrphase.hessian.spectrum import smoothed_density

    quadratures = all(_get(d, "nodes") is not None for d in densities.values())
    if quadratures:
        every = np.concatenate([np.concatenate([np.asarray(n, float)
                                                for n in _get(d, "nodes")])
                                for d in densities.values()])
        low, high = float(every.min()), float(every.max())
        span = high - low if high > low else max(abs(high), 1.0)
        sigma = span / 100.0 if sigma is None else float(sigma)
        grid = np.linspace(low - 4 * sigma, high + 4 * sigma, int(points))
    figure = Figure(figsize=figsize, layout="constrained")
    axes = figure.subplots()
    peak = 0.0
    colours = {}
    for label, density in densities.items():
        if quadratures:
            nodes = [np.asarray(n, float) for n in _get(density, "nodes")]
            weights = [np.asarray(w, float) for w in _get(density, "weights")]
            x, values = grid, smoothed_density(nodes, weights, grid, sigma)
        else:
            x = np.asarray(_get(density, "grid"), float)
            values = np.asarray(_get(density, "density"), float)
        line, = axes.plot(x, values, linewidth=1.3, label=label)
        colours[label] = line.get_color()
        peak = max(peak, float(np.nanmax(values)))
    if log and peak > 0:
        axes.set_yscale("log")
        axes.set_ylim(peak * 1e-7, peak * 3)
    for index, (label, values) in enumerate((eigenvalues or {}).items()):
        # Ticks just above the axis, labelled once in the legend.
        axes.plot(np.asarray(values, float), np.full(len(values), 0.04),
                  "|", markersize=16, markeredgewidth=2,
                  color=colours.get(label, "k"),
                  transform=axes.get_xaxis_transform(),
                  label="top eigenvalues (Lanczos)" if index == 0 else None)
    axes.set_xlabel("eigenvalue")
    axes.set_ylabel("density (log scale)" if log else "density")
    if eigenvalues or any(label is not None for label in densities):
        axes.legend(fontsize=8)
    return _finish(figure, path, title, axes)


def plot_eigenvalue_trajectories(records, path=None, *, layers=None, k=None,
                                 events=None, title=None,
                                 figsize_per_layer=(7.0, 2.6)):
    """Draws the top Hessian eigenvalues of each layer against the epoch.

    One panel per measured layer (what `HessianSpectrumMonitor` wrote), one
    line per eigenvalue (the largest darkest), with `events` (a learning
    rate decay, a switch of phase) as dashed vertical lines.

    Args:
        records: A list of records (`load_spectrum_records`) or the
            monitor's directory.
        path: String or None. Where to save the figure. Defaults to `None`.
        layers: List of layer names (as recorded) or None (all). Defaults
            to `None`.
        k: Int or None. Eigenvalues per layer drawn (None: all recorded).
            Defaults to `None`.
        events: Dict `{label: epoch}` or `{label: [epochs]}`, or None.
            An event whose epoch is None or whose list is empty is not
            drawn.
            Defaults to `None`.
        title: String or None. Defaults to `None`.
        figsize_per_layer: Tuple. Size of each panel in inches. Defaults to
            `(7.0, 2.6)`.

    Returns:
        A `matplotlib.figure.Figure`.

    Example:

    >>> records = [{"epoch": e, "layers": {"all": {"eigenvalues": [3.0 / e, 1.0]}}}
    ...            for e in (1, 2, 3)]
    >>> figure = plot_eigenvalue_trajectories(records, events={"decay": 2})
    >>> figure.axes[0].get_title()
    'all'

    References:
        "Achieving Small-Batch Accuracy with Large-Batch Scalability via
        Adaptive Learning Rate Adjustment" (ICLR 2022 submission),
        Figure 3.
    """
    from keras_lrphase.hessian.spectrum_records import eigenvalue_trajectories
    from keras_lrphase.hessian.spectrum_records import load_spectrum_records

    Figure = _figure_class("plot_eigenvalue_trajectories")
    if isinstance(records, (str, os.PathLike)):
        records = load_spectrum_records(os.fspath(records))
    trajectories = eigenvalue_trajectories(records)
    if layers is not None:
        missing = [name for name in layers if name not in trajectories]
        if missing:
            fail("layers", layers, f"must name recorded layers "
                 f"{sorted(trajectories)}")
        trajectories = {name: trajectories[name] for name in layers}
    if not trajectories:
        fail("records", f"<{len(records)} records>",
             "must hold eigenvalues of at least one layer")
    width, height = figsize_per_layer
    figure = Figure(figsize=(width, height * len(trajectories)),
                    layout="constrained")
    axes_list = np.atleast_1d(figure.subplots(len(trajectories), 1,
                                              sharex=True))
    import matplotlib

    shades = matplotlib.colormaps["viridis"]
    for axes, (name, (epochs, values)) in zip(axes_list, trajectories.items()):
        count = values.shape[1] if k is None else min(k, values.shape[1])
        for i in range(count):
            axes.plot(epochs, values[:, i], marker="o", markersize=3,
                      linewidth=1.2, color=shades(0.85 * i / max(count - 1, 1)),
                      label=f"$\\lambda_{{{i + 1}}}$")
        for label, at in (events or {}).items():
            # None (no switch yet) or [] (no decay): nothing to mark.
            at = [] if at is None else list(np.atleast_1d(at))
            if not at:
                continue
            for epoch in at:
                axes.axvline(epoch, color="0.4", linestyle="--", linewidth=1)
            axes.text(at[0], 0.98, f" {label}",
                      transform=axes.get_xaxis_transform(), fontsize=8,
                      va="top", color="0.3")
        axes.set_title(name, fontsize=10)
        axes.set_ylabel("eigenvalue")
        axes.legend(fontsize=7, ncol=min(count, 5), loc="upper right")
    axes_list[-1].set_xlabel("epoch")
    return _finish(figure, path, title)


def plot_layer_eigenvalues(values, path=None, *, title=None, log=True,
                           figsize=(8.0, 4.0)):
    """Draws the largest Hessian eigenvalue of each layer, one bar per model.

    Args:
        values: Dict `{model: {layer: eigenvalue}}`.
        path: String or None. Where to save the figure. Defaults to `None`.
        title: String or None. Defaults to `None`.
        log: Bool. Logarithmic eigenvalue axis. Defaults to `True`.
        figsize: Tuple. Defaults to `(8.0, 4.0)`.

    Returns:
        A `matplotlib.figure.Figure`.

    Example:

    >>> figure = plot_layer_eigenvalues({"small": {"conv": 2.0, "dense": 9.0},
    ...                                  "large": {"conv": 5.0, "dense": 30.0}})
    >>> [t.get_text() for t in figure.axes[0].get_xticklabels()]
    ['conv', 'dense']
    """
    Figure = _figure_class("plot_layer_eigenvalues")
    if not isinstance(values, dict) or not values:
        fail("values", values, "must be a non-empty dict {model: {layer: "
             "eigenvalue}}")
    layers = []
    for per_layer in values.values():
        layers += [name for name in per_layer if name not in layers]
    figure = Figure(figsize=figsize, layout="constrained")
    axes = figure.subplots()
    width = 0.8 / len(values)
    positions = np.arange(len(layers))
    for i, (model, per_layer) in enumerate(values.items()):
        heights = [per_layer.get(name, np.nan) for name in layers]
        axes.bar(positions + (i - (len(values) - 1) / 2) * width, heights,
                 width, label=model)
    axes.set_xticks(positions, layers, rotation=30 if len(layers) > 6 else 0,
                    ha="right" if len(layers) > 6 else "center", fontsize=8)
    if log:
        axes.set_yscale("log")
    axes.set_ylabel("largest eigenvalue")
    axes.legend(fontsize=8)
    return _finish(figure, path, title, axes)
