"""Per-layer parameter change against the epoch (Learning Stages, Figure 11)."""

import csv
import math
import os

from keras_lrphase._validation import fail

PREFIX = "param_change/"
BIAS_SUFFIX = "/bias"


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "plot_parameter_change needs matplotlib: "
            "pip install 'keras-lrphase[plot]'"
        ) from None
    return Figure


def _number(value):
    if value is None or value == "":
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _read_rows(history):
    """Rows (list of dicts of floats) from rows, a History dict or a CSV."""
    if isinstance(history, (str, os.PathLike)):
        if not os.path.isfile(history):
            fail("history", history, "must be a list of rows, a dict of "
                 "lists (History.history) or the path of a CSV file")
        with open(history, newline="") as f:
            return [{k: _number(v) for k, v in row.items()}
                    for row in csv.DictReader(f)]
    if isinstance(history, dict):
        lengths = {len(v) for v in history.values()}
        if len(lengths) > 1:
            fail("history", f"<dict with columns of lengths {sorted(lengths)}>",
                 "must hold lists of one length (History.history)")
        count = lengths.pop() if lengths else 0
        return [{k: _number(v[i]) for k, v in history.items()}
                for i in range(count)]
    if isinstance(history, (list, tuple)) and all(
        isinstance(row, dict) for row in history
    ):
        return [{k: _number(v) for k, v in row.items()} for row in history]
    fail("history", type(history).__name__, "must be a list of rows, a "
         "dict of lists (History.history) or the path of a CSV file")


def plot_parameter_change(history, path, *, title=None, yscale="linear"):
    """Draws the per-layer parameter change curves with the learning rate.

    One panel for the (merged) kernels, `param_change/<layer>`, and one for
    the biases, `param_change/<layer>/bias`, when there are any, as in the
    Learning Stages paper's Figure 11: the norm of each layer's change over
    an epoch against the epoch, one line per layer, coloured from the first
    layer (dark) to the last (light). The learning rate (`learning_rate`,
    which Keras writes to the logs) is drawn on a second, logarithmic axis
    as a dashed black step line, so the smoother changes after each decay
    line up with it. Epochs not measured (NaN) are skipped: each curve
    joins the measured epochs. With more than 12 layers the legend gives
    way to a note naming the first (darkest) and last (lightest) layer.

    Args:
        history: The rows logged with `ParameterChangeMonitor`: a list of
            dicts (one per epoch), `History.history` (a dict of lists), or
            the path of a CSV file (`CSVLogger`, `history.csv`). The
            horizontal axis is the `epoch` column when present, else
            1, 2, ....
        path: String. The image file to write (e.g. a `.png`).
        title: String or None. Figure title. Defaults to `None`.
        yscale: String. `"linear"` or `"log"` scale of the change axis.
            Defaults to `"linear"`.

    Returns:
        The `matplotlib.figure.Figure` written (not attached to pyplot).

    Raises:
        ImportError: If matplotlib is not installed.
        ValueError: If `history` holds no `param_change/` column.

    Example:

    >>> import os, tempfile
    >>> rows = [{"epoch": e, "learning_rate": 0.1 if e < 3 else 0.01,
    ...          "param_change/conv": 1.0 / (e + 1)} for e in range(5)]
    >>> figure = plot_parameter_change(
    ...     rows, os.path.join(tempfile.mkdtemp(), "change.png"))
    >>> len(figure.axes)  # one panel and its learning-rate axis
    2

    References:
        You, Long, Jordan, Wang, "Learning Stages: Phenomenon, Root Cause,
        Mechanism Hypothesis, and Implications", Section 3.2, Figures 4
        and 11.
    """
    if yscale not in ("linear", "log"):
        fail("yscale", yscale, "must be 'linear' or 'log'")
    rows = _read_rows(history)
    keys = []
    for row in rows:
        keys.extend(k for k in row if k.startswith(PREFIX) and k not in keys)
    if not keys:
        fail("history", f"<{len(rows)} rows>", "must hold `param_change/` "
             "columns (logged by ParameterChangeMonitor)")
    Figure = _figure_class()
    from matplotlib.ticker import MaxNLocator

    epochs = [row.get("epoch", math.nan) for row in rows]
    if any(math.isnan(e) for e in epochs):
        epochs = list(range(1, len(rows) + 1))
    panels = [("kernel", "kernels",
               [k for k in keys if not k.endswith(BIAS_SUFFIX)])]
    biases = [k for k in keys if k.endswith(BIAS_SUFFIX)]
    if biases:
        panels.append(("bias", "biases", biases))
    figure = Figure(figsize=(6.5 * len(panels), 4.5), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    rates = [row.get("learning_rate", math.nan) for row in rows]
    has_rate = any(not math.isnan(r) for r in rates)
    for ax, (label, plural, panel_keys) in zip(axes, panels):
        names = [_layer_name(k) for k in panel_keys]
        colours = _colours(len(panel_keys))
        for colour, key, name in zip(colours, panel_keys, names):
            points = [(e, row.get(key, math.nan)) for e, row in
                      zip(epochs, rows) if not math.isnan(row.get(key, math.nan))]
            ax.plot(*(zip(*points) if points else ([], [])), color=colour,
                    lw=1.2, label=name, marker="." if len(points) < 40 else None)
        ax.set_yscale(yscale)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"||change of the {label}|| over the epoch")
        heading = f"{plural} (a convolution's merged with its BatchNorm)"
        if len(panel_keys) > 12:
            heading += (f"\n{len(panel_keys)} layers, dark = {names[0]} "
                        f"... light = {names[-1]}")
        ax.set_title(heading, fontsize=9)
        ax.grid(alpha=0.3)
        if len(panel_keys) <= 12:
            ax.legend(fontsize=7, loc="upper right", framealpha=0.8)
        if has_rate:
            twin = ax.twinx()
            twin.step(epochs, rates, where="mid", color="black", ls="--",
                      lw=1.0)
            if all(r > 0 for r in rates if not math.isnan(r)):
                twin.set_yscale("log")
            twin.set_ylabel("learning rate (dashed)")
    if title:
        figure.suptitle(title)
    figure.savefig(path, dpi=100)
    return figure


def _layer_name(key):
    name = key[len(PREFIX):]
    return name[:-len(BIAS_SUFFIX)] if name.endswith(BIAS_SUFFIX) else name


def _colours(count):
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.9 * i / max(count - 1, 1)) for i in range(count)]
