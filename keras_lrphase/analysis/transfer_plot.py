"""A bar chart of a `TransferTable` (the Learning Stages paper, Table 2)."""

import math

from keras_lrphase._validation import fail
from keras_lrphase.analysis.transfer_table import TransferTable


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "plot_transfer needs matplotlib: pip install 'keras-lrphase[plot]'"
        ) from None
    return Figure


def plot_transfer(table, path=None, *, title=None, figsize=(6.0, 4.0)):
    """Draws the transfer accuracy of each model, with the gains between them.

    One bar per model (target test accuracy, %), the gain from each model
    to the next written between their bars (percentage points), and the
    gain ratios (`Gain23/Gain12`, ...) in the title.

    Args:
        table: A `TransferTable` from `transfer_probe`.
        path: String or None. When given, the figure is saved there (PNG
            for a `.png` name). Defaults to `None`.
        title: String or None (a title naming the mode and the ratios).
            Defaults to `None`.
        figsize: Tuple. Figure size in inches. Defaults to `(6.0, 4.0)`.

    Returns:
        A `matplotlib.figure.Figure` (not attached to pyplot).

    Example:

    >>> table = TransferTable.from_accuracies(
    ...     "fix", ["stage1", "stage2", "stage3"], [0.6, 0.7, 0.75])
    >>> plot_transfer(table).axes[0].get_title()
    'Transfer (fix): Gain23/Gain12 = 0.50'

    References:
        You, Long, Jordan, Wang, "Learning Stages: Phenomenon, Root Cause,
        Mechanism Hypothesis, and Implications", Section 5 and Table 2.
    """
    Figure = _figure_class()
    if not isinstance(table, TransferTable):
        fail("table", type(table).__name__, "must be a TransferTable")
    figure = Figure(figsize=figsize, layout="constrained")
    axes = figure.subplots()
    heights = [100.0 * row.accuracy for row in table.rows]
    positions = list(range(len(heights)))
    bars = axes.bar(positions, heights, color="tab:blue", width=0.6)
    axes.bar_label(bars, labels=[f"{h:.1f}" for h in heights], fontsize=8)
    top = max(heights) if heights else 100.0
    for k, row in enumerate(table.rows[1:], 1):
        axes.annotate(f"{100.0 * row.gain:+.2f} pp", (k - 0.5, 1.04 * top),
                      ha="center", fontsize=8, color="tab:red")
    axes.set_ylim(0.0, 1.15 * top if top > 0 else 1.0)
    axes.set_xticks(positions, table.names)
    axes.set_ylabel("target test accuracy (%)")
    if title is None:
        ratios = ", ".join(
            f"{name} = {'nan' if math.isnan(value) else f'{value:.2f}'}"
            for name, value in table.ratios.items())
        title = f"Transfer ({table.mode})" + (f": {ratios}" if ratios else "")
    axes.set_title(title)
    if path is not None:
        figure.savefig(path, dpi=120)
    return figure
