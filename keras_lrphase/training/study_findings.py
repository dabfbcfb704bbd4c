"""The answer of a sensitivity study, in words, beside the paper's.

A study preset (Tables 1, 6 and 7 of the two-phase paper, Figure 3 of the
Learning Stages paper, at CPU scale) asks one question. `compare` writes
the table of its runs; `answer_lines` reads the question off those runs:

* `kind="best"`: which row has the highest mean final validation accuracy
  (of the rows not `outside`), how far the default row (`default`) is from
  it, and, where the rows are ordered (`ordered=True`: Table 1's first
  decay from earliest to latest), the last row against the first. The
  same read off the paper's column; where the paper's best row is another,
  that row against ours, so that the seeds say whether the two differ.
* `kind="stages"`: the Learning Stages paper's stage transition: for each
  row decayed once (it names the undecayed row it is compared with as its
  `versus`), the training loss drop over the first epoch at the decayed
  rate against the undecayed row's over the same epoch, and the decayed
  rows of one optimizer against each other by their best validation
  accuracy (the paper: with batch gradient descent, decays at different
  epochs reach almost the same best accuracy).

Differences are judged by `keras_lrphase.training.statistics.seed_difference`
(Welch's test at 0.05 and a difference above the larger seed std).

Example:

>>> question = StudyQuestion(
...     "Which beta is best?", "0.5 (92.66%).", kind="best", default="b0.5")
>>> runs = {"b0.3": [0.60, 0.61, 0.62], "b0.5": [0.64, 0.65, 0.66]}
>>> for line in answer_lines(question, runs, paper={"b0.3": 92.31, "b0.5": 92.66}):
...     print(line)
- Question: Which beta is best?
- Paper: 0.5 (92.66%).
- Here, final validation accuracy (mean over 3 seeds): b0.3 61.00%, b0.5 65.00%. Best: b0.5. The default, b0.5, is the best row.
- The paper's column: best b0.5 (92.66%); the default b0.5 is the best. Same best row as the paper: yes.

References:
    "Achieving Small-Batch Accuracy with Large-Batch Scalability via
    Adaptive Learning Rate Adjustment", Tables 1, 6 and 7. You, Long,
    Jordan, Wang, "Learning Stages: Phenomenon, Root Cause, Mechanism
    Hypothesis, and Implications", Figure 3.
"""

import dataclasses

import numpy as np

from keras_lrphase.training.statistics import seed_difference

KINDS = ("best", "stages")


@dataclasses.dataclass(frozen=True)
class StudyQuestion:
    """What a study preset asks and the paper's answer.

    Attributes:
        text: String. The question.
        paper_answer: String. The paper's finding, with its numbers.
        kind: `"best"` or `"stages"` (see the module docstring).
        default: String or None. `"best"`: the label of the default
            setting's row.
        ordered: Bool. `"best"`: the rows go from the smallest setting to
            the largest, so the last row is compared with the first.
        outside: Tuple of labels. `"best"`: rows left out of the search for
            the best row (another budget, say), each compared with it.
    """

    text: str
    paper_answer: str
    kind: str = "best"
    default: str = None
    ordered: bool = False
    outside: tuple = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(
                f"Argument `kind` must be one of {', '.join(KINDS)}. "
                f"Received: kind={self.kind!r}")


def answer_lines(question, finals, paper=None, losses=None, decays=None,
                 versus=None, bests=None):
    """The answer as markdown list items.

    Args:
        question: A `StudyQuestion`.
        finals: Dict from row label (in row order) to the final validation
            accuracies (fractions), one per seed.
        paper: Dict from row label to the paper's accuracy (percent), for
            the rows that have one. Defaults to `None`.
        losses: `"stages"`: dict from row label to one list of epoch
            training losses per seed (epoch 1 first).
        decays: `"stages"`: dict from row label to the epoch after which
            its rate decayed (None: never).
        versus: `"stages"`: dict from a decayed row's label to the label of
            the undecayed row it is compared with.
        bests: `"stages"`: dict from row label to the best validation
            accuracies, one per seed: decays at different epochs are
            compared by them, as the Learning Stages paper does.

    Returns:
        A list of strings, each starting with `"- "`. Rows that were not
        run (`compare --only`) are left out of what is compared.
    """
    lines = [f"- Question: {question.text}", f"- Paper: {question.paper_answer}"]
    if question.kind == "best":
        return lines + _best_lines(question, finals, paper or {})
    return lines + _stages_lines(bests, losses, decays, versus)


def answer_from_results(question, results, losses):
    """`answer_lines` for the runs of a `compare`.

    Args:
        question: A `StudyQuestion`.
        results: List of `keras_lrphase.training.compare.RunGroup`, one
            per row, with one `summary.json` dict per seed.
        losses: Dict from row label to one list of epoch training losses
            per seed.
    """

    def accuracies(key):  # rows without one (no validation) left out
        values = {group.run.label: [s[key] for s in group.summaries
                                    if s.get(key) is not None]
                  for group in results}
        return {label: v for label, v in values.items() if v}

    finals = accuracies("final_val_accuracy")
    runs = [group.run for group in results]
    paper = {run.label: run.paper for run in runs
             if run.paper is not None and run.label in finals}
    decays = {group.run.label: (group.config.decay_epochs[0]
                                if group.config.decay_epochs else None)
              for group in results}
    versus = {run.label: run.versus for run in runs}
    return answer_lines(question, finals, paper=paper, losses=losses,
                        decays=decays, versus=versus,
                        bests=accuracies("best_val_accuracy"))


def _best_lines(question, finals, paper):
    seeds = min(len(v) for v in finals.values())
    means = {label: float(np.mean(v)) for label, v in finals.items()}
    candidates = ([label for label in means if label not in question.outside]
                  or list(means))
    best = max(candidates, key=means.get)
    listed = ", ".join(f"{label} {100 * m:.2f}%" for label, m in means.items())
    among = (f" (of the rows but {', '.join(question.outside)})"
             if question.outside else "")
    here = (f"- Here, final validation accuracy (mean over {seeds} "
            f"seed{'s' if seeds > 1 else ''}): {listed}. Best{among}: {best}.")
    if question.default in finals:
        here += " " + _default_sentence(question.default, best, finals)
    lines = [here]
    labels = list(finals)
    if question.ordered and len(labels) > 1:
        lines.append("- " + _difference(labels[-1], labels[0], finals))
    lines += ["- " + _difference(label, best, finals)
              for label in question.outside if label in finals]
    if paper and set(paper) == set(finals):
        paper_best = max(candidates, key=paper.get)
        text = f"- The paper's column: best {paper_best} ({paper[paper_best]:.2f}%)"
        if question.default in paper:
            gap = paper[paper_best] - paper[question.default]
            text += (f"; the default {question.default} is the best" if gap == 0
                     else f"; the default {question.default} is {gap:.2f} "
                          "points below it")
        if question.ordered and len(labels) > 1:
            change = paper[labels[-1]] - paper[labels[0]]
            text += f"; {labels[-1]} vs {labels[0]}: {change:+.2f} points"
        same = "yes" if paper_best == best else "no"
        lines.append(text + f". Same best row as the paper: {same}.")
        # Is the paper's best row shown worse here? (The default row was
        # measured against ours above.)
        if paper_best not in (best, question.default):
            lines.append("- The paper's best row here: "
                         + _difference(paper_best, best, finals))
    return lines


def _default_sentence(default, best, finals):
    if default == best:
        return f"The default, {default}, is the best row."
    return f"The default: {_difference(default, best, finals)}"


def _difference(label, reference, finals):
    """One sentence: `label` against `reference`, over seeds where there
    are at least 2 of each."""
    mine, theirs = finals[label], finals[reference]
    if len(mine) < 2 or len(theirs) < 2:
        points = 100 * (np.mean(mine) - np.mean(theirs))
        return (f"{label} vs {reference}: {points:+.2f} points (one seed: "
                "no seed spread to judge it by).")
    return seed_difference(label, mine, reference, theirs)[1]


def _stages_lines(bests, losses, decays, versus):
    lines = []
    decayed = [label for label in bests if versus.get(label) is not None]
    for label in decayed:
        epoch, undecayed = decays[label], versus[label]
        if undecayed not in bests:  # not run (`compare --only`)
            continue
        drops = _drops(losses[label], epoch)
        plain = _drops(losses[undecayed], epoch)
        if drops is None or plain is None:
            lines.append(f"- {label}: fewer than {epoch + 1} epochs, so no "
                         "epoch at the decayed rate to measure.")
            continue
        text = (f"- {label}: the training loss fell by {_mean_std(drops)} in "
                f"epoch {epoch + 1} (the first at the decayed rate); "
                f"{undecayed}: by {_mean_std(plain)} over the same epoch.")
        if len(drops) > 1 and len(plain) > 1:
            shown, _ = seed_difference(label, drops, undecayed, plain)
            text += (" A stage transition: the drop is larger than the "
                     "seed spread." if shown and np.mean(drops) > np.mean(plain)
                     else " No stage transition shown by these seeds.")
        lines.append(text)
    groups = {}
    for label in decayed:
        groups.setdefault(versus[label], []).append(label)
    for undecayed, labels in groups.items():
        for later in labels[1:]:
            lines.append("- Best validation accuracy, decays at different "
                         "epochs: " + _difference(later, labels[0], bests))
    return lines


def _drops(histories, epoch):
    """Loss of epoch `epoch` minus loss of epoch `epoch + 1`, per seed."""
    if any(len(h) < epoch + 1 for h in histories):
        return None
    return [h[epoch - 1] - h[epoch] for h in histories]


def _mean_std(values):
    if len(values) < 2:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} +- {np.std(values, ddof=1):.4f}"
