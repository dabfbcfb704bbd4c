"""The figures of a run (`curves.png`) and of a comparison (`compare.png`)."""

import math
import textwrap

from keras_lrphase.training.epoch_recorder import CONVERGENCE
from keras_lrphase.training.epoch_recorder import WARMUP


def matplotlib_installed():
    """Whether matplotlib can be imported (the plots are an extra)."""
    import importlib.util

    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        return False


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            "Plots need matplotlib: pip install 'keras-lrphase[plot]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def phase_spans(rows, phase):
    """Contiguous `(first, last)` epoch ranges (1-based) where `phase` holds."""
    spans = []
    for row in rows:
        if row["phase"] != phase:
            continue
        if spans and spans[-1][1] == row["epoch"] - 1:
            spans[-1] = (spans[-1][0], row["epoch"])
        else:
            spans.append((row["epoch"], row["epoch"]))
    return spans


def first_decay_epoch(rows):
    """The first epoch (1-based) trained at a lower LR than the one before.

    Warmup epochs do not count: the epoch after a warmup epoch is never a
    decay. Returns None when the LR never drops.
    """
    for before, row in zip(rows, rows[1:]):
        if before["phase"] == WARMUP:
            continue
        if row["learning_rate"] < before["learning_rate"] * (1 - 1e-6):
            return row["epoch"]
    return None


def _title(fig, title):
    if title:
        fig.suptitle("\n".join(textwrap.wrap(title, 110)))


def plot_curves(rows, path, title=None):
    """Writes a 2x2 figure of one run: loss, val. accuracy, LR, eigenvalue.

    Every panel is against the epoch; the convergence phase is shaded
    (grey) and the warmup lightly (yellow).

    Args:
        rows: List of dicts, the rows of `history.csv`
            (`EpochRecorder.read`).
        path: String. The PNG file to write.
        title: String or None. Figure title. Defaults to `None`.
    """
    plt = _pyplot()
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    panels = [
        (axes[0, 0], "loss", "training loss", "log"),
        (axes[0, 1], "val_accuracy", "validation accuracy", "linear"),
        (axes[1, 0], "learning_rate", "learning rate", "log"),
        (axes[1, 1], "hessian_max_eigenvalue",
         "largest Hessian eigenvalue (output layer)", "log"),
    ]
    for ax, key, label, scale in panels:
        points = [(e, r[key]) for e, r in zip(epochs, rows)
                  if not math.isnan(r[key])]
        if points:
            ax.plot(*zip(*points), marker="." if len(points) < 60 else None,
                    color="C0")
            positive = all(v > 0 for _, v in points)
            ax.set_yscale(scale if positive else "linear")
        else:
            ax.text(0.5, 0.5, "not computed", ha="center", va="center",
                    transform=ax.transAxes, color="grey")
        for first, last in phase_spans(rows, CONVERGENCE):
            ax.axvspan(first - 0.5, last + 0.5, color="grey", alpha=0.15,
                       lw=0)
        for first, last in phase_spans(rows, WARMUP):
            ax.axvspan(first - 0.5, last + 0.5, color="gold", alpha=0.15,
                       lw=0)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    if rows and any(r["phase"] == CONVERGENCE for r in rows):
        axes[0, 1].text(0.99, 0.02, "shaded: convergence phase",
                        ha="right", va="bottom", fontsize=8, color="grey",
                        transform=axes[0, 1].transAxes)
    _title(fig, title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def budget_groups(histories, budgets=None):
    """Groups run labels by epoch budget, for one row of panels each.

    Args:
        histories: Dict of run label to its `history.csv` rows.
        budgets: Dict of run label to its epoch budget, or None.

    Returns:
        A list of `(budget, labels)`, by increasing budget, with the labels
        in `histories`' order; `[(None, all labels)]` when `budgets` is None
        or every run has the same budget.

    Raises:
        ValueError: naming `budgets`, when it misses a run of `histories`.
    """
    labels = list(histories)
    if budgets is None:
        return [(None, labels)]
    missing = [label for label in labels if label not in budgets]
    if missing:
        raise ValueError(
            "Argument `budgets` must give the epoch budget of every run in "
            f"`histories`; it misses {', '.join(map(repr, missing))}. "
            f"Received: budgets={budgets!r}")
    distinct = sorted({budgets[label] for label in labels})
    if len(distinct) < 2:
        return [(None, labels)]
    return [(budget, [label for label in labels if budgets[label] == budget])
            for budget in distinct]


def plot_compare(histories, path, title=None, budgets=None):
    """Writes validation accuracy and training loss overlaid, and eigenvalues.

    A third panel, the largest Hessian eigenvalue of each run against the
    epoch (the two-phase paper's Figure 3), is drawn when any run recorded
    one. Runs of different epoch budgets (the Learning Stages paper's SGD
    for 80 epochs against full-batch GD for 400 steps) are not drawn on one
    epoch axis: each budget gets its own row of panels, titled with it.

    Args:
        histories: Dict of run label to its `history.csv` rows.
        path: String. The PNG file to write.
        title: String or None. Figure title. Defaults to `None`.
        budgets: Dict of run label to its epoch budget, or None (one row).
            Defaults to `None`.

    Example:

    >>> import os, tempfile
    >>> rows = lambda n: [dict(epoch=e, loss=1 / e, val_accuracy=0.1,
    ...                        learning_rate=0.1, phase="n/a") for e in
    ...                   range(1, n + 1)]
    >>> path = os.path.join(tempfile.mkdtemp(), "compare.png")
    >>> plot_compare({"SGD": rows(8), "GD": rows(40)}, path,
    ...              budgets={"SGD": 8, "GD": 40})
    >>> os.path.exists(path)
    True
    """
    plt = _pyplot()
    groups = budget_groups(histories, budgets)
    with_eigenvalues = any(
        math.isfinite(r.get("hessian_max_eigenvalue", math.nan))
        for rows in histories.values() for r in rows)
    panels = 3 if with_eigenvalues else 2
    fig, grid = plt.subplots(len(groups), panels,
                             figsize=(6 * panels, 4.5 * len(groups)),
                             squeeze=False)
    colors = {label: f"C{i}" for i, label in enumerate(histories)}
    for axes, (budget, labels) in zip(grid, groups):
        _compare_row(axes, {label: histories[label] for label in labels},
                     colors, with_eigenvalues)
        if budget is not None:
            axes[0].set_title(f"{budget} epochs", fontsize=10)
    _title(fig, title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _compare_row(axes, histories, colors, with_eigenvalues):
    """Draws one row of `plot_compare`'s panels for the runs of one budget."""
    acc_ax, loss_ax = axes[0], axes[1]
    decays = eigenvalue_curves = 0
    for label, rows in histories.items():
        color = colors[label]
        epochs = [r["epoch"] for r in rows]
        acc_ax.plot(epochs, [r["val_accuracy"] for r in rows], label=label,
                    color=color)
        loss_ax.plot(epochs, [r["loss"] for r in rows], label=label,
                     color=color)
        if with_eigenvalues:
            points = [(r["epoch"], r["hessian_max_eigenvalue"]) for r in rows
                      if math.isfinite(r.get("hessian_max_eigenvalue",
                                             math.nan))]
            if points:
                axes[2].plot(*zip(*points), label=label, color=color)
                eigenvalue_curves += 1
        decay = first_decay_epoch(rows)
        if decay is not None:
            acc_ax.axvline(decay - 0.5, color=color, ls=":", lw=1)
            decays += 1
    acc_ax.set_ylabel("validation accuracy")
    loss_ax.set_ylabel("training loss")
    loss_ax.set_yscale("log")
    if with_eigenvalues:
        axes[2].set_ylabel("largest Hessian eigenvalue (output layer)")
        axes[2].set_yscale("log")
        if not eigenvalue_curves:
            axes[2].text(0.5, 0.5, "not computed", ha="center", va="center",
                         transform=axes[2].transAxes, color="grey")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    acc_ax.legend(fontsize=8, loc="lower right")
    if decays:
        acc_ax.text(0.01, 0.98, "dotted: first LR decay",
                    ha="left", va="top", fontsize=8, color="grey",
                    transform=acc_ax.transAxes)
