"""`compare`'s report of a preset: `table.md`, `compare.png`, `results.json`.

`write_compare_outputs` turns the finished runs of a preset (one summary
and run folder per seed and configuration) into the comparison's files:
the Markdown table (mean +- standard deviation over seeds, Welch's p-value
against the reference row, the paper's column), one sentence per tested
row saying whether the seeds show a difference, a study's answer to its
question (`keras_lrphase.training.study_findings`), the overlaid curves
and every summary as JSON. `keras-lrphase compare` calls it once every run
has finished; it trains nothing.
"""

import json
import math
import os

from keras_lrphase.training.epoch_recorder import EpochRecorder
from keras_lrphase.training.plots import matplotlib_installed
from keras_lrphase.training.plots import plot_compare
from keras_lrphase.training.runner import HISTORY_FILE


def write_compare_outputs(preset, results, out, seconds, epochs_override=None):
    """Writes `table.md`, `compare.png` and `results.json` for a comparison.

    Args:
        preset: The `Preset` that was run.
        results: List of `keras_lrphase.training.compare.RunGroup`, one
            per configuration, with one summary and folder per seed.
        out: String. Output folder.
        seconds: Float. Wall time of all runs.
        epochs_override: Int or None. The `--epochs` override, if any.

    Returns:
        `(verdicts, answer)`: the sentences of `table.md`'s "What the seeds
        show" list, one per row tested against a reference row (see
        `keras_lrphase.training.statistics.seed_difference`), and the list
        items of its "The question" section (empty without a `question`).
    """
    with_paper = any(group.run.paper is not None for group in results)
    seeds = max((len(group.summaries) for group in results), default=1)
    finals = {group.run.label: [s["final_val_accuracy"]
                                for s in group.summaries]
              for group in results}
    compared = seeds > 1 and any(
        (group.run.versus or preset.reference) in finals for group in results)
    header = ["configuration", "batch", "LR", "LR decay", "decay epochs",
              "LARS", "best val. acc.", "final val. acc."]
    if compared:
        header.append("p (Welch, final)")
    if with_paper:
        header.append("paper")
    header += ["epochs", "time"]
    lines = _heading_lines(preset, results, seeds, seconds, epochs_override)
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for group in results:
        cells = _row_cells(group, preset, finals, compared, with_paper)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    histories = {group.run.label: [
        EpochRecorder.read(os.path.join(f, HISTORY_FILE))
        for f in group.folders] for group in results}
    verdicts = _seed_verdicts(results, preset, finals, seeds)
    answer = []
    if preset.question is not None:
        from keras_lrphase.training.study_findings import answer_from_results

        losses = {label: [[row["loss"] for row in rows] for rows in runs]
                  for label, runs in histories.items()}
        answer = answer_from_results(preset.question, results, losses)
    lines += _closing_lines(preset, verdicts, answer, compared, with_paper,
                            seeds)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    if matplotlib_installed():
        plot_compare({label: _mean_history(runs)
                      for label, runs in histories.items()},
                     os.path.join(out, "compare.png"),
                     title=preset.description,
                     budgets={group.run.label: group.config.epochs
                              for group in results},
                     seeds=histories,
                     marks={group.run.label: group.summaries[0]
                            for group in results})
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({group.run.label: {
                       "paper": group.run.paper,
                       "runs": [dict(s, folder=folder) for s, folder in zip(
                           group.summaries, group.folders)]}
                   for group in results}, f, indent=2)
        f.write("\n")
    return verdicts, answer


def _heading_lines(preset, results, seeds, seconds, epochs_override):
    """The title, description, data and seeds lines above the table."""
    lines = [f"# {preset.name}", "", preset.description, ""]
    if not results:
        return lines
    first = results[0].summaries[0]
    d = first["dataset"]
    lines.append(
        f"Data: {d['name']} from {d['source']} ({d['train_examples']} "
        f"train / {d['test_examples']} validation examples); backend "
        f"{first['backend']}; total time {_total_minutes(results, seconds):.1f} "
        "min."
        + (f" Epoch budget overridden to {epochs_override}."
           if epochs_override else ""))
    if seeds > 1:
        lines.append(f"Accuracies: mean +- standard deviation over {seeds} "
                     "seeds; decay epochs of the first seed.")
    lines.append("")
    return lines


def _policy_cell(config):
    """The "LR decay" cell: the schedule and its factor."""
    if config.schedule == "step" and not config.decay_epochs:
        policy = "constant"
    elif config.schedule == "step":
        policy = f"step-wise (beta = {config.decay_factor:g})"
    elif config.schedule == "two-phase":
        policy = f"adaptive (beta = {config.decay_factor:g})"
    elif config.schedule == "autodecay":
        policy = f"AutoDecay (x{config.decay_factor:g})"
    elif config.schedule == "cosine":
        policy = ("cosine to 0 (Keras CosineDecay, warmup "
                  f"{config.warmup_epochs} epochs)" if config.warmup_epochs
                  else "cosine to 0 (Keras CosineDecay)")
    else:
        policy = (f"cosine restarts ({config.restart_epochs}, "
                  f"x{config.restart_mult:g})")
    if config.momentum_correction:
        policy += ", momentum corr."
    return policy


def _row_cells(group, preset, finals, compared, with_paper):
    """The cells of one configuration's row of `table.md`."""
    run, config, summaries = group.run, group.config, group.summaries
    decays = "/".join(str(e) for e in summaries[0]["decay_epochs"]) or "-"
    if config.schedule in ("two-phase", "autodecay"):
        decays = f"adaptive ({decays})"
    batch = str(config.batch_size)
    if config.accumulate > 1:
        batch += f" ({config.accumulate} x {config.batch_size // config.accumulate})"
    cells = [run.label, batch, f"{config.lr:g}", _policy_cell(config), decays,
             f"{config.lars:g}" if config.lars is not None else "-",
             _mean_pct([s["best_val_accuracy"] for s in summaries]),
             _mean_pct([s["final_val_accuracy"] for s in summaries])]
    if compared:
        cells.append(_p_value_cell(run, preset, finals))
    if with_paper:
        cells.append(f"{run.paper:.2f}%" if run.paper is not None else "-")
    minutes = sum(s["train_wall_time_s"] for s in summaries) / 60
    cells += [_epochs_cell([s["epochs_completed"] for s in summaries]),
              f"{minutes:.1f} min"]
    return cells


def _closing_lines(preset, verdicts, answer, compared, with_paper, seeds):
    """The lines under the table: verdicts, the question, the notes."""
    lines = []
    if verdicts:
        lines += ["What the seeds show (final validation accuracy):", ""]
        lines += [f"- {sentence}" for sentence in verdicts]
        lines.append("")
    if answer:
        lines += ["The question:", ""] + answer + [""]
    if compared:
        lines.append("p: two-sided Welch t-test of the final validation "
                     "accuracies over seeds against the row named after "
                     "\"vs\".")
    if with_paper and preset.paper_source:
        lines.append(f"Paper column: {preset.paper_source}.")
    if preset.notes:
        lines.append(preset.notes)
    lines.append("Decay epochs: the LR decays after that many epochs "
                 "(two-phase: where the controller decayed it). Curves of "
                 "each run: <run>/curves.png; overlaid: compare.png"
                 + (" (means over seeds)." if seeds > 1 else "."))
    return lines


def mechanics_lines(results):
    """What each two-phase row's first seed did, read off its summary.

    One sentence per two-phase configuration, with the epochs of
    `summary.json` as they are (1-based, counting completed epochs): the
    loss plateau, the switch to the convergence phase and the
    Hessian-aware decays, and where its curves are; or why there were
    none within the budget.

    Args:
        results: List of `keras_lrphase.training.compare.RunGroup`, as
            `write_compare_outputs` takes.

    Returns:
        A list of strings.

    Example:

    >>> from types import SimpleNamespace as S
    >>> from keras_lrphase.training.compare import RunGroup
    >>> summary = {"plateau_epoch": 38, "switch_epoch": 51,
    ...            "decay_epochs": [53, 56], "epochs_completed": 100}
    >>> config = S(schedule="two-phase", epochs=100, seed=0,
    ...            extra_epochs_fraction=1 / 3)
    >>> mechanics_lines([RunGroup(S(label="two-phase"), config, [summary],
    ...                           ["runs/demo/two-phase"])])[0]
    'two-phase (seed 0): loss plateau after epoch 38, switch to the convergence phase after epoch 51, Hessian-aware learning-rate decays after epochs 53 and 56; curves: runs/demo/two-phase/curves.png'
    """
    lines = []
    for group in results:
        run, config = group.run, group.config
        if config.schedule != "two-phase" or not group.summaries:
            continue
        summary, folder = group.summaries[0], group.folders[0]
        seed = getattr(config, "seed", 0)
        head = f"{run.label} (seed {seed}): "
        curves = os.path.join(folder, "curves.png")
        plateau = summary.get("plateau_epoch")
        switch = summary.get("switch_epoch", summary.get("exploration_epochs"))
        decays = summary.get("decay_epochs") or []
        budget = config.epochs
        if plateau is None:
            lines.append(
                f"{head}no loss plateau within the {budget}-epoch budget, so "
                "no switch and no Hessian-aware decay (the loss was still "
                f"falling); curves: {curves}")
        elif switch is None:
            extra = round(config.extra_epochs_fraction * plateau)
            lines.append(
                f"{head}loss plateau after epoch {plateau}; the switch to the "
                f"convergence phase comes {extra} epochs later (after epoch "
                f"{plateau + extra}), past the {budget}-epoch budget, so no "
                "Hessian-aware decay: a longer --epochs shows them; curves: "
                f"{curves}")
        else:
            decayed = (f"Hessian-aware learning-rate decays after epochs "
                       f"{_and(decays)}" if decays else
                       "no Hessian-aware decay (the eigenvalue and the loss "
                       "did not both rise)")
            lines.append(
                f"{head}loss plateau after epoch {plateau}, switch to the "
                f"convergence phase after epoch {switch}, {decayed}; curves: "
                f"{curves}")
    return lines


def _and(numbers):
    """`"53"`, `"53 and 56"`, `"53, 56 and 58"`."""
    words = [str(n) for n in numbers]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _total_minutes(results, seconds):
    """The comparison's time: its runs' own wall times (kept in their
    summaries, whichever call trained them), or this call's `seconds` when
    that is longer (loading, analyses)."""
    trained = sum(max(summary.get("wall_time_s") or 0.0,
                      summary.get("train_wall_time_s") or 0.0)
                  for group in results for summary in group.summaries)
    return max(trained, seconds) / 60


def _mean_history(histories):
    """Rows of the first history with loss and val. accuracy averaged."""
    length = min(len(rows) for rows in histories)
    mean = []
    for i in range(length):
        row = dict(histories[0][i])
        for key in ("loss", "val_accuracy"):
            row[key] = sum(rows[i][key] for rows in histories) / len(histories)
        mean.append(row)
    return mean


def _seed_verdicts(results, preset, finals, seeds):
    """One sentence per row with a reference: is the difference shown?"""
    from keras_lrphase.training.statistics import seed_difference

    sentences = []
    for run in (group.run for group in results):
        versus = run.versus or preset.reference
        if versus is None or versus == run.label or versus not in finals:
            continue
        mine = [v for v in finals[run.label] if v is not None]
        theirs = [v for v in finals[versus] if v is not None]
        if seeds < 2 or len(mine) < 2 or len(theirs) < 2:
            sentences.append(
                f"{run.label} vs {versus}: one seed per row, so no seed "
                "spread to compare with (run with --seeds 2 or more).")
        else:
            sentences.append(seed_difference(run.label, mine, versus, theirs)[1])
    return sentences


def _p_value_cell(run, preset, finals):
    versus = run.versus or preset.reference
    if versus is None or versus == run.label or versus not in finals:
        return "-"
    mine = [v for v in finals[run.label] if v is not None]
    theirs = [v for v in finals[versus] if v is not None]
    if len(mine) < 2 or len(theirs) < 2:
        return "-"
    from keras_lrphase.training.statistics import welch_t_test

    _, _, p = welch_t_test(mine, theirs)
    return "-" if math.isnan(p) else f"{p:.3g} vs {versus}"


def _epochs_cell(epochs):
    """Epochs run: one number, or the mean and range over seeds."""
    if len(set(epochs)) == 1:
        return str(epochs[0])
    return f"{sum(epochs) / len(epochs):.1f} ({min(epochs)}-{max(epochs)})"


def _mean_pct(values):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return _pct(values[0])
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return f"{100 * mean:.2f} +- {100 * std:.2f}%"


def _pct(value):
    return "-" if value is None else f"{100 * value:.2f}%"
