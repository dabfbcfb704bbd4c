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
        fig.suptitle("\n".join(wrapped for line in title.splitlines()
                               for wrapped in textwrap.wrap(line, 110)))


def _after(epoch):
    """The x of "after epoch N": between the points of epochs N and N + 1
    (epoch N's point is at x = N, its band from N - 0.5 to N + 0.5)."""
    return epoch + 0.5


def plot_curves(rows, path, title=None, marks=None, schedule=None):
    """Writes a 2x2 figure of one run: loss, val. accuracy, LR, eigenvalue.

    Every panel is against the epoch. Bands: the warmup (yellow); for a
    two-phase run, the extra exploration epochs between the loss plateau
    and the switch (blue) and the convergence phase (grey); for a step
    decay, the epochs after the first decay (grey). A dashed line marks the
    loss plateau. A legend under the title names each.

    Args:
        rows: List of dicts, the rows of `history.csv`
            (`EpochRecorder.read`).
        path: String. The PNG file to write.
        title: String or None. Figure title. Defaults to `None`.
        marks: Dict or None. The run's `summary.json` (or the keys of it
            used here): `plateau_epoch` and `switch_epoch` (or
            `exploration_epochs`), 1-based epoch counts as written there.
            Defaults to `None` (no plateau mark).
        schedule: String or None. The run's `schedule`, which names the
            grey band: `"two-phase"` (convergence phase) or another (after
            the first LR decay). Defaults to `None` (the phase column's
            name, convergence phase).

    Example:

    >>> import os, tempfile
    >>> rows = [dict(epoch=e, loss=1 / e, val_accuracy=0.1 * e,
    ...              learning_rate=0.1 if e < 7 else 0.05,
    ...              hessian_max_eigenvalue=2.0,
    ...              phase="warmup" if e < 2 else "exploration" if e < 7
    ...              else "convergence") for e in range(1, 9)]
    >>> path = os.path.join(tempfile.mkdtemp(), "curves.png")
    >>> plot_curves(rows, path, marks={"plateau_epoch": 4, "switch_epoch": 6},
    ...             schedule="two-phase")
    >>> os.path.exists(path)
    True
    """
    plt = _pyplot()
    marks = marks or {}
    plateau = marks.get("plateau_epoch")
    switch = marks.get("switch_epoch", marks.get("exploration_epochs"))
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), sharex=True)
    panels = [
        (axes[0, 0], "loss", "training loss", "log"),
        (axes[0, 1], "val_accuracy", "validation accuracy", "linear"),
        (axes[1, 0], "learning_rate", "learning rate", "log"),
        (axes[1, 1], "hessian_max_eigenvalue",
         "largest Hessian eigenvalue (output layer)", "log"),
    ]
    converged = phase_spans(rows, CONVERGENCE)
    warmup = phase_spans(rows, WARMUP)
    for ax, key, label, scale in panels:
        _curve_panel(ax, rows, key, scale)
        _phase_bands(ax, rows, converged, warmup, plateau, switch)
        ax.set_ylabel(label)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    legend = _curve_legend(warmup, plateau, switch, converged, schedule)
    _title(fig, title)
    top = 0.955 if title else 0.995
    if legend:
        fig.legend(handles=legend, loc="upper center", ncol=len(legend),
                   fontsize=8, frameon=False,
                   bbox_to_anchor=(0.5, top))
        top -= 0.035
    fig.tight_layout(rect=(0, 0, 1, top))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _curve_panel(ax, rows, key, scale):
    """One column of `history.csv` against the epoch (NaN left out)."""
    points = [(r["epoch"], r[key]) for r in rows if not math.isnan(r[key])]
    if points:
        ax.plot(*zip(*points), marker="." if len(points) < 60 else None,
                color="C0")
        positive = all(v > 0 for _, v in points)
        ax.set_yscale(scale if positive else "linear")
    else:
        ax.text(0.5, 0.5, "not computed", ha="center", va="center",
                transform=ax.transAxes, color="grey")
    ax.grid(alpha=0.3)


def _phase_bands(ax, rows, converged, warmup, plateau, switch):
    """The bands of `plot_curves`: warmup, extra exploration, convergence."""
    for first, last in converged:
        ax.axvspan(first - 0.5, last + 0.5, color="grey", alpha=0.15, lw=0)
    for first, last in warmup:
        ax.axvspan(first - 0.5, last + 0.5, color="gold", alpha=0.2, lw=0)
    if plateau is not None:
        ax.axvline(_after(plateau), color="C3", ls="--", lw=1)
        end = switch if switch is not None else (
            rows[-1]["epoch"] if rows else plateau)
        if end > plateau:
            ax.axvspan(_after(plateau), _after(end), color="C9",
                       alpha=0.12, lw=0)


def _curve_legend(warmup, plateau, switch, converged, schedule):
    """The legend entries of the bands and marks `plot_curves` drew."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    legend = []
    if warmup:
        legend.append(Patch(color="gold", alpha=0.35, label="warmup"))
    if plateau is not None:
        legend.append(Line2D([], [], color="C3", ls="--", lw=1,
                             label=f"loss plateau (after epoch {plateau})"))
        if switch is not None and switch > plateau:
            legend.append(Patch(color="C9", alpha=0.25,
                                label=f"extra exploration epochs "
                                      f"({plateau + 1}-{switch})"))
        elif switch is None:
            legend.append(Patch(color="C9", alpha=0.25,
                                label="extra exploration epochs (switch "
                                      "beyond the budget)"))
    if converged:
        name = ("after the first LR decay"
                if schedule not in (None, "two-phase")
                else "convergence phase")
        legend.append(Patch(color="grey", alpha=0.3, label=name))
    return legend


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


def plot_compare(histories, path, title=None, budgets=None, seeds=None,
                 marks=None):
    """Writes validation accuracy and training loss overlaid, and eigenvalues.

    A third panel, the largest Hessian eigenvalue of each run against the
    epoch (the two-phase paper's Figure 3), is drawn when any run recorded
    one. Runs of different epoch budgets (the Learning Stages paper's SGD
    for 80 epochs against full-batch GD for 400 steps) are not drawn on one
    epoch axis: each budget gets its own row of panels, titled with it.

    Each run has its own colour and line style, so runs that coincide (two
    configurations that are the same run until one decays) stay visible,
    and a note names the epochs where they do. With `seeds`, the curves are
    the means over seeds and a band shows their range. The accuracy axis
    spans the values of the last half of training (where the rows differ),
    not the early epochs. With `marks`, every LR decay of a run is a dotted
    line in its colour and a two-phase switch a dash-dot line.

    Args:
        histories: Dict of run label to its `history.csv` rows (with
            `seeds`: the mean over seeds).
        path: String. The PNG file to write.
        title: String or None. Figure title. Defaults to `None`.
        budgets: Dict of run label to its epoch budget, or None (one row).
            Defaults to `None`.
        seeds: Dict of run label to the list of its seeds' rows, or None.
            Defaults to `None`.
        marks: Dict of run label to a `summary.json` (its `decay_epochs`
            and `switch_epoch` or `exploration_epochs`, as written there),
            or None: the first decay read off the learning rate. Defaults
            to `None`.

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
    styles = {label: _STYLES[i % len(_STYLES)]
              for i, label in enumerate(histories)}
    for axes, (budget, labels) in zip(grid, groups):
        _compare_row(axes, {label: histories[label] for label in labels},
                     colors, styles, with_eigenvalues, seeds or {},
                     marks)
        if budget is not None:
            axes[0].set_title(f"{budget} epochs", fontsize=10)
    counts = {len(v) for v in (seeds or {}).values()}
    if seeds and counts != {1}:
        n = max(counts)
        note = (f"curves: mean over {n} seeds; band: their range"
                if len(counts) == 1 else
                "curves: mean over each run's seeds; band: their range")
        title = f"{title}\n{note}" if title else note
    _title(fig, title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# Line styles cycled with the colours: coinciding curves stay visible.
_STYLES = ("-", "--", "-.", ":")


def _first_difference(a, b):
    """The first epoch (1-based) where two runs' rows differ, or None."""
    for row_a, row_b in zip(a, b):
        for key in ("loss", "val_accuracy"):
            if not math.isclose(row_a[key], row_b[key], rel_tol=1e-9,
                                abs_tol=1e-12):
                return row_a["epoch"]
    return None


def _coinciding_runs(histories):
    """One line per group of runs whose curves are identical up to an epoch.

    Runs that coincide pairwise up to the same epoch N (and, through each
    other, form one group) are named together: "a, b and c coincide up to
    epoch N"; "all runs" when the group is every run. Groups that part
    within 2 epochs are not named.
    """
    labels = list(histories)
    groups = {}  # last common epoch -> list of sets of labels
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            differ = _first_difference(histories[a], histories[b])
            if differ is None or differ <= 2:
                continue
            sets = groups.setdefault(differ - 1, [])
            joined = [g for g in sets if a in g or b in g]
            merged = {a, b}.union(*joined)
            sets[:] = [g for g in sets if g not in joined] + [merged]
    lines = []
    for epoch in sorted(groups):
        for group in groups[epoch]:
            names = [label for label in labels if label in group]
            if len(names) == len(labels) > 2:
                said = "all runs coincide"
            else:
                said = (", ".join(names[:-1]) + " and " + names[-1]
                        + " coincide")
            lines.append(f"{said} up to epoch {epoch}")
    return lines


def _accuracy_limits(histories, seeds):
    """The accuracy axis: the values of the last half of training."""
    values = []
    for label, rows in histories.items():
        runs = seeds.get(label) or [rows]
        for run in runs:
            half = run[len(run) // 2:]
            values += [r["val_accuracy"] for r in half
                       if math.isfinite(r["val_accuracy"])]
    if not values:
        return None
    low, high = min(values), max(values)
    pad = max(0.1 * (high - low), 0.005)
    return max(0.0, low - pad), min(1.0, high + pad)


def _compare_row(axes, histories, colors, styles, with_eigenvalues, seeds,
                 marks):
    """Draws one row of `plot_compare`'s panels for the runs of one budget."""
    acc_ax, loss_ax = axes[0], axes[1]
    decays = switches = eigenvalue_curves = 0
    for label, rows in histories.items():
        color, style = colors[label], styles[label]
        epochs = [r["epoch"] for r in rows]
        # Only the validated epochs (`validation_freq`), joined by lines.
        validated = [(e, r["val_accuracy"]) for e, r in zip(epochs, rows)
                     if math.isfinite(r["val_accuracy"])]
        acc_ax.plot(*(zip(*validated) if validated else ([], [])),
                    label=label, color=color, ls=style)
        loss_ax.plot(epochs, [r["loss"] for r in rows], label=label,
                     color=color, ls=style)
        _seed_bands(acc_ax, loss_ax, epochs, seeds.get(label) or [], color)
        if with_eigenvalues:
            eigenvalue_curves += _eigenvalue_curve(axes[2], rows, label,
                                                   color, style)
        after, switch = _run_marks(rows, None if marks is None
                                   else marks.get(label) or {})
        for epoch in after:
            for ax in (acc_ax, loss_ax):
                ax.axvline(_after(epoch), color=color, ls=":", lw=1)
        decays += bool(after)
        if switch is not None:
            for ax in (acc_ax, loss_ax):
                ax.axvline(_after(switch), color=color, ls="-.", lw=1.2)
            switches += 1
    _label_compare_axes(axes, histories, seeds, with_eigenvalues,
                        eigenvalue_curves)
    notes = _compare_notes(histories, marks, decays, switches)
    if notes:
        # Upper right: where a falling loss curve leaves room.
        loss_ax.text(0.99, 0.98, "\n".join(notes), ha="right", va="top",
                     fontsize=7, color="dimgrey", transform=loss_ax.transAxes,
                     bbox=dict(facecolor="white", alpha=0.8, lw=0))


def _seed_bands(acc_ax, loss_ax, epochs, runs, color):
    """The range over seeds of accuracy and loss, where there are several."""
    if len(runs) < 2:
        return
    length = min(len(run) for run in runs)
    for ax, key in ((acc_ax, "val_accuracy"), (loss_ax, "loss")):
        band = [(epochs[i], [run[i][key] for run in runs])
                for i in range(length)]
        band = [(e, c) for e, c in band if all(math.isfinite(v) for v in c)]
        if band:
            ax.fill_between([e for e, _ in band], [min(c) for _, c in band],
                            [max(c) for _, c in band], color=color,
                            alpha=0.15, lw=0)


def _eigenvalue_curve(ax, rows, label, color, style):
    """Plots a run's computed eigenvalues; 1 if there were any, else 0."""
    points = [(r["epoch"], r["hessian_max_eigenvalue"]) for r in rows
              if math.isfinite(r.get("hessian_max_eigenvalue", math.nan))]
    if not points:
        return 0
    ax.plot(*zip(*points), label=label, color=color, ls=style)
    return 1


def _run_marks(rows, summary):
    """`(decays, switch)`: the epochs after which a run's LR decayed and its
    two-phase switch, from its `summary` (None: the first LR decay of
    `rows`)."""
    if summary is None:
        decay = first_decay_epoch(rows)
        return ([] if decay is None else [decay - 1]), None
    return (list(summary.get("decay_epochs") or []),
            summary.get("switch_epoch", summary.get("exploration_epochs")))


def _label_compare_axes(axes, histories, seeds, with_eigenvalues,
                        eigenvalue_curves):
    """Axis labels, scales and titles of one row of `plot_compare`."""
    acc_ax, loss_ax = axes[0], axes[1]
    acc_ax.set_ylabel("validation accuracy")
    limits = _accuracy_limits(histories, seeds)
    if limits is not None:
        acc_ax.set_ylim(*limits)
        acc_ax.set_title("validation accuracy (axis: last half of training)",
                         fontsize=9)
    loss_ax.set_ylabel("training loss")
    loss_ax.set_yscale("log")
    if with_eigenvalues:
        axes[2].set_ylabel("largest Hessian eigenvalue (output layer)")
        axes[2].set_yscale("log")
        if any(len(seeds.get(label) or []) > 1 for label in histories):
            axes[2].set_title("first seed", fontsize=9)
        if not eigenvalue_curves:
            axes[2].text(0.5, 0.5, "not computed", ha="center", va="center",
                         transform=axes[2].transAxes, color="grey")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    acc_ax.legend(fontsize=8, loc="lower right")


def _compare_notes(histories, marks, decays, switches):
    """The lines of the note in the loss panel: marks, coinciding runs."""
    notes = []
    if decays:
        notes.append("dotted: LR decays" if marks is not None
                     else "dotted: first LR decay")
    if switches:
        notes.append("dash-dot: two-phase switch")
    notes += _coinciding_runs(histories)
    if marks is not None and (decays or switches):
        notes.append("(marks: first seed)")
    return notes
