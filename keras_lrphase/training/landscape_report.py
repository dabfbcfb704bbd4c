"""The markdown report of the landscape study (`landscape.md`).

One table per figure the study reproduces: curves from the reference
(Heuristics paper, Figure 1), segments between snapshots (its Figure 2),
and training loss and margin per epoch (two-phase paper, Figure 1). The
study (`keras_lrphase.training.landscape_study`) computes the record.
"""


def margin_line(name, found):
    """One line on the margin of `name` after its loss plateau."""
    change = found["margin_change_after_plateau"]
    if change is None:
        return (f"margins of {name} (batch {found['batch_size']}): no loss "
                "plateau detected; interquartile mean "
                f"{found['margin_mean_iqr'][0]:.4g} after epoch "
                f"{found['epochs'][0]}, {found['margin_mean_iqr'][-1]:.4g} "
                f"after epoch {found['epochs'][-1]}")
    return (f"margins of {name} (batch {found['batch_size']}): loss plateau "
            f"at epoch {change['plateau']}; from there to epoch "
            f"{change['until']} the margin (interquartile mean) goes "
            f"{change['margin_at_plateau']:.4g} -> "
            f"{change['margin_at_until']:.4g} ({change['change_until']:+.4g}) "
            f"while the training loss changes by "
            f"{change['loss_change_until']:+.4f}")


def landscape_markdown(record, lines, curve):
    """`landscape.md`: the summary `lines`, then one table per figure."""
    text = ["# Loss landscape\n", "\n"]
    text += [f"- {line}\n" for line in lines]
    if record["curves"]:
        text += ["\n## Curves from the reference (Heuristics paper, Figure 1)"
                 "\n\n", "Barrier: highest training loss on the path minus "
                 "the higher end point's. Accuracies on the test set.\n\n",
                 "| variant | test acc. reference / variant | segment barrier "
                 "| segment min test acc. | curve barrier | curve min test "
                 "acc. |\n", "|---|---|---|---|---|---|\n"]
        for name, found in record["curves"].items():
            seg, bez = found["segment"], found[curve]
            text.append(
                f"| {name} | {100 * seg['test_accuracy'][0]:.1f}% / "
                f"{100 * seg['test_accuracy'][-1]:.1f}% | "
                f"{seg['barrier']:.3f} | {100 * seg['min_test_accuracy']:.1f}% "
                f"| {bez['barrier']:.3f} | "
                f"{100 * bez['min_test_accuracy']:.1f}% |\n")
    if record["segments"]:
        text += ["\n## Segments between snapshots (Figure 2): consecutive "
                 "ones, then each earlier one to the last\n\n",
                 "| run | epochs | crosses | train loss at ends | highest "
                 "train loss | barrier | min test acc. |\n",
                 "|---|---|---|---|---|---|---|\n"]
        for name, found in record["segments"].items():
            for pair in found["pairs"]:
                a, b = pair["epochs"]
                crossed = (f"{found['event']} after {', '.join(map(str, pair['crosses']))}"
                           if pair["crosses"] else "-")
                loss = pair["train_loss"]
                text.append(
                    f"| {name} | {a} -> {b} | {crossed} | {loss[0]:.3f} / "
                    f"{loss[-1]:.3f} | {pair['max_train_loss']:.3f} | "
                    f"{pair['barrier']:.3f} | "
                    f"{100 * pair['min_test_accuracy']:.1f}% |\n")
    if record["margins"]:
        names = list(record["margins"])
        text += ["\n## Training loss and margin per epoch (two-phase paper, "
                 "Figure 1)\n\n",
                 "Margin: interquartile mean of the normalized margins of "
                 f"{record['settings']['margin_images']} training images. "
                 "`*`: the loss-plateau epoch.\n\n",
                 "| epoch | " + " | ".join(f"{n} loss | {n} margin"
                                           for n in names) + " |\n",
                 "|---|" + "---|---|" * len(names) + "\n"]
        rows = sorted({e for f in record["margins"].values()
                       for e in f["epochs"]})
        for epoch in rows:
            cells = []
            for n in names:
                found = record["margins"][n]
                if epoch not in found["epochs"]:
                    cells += ["", ""]
                    continue
                i = found["epochs"].index(epoch)
                mark = "*" if epoch == found["plateau_epoch"] else ""
                cells += [f"{found['train_loss'][i]:.4f}{mark}",
                          f"{found['margin_mean_iqr'][i]:.4g}"]
            text.append(f"| {epoch} | " + " | ".join(cells) + " |\n")
    return "".join(text)
