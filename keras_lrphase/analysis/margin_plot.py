"""Distributions of normalized margins, side by side (two-phase paper, A.1)."""

import numpy as np

from keras_lrphase._validation import fail
from keras_lrphase.analysis.margins import quartile_statistics


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "plot_margins needs matplotlib: pip install 'keras-lrphase[plot]'"
        ) from None
    return Figure


def plot_margins(margins, path=None, *, title=None, bins=40,
                 figsize=(10.0, 4.0)):
    """Draws the normalized margin distributions of several models.

    Left: overlaid histograms (densities) of each model's margins. Right:
    one violin per model with its quartiles (ticks) and the interquartile
    mean the two-phase paper reports (a white dot). Margins below 0 are
    misclassified samples (a dotted line marks 0).

    Args:
        margins: Dict `{model name: margins}`, each a 1D array from
            `normalized_margins` (NaNs are left out).
        path: String or None. When given, the figure is saved there (PNG
            for a `.png` name). Defaults to `None`.
        title: String or None. Defaults to `None`.
        bins: Int. Histogram bins (shared by all models). Defaults to `40`.
        figsize: Tuple. Figure size in inches. Defaults to `(10.0, 4.0)`.

    Returns:
        A `matplotlib.figure.Figure` (not attached to pyplot).

    Example:

    >>> rng = np.random.default_rng(0)
    >>> figure = plot_margins({"small batch": rng.normal(1, 1, 200),
    ...                        "large batch": rng.normal(2, 1, 200)})
    >>> figure.axes[1].get_ylabel()
    'normalized margin'

    References:
        Jiang et al., "Predicting the Generalization Gap in Deep Networks
        with Margin Distributions", ICLR 2019. "Achieving Small-Batch
        Accuracy with Large-Batch Scalability via Adaptive Learning Rate
        Adjustment" (ICLR 2022 submission), Appendix A.1 and Figure 1.
    """
    Figure = _figure_class()
    if not isinstance(margins, dict) or not margins:
        fail("margins", type(margins).__name__,
             "must be a non-empty dict {model name: margins}")
    finite = {}
    for name, values in margins.items():
        values = np.asarray(values, dtype=np.float64).ravel()
        values = values[np.isfinite(values)]
        if values.size < 2:
            fail("margins", name, "must hold at least 2 finite margins per "
                 "model")
        finite[name] = values
    figure = Figure(figsize=figsize, layout="constrained")
    histogram_axes, violin_axes = figure.subplots(1, 2)
    everything = np.concatenate(list(finite.values()))
    edges = np.linspace(everything.min(), everything.max(), bins + 1)
    for name, values in finite.items():
        histogram_axes.hist(values, bins=edges, density=True,
                            histtype="step", linewidth=1.5, label=name)
    histogram_axes.axvline(0.0, color="k", linestyle=":", linewidth=1)
    histogram_axes.set_xlabel("normalized margin")
    histogram_axes.set_ylabel("density")
    histogram_axes.legend(fontsize=8)
    positions = np.arange(1, len(finite) + 1)
    violin_axes.violinplot(list(finite.values()), positions=positions,
                           showextrema=False)
    for position, values in zip(positions, finite.values()):
        stats = quartile_statistics(values)
        violin_axes.vlines(position, stats["margin_q1"], stats["margin_q3"],
                           color="k", linewidth=3)
        violin_axes.hlines(stats["margin_median"], position - 0.12,
                           position + 0.12, color="k", linewidth=1.5)
        violin_axes.scatter([position], [stats["margin_mean_iqr"]],
                            color="white", edgecolor="k", zorder=3, s=25)
    violin_axes.axhline(0.0, color="k", linestyle=":", linewidth=1)
    violin_axes.set_xticks(positions, list(finite))
    violin_axes.set_ylabel("normalized margin")
    if title:
        figure.suptitle(title)
    if path is not None:
        figure.savefig(path, dpi=120)
    return figure
