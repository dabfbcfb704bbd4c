"""Loss and accuracy along paths between two models (Gotmare et al., Figure 1)."""

import numpy as np

from keras_lrphase._validation import fail

_SPLIT_STYLES = {"train": "-", "test": "--"}


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "plot_connection needs matplotlib: "
            "pip install 'keras-lrphase[plot]'"
        ) from None
    return Figure


def plot_connection(paths, path=None, *, title=None, labels=("A", "B"),
                    figsize=(9.0, 3.6)):
    """Draws loss and accuracy against `t` for paths between two models.

    Each path (e.g. a trained Bezier curve and the straight segment) gets
    one colour; each data split one line style (train solid, test dashed).
    A bump of the segment's loss that the curve avoids is the barrier the
    Heuristics paper's Figure 1 looks for.

    Args:
        paths: Dict `{path name: {split name: evaluation}}`, each evaluation
            a dict with arrays `"t"`, `"loss"`, `"accuracy"` (what
            `ConnectingCurve.evaluate` returns).
        path: String or None. When given, the figure is saved there (PNG
            for a `.png` name). Defaults to `None`.
        title: String or None. Defaults to `None`.
        labels: Two strings, the names of the end points (at `t = 0, 1`).
            Defaults to `("A", "B")`.
        figsize: Tuple. Figure size in inches. Defaults to `(9.0, 3.6)`.

    Returns:
        A `matplotlib.figure.Figure` (not attached to pyplot).

    Example:

    >>> t = np.linspace(0, 1, 5)
    >>> bump = {"t": t, "loss": 1 + np.sin(np.pi * t), "accuracy": 1 - t / 4}
    >>> flat = {"t": t, "loss": np.ones(5), "accuracy": np.ones(5)}
    >>> figure = plot_connection({"segment": {"train": bump},
    ...                           "bezier": {"train": flat}})
    >>> [axes.get_ylabel() for axes in figure.axes]
    ['loss', 'accuracy (%)']

    References:
        Gotmare et al., "A Closer Look at Deep Learning Heuristics: Learning
        Rate Restarts, Warmup and Distillation", ICLR 2019, Figure 1.
        Garipov et al., "Loss Surfaces, Mode Connectivity, and Fast
        Ensembling of DNNs", NeurIPS 2018.
    """
    Figure = _figure_class()
    if not isinstance(paths, dict) or not paths or not all(
            isinstance(splits, dict) and splits for splits in paths.values()):
        fail("paths", type(paths).__name__, "must be a non-empty dict "
             "{path name: {split name: evaluation}}")
    figure = Figure(figsize=figsize, layout="constrained")
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    colours = ["tab:blue", "tab:red", "tab:green", "tab:purple", "tab:brown"]
    for k, (name, splits) in enumerate(paths.items()):
        for split, evaluation in splits.items():
            t = np.asarray(evaluation["t"], dtype=np.float64)
            style = dict(color=colours[k % len(colours)],
                         linestyle=_SPLIT_STYLES.get(split, ":"),
                         marker=".", markersize=4, label=f"{name} ({split})")
            loss_axes.plot(t, evaluation["loss"], **style)
            accuracy_axes.plot(
                t, 100.0 * np.asarray(evaluation["accuracy"], np.float64),
                **style)
    loss_axes.set_ylabel("loss")
    accuracy_axes.set_ylabel("accuracy (%)")
    for axes in (loss_axes, accuracy_axes):
        axes.set_xlabel("t")
        axes.set_xlim(0.0, 1.0)
        axes.set_xticks([0.0, 0.25, 0.5, 0.75, 1.0],
                        [f"0 ({labels[0]})", "0.25", "0.5", "0.75",
                         f"1 ({labels[1]})"])
        axes.grid(alpha=0.3)
    loss_axes.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    if path is not None:
        figure.savefig(path, dpi=120)
    return figure
