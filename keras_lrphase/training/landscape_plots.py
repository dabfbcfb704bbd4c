"""The figures of the landscape study (matplotlib PNGs).

`curves.png` (Heuristics paper, Figure 1), `segments.png` (its Figure 2)
and `margins.png` (two-phase paper, Figure 1), drawn from the record that
`keras_lrphase.training.landscape_study` computes.
"""

import numpy as np


def _figure(*args, **kwargs):
    from matplotlib.figure import Figure

    return Figure(*args, layout="constrained", **kwargs)


def plot_path_curves(curves, reference, path, curve):
    """Training loss and test accuracy along each segment and curve."""
    figure = _figure(figsize=(11, 4.2))
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    for i, (name, found) in enumerate(curves.items()):
        for key, style in (("segment", "--"), (curve, "-")):
            p = found[key]
            label = f"{name}: {'segment' if key == 'segment' else key + ' curve'}"
            loss_axes.plot(p["t"], p["train_loss"], style, marker=".",
                           color=f"C{i}", label=label)
            accuracy_axes.plot(p["t"], 100 * np.asarray(p["test_accuracy"]),
                               style, marker=".", color=f"C{i}", label=label)
    loss_axes.set_ylabel("training loss")
    accuracy_axes.set_ylabel("test accuracy (%)")
    for axes in (loss_axes, accuracy_axes):
        axes.set_xlabel(f"t (0: {reference}, 1: the variant)")
        axes.grid(alpha=0.3)
    loss_axes.legend(fontsize=7, loc="upper left")
    figure.suptitle(f"From {reference} to each variant: straight segment "
                    f"(dashed) vs trained {curve} curve (solid)")
    figure.savefig(path, dpi=100)


def plot_snapshot_segments(segments, path):
    """Loss and accuracy along the segments between snapshots, per run."""
    figure = _figure(figsize=(11, 4.0 * len(segments)))
    axes = np.atleast_2d(figure.subplots(len(segments), 2, squeeze=False))
    for row, (name, found) in enumerate(segments.items()):
        loss_axes, accuracy_axes = axes[row]
        for i, pair in enumerate(found["pairs"]):
            a, b = pair["epochs"]
            label = (f"{a} -> {b}" + (f" ({found['event']})"
                                      if pair["crosses"] else "")
                     + f", barrier {pair['barrier']:.2f}")
            style = "-" if pair["crosses"] else ":"
            loss_axes.plot(pair["t"], pair["train_loss"], style, marker=".",
                           color=f"C{i}", label=label)
            accuracy_axes.plot(pair["t"],
                               100 * np.asarray(pair["test_accuracy"]), style,
                               marker=".", color=f"C{i}", label=label)
        loss_axes.set_ylabel("training loss")
        accuracy_axes.set_ylabel("test accuracy (%)")
        loss_axes.set_title(f"{name} ({found['schedule']}): training loss")
        accuracy_axes.set_title(f"{name}: test accuracy")
        for ax in (loss_axes, accuracy_axes):
            ax.set_xlabel("t (0: the earlier snapshot, 1: the later)")
            ax.grid(alpha=0.3)
        loss_axes.legend(fontsize=7)
    figure.suptitle("Segments between snapshots, consecutive and each to the "
                    "last (solid: across a restart or decay)")
    figure.savefig(path, dpi=100)


def plot_margin_curves(margins, path):
    """Training loss and margin per epoch, one panel per run."""
    from matplotlib.ticker import MaxNLocator

    figure = _figure(figsize=(max(7.0, 5.5 * len(margins)), 5.0))
    panels = np.atleast_1d(figure.subplots(1, len(margins), squeeze=False)[0])
    for axes, (name, found) in zip(panels, margins.items()):
        epochs = found["epochs"]
        axes.fill_between(epochs, found["margin_q1"], found["margin_q3"],
                          color="C0", alpha=0.15, label="margin q1-q3")
        axes.plot(epochs, found["margin_mean_iqr"], "o-", color="C0",
                  markersize=3, label="margin (interquartile mean)")
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel("normalized margin", color="C0")
        loss = axes.twinx()
        loss.plot(epochs, found["train_loss"], "s-", color="C3", markersize=3,
                  label="training loss")
        loss.set_ylabel("training loss", color="C3")
        handles = axes.get_legend_handles_labels()
        extra = loss.get_legend_handles_labels()
        if found["plateau_epoch"] is not None:
            line = axes.axvline(found["plateau_epoch"], color="k",
                                linestyle=":")
            extra = (extra[0] + [line],
                     extra[1] + [f"loss plateau (epoch {found['plateau_epoch']})"])
        switch = found.get("exploration_epochs")
        if switch is not None:
            line = axes.axvline(switch, color="0.4", linestyle="-.")
            extra = (extra[0] + [line],
                     extra[1] + [f"convergence phase after epoch {switch}"])
        for decay in found.get("decay_epochs") or ():
            axes.axvline(decay, color="0.6", linestyle="--", linewidth=0.8)
        axes.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=7,
                    loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
        axes.set_title(f"{name} (batch {found['batch_size']})")
        axes.grid(alpha=0.3)
    figure.suptitle("Training loss and margin (normalized margins of a fixed "
                    "training sample) per epoch")
    figure.savefig(path, dpi=100)
