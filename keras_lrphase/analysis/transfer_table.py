"""The transfer accuracy of successive stage models and the gains between them.

The Learning Stages paper's Table 2 lists, for each target task, the
accuracy of the models of stages 1, 2 and 3 after transfer, the gains
`Gain12 = acc2 - acc1` and `Gain23 = acc3 - acc2`, and the ratio
`Gain23 / Gain12`: how much the features learned in stage 3 add, compared
with those learned in stage 2. A ratio on the target task smaller than on
the source task means the later stage's features transfer less. Here the
rows may be any number of models: `Gain{k}{k+1} = acc_{k+1} - acc_k` and
the ratio of each gain to the one before it.
"""

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class TransferRow:
    """One model of a `TransferTable`.

    Attributes:
        name: String. The model's name (e.g. `"stage2"`).
        accuracy: Float in [0, 1]. Accuracy on the target test data.
        train_accuracy: Float in [0, 1]. Accuracy on the target training
            data (of the fitted probe, or the fine-tuned network).
        gain: Float or None. `accuracy` minus the previous row's (None for
            the first row).
        gain_ratio: Float or None. `gain` over the previous row's gain (None
            for the first two rows; NaN when that gain is 0).
    """

    name: str
    accuracy: float
    train_accuracy: float
    gain: float = None
    gain_ratio: float = None


def gain_name(k):
    """The paper's name of the gain from row `k` to row `k + 1` (from 1).

    >>> gain_name(1), gain_name(12)
    ('Gain12', 'Gain12_13')
    """
    return f"Gain{k}{k + 1}" if k + 1 < 10 else f"Gain{k}_{k + 1}"


@dataclasses.dataclass(frozen=True)
class TransferTable:
    """Transfer accuracies of several models, with gains and their ratios.

    Attributes:
        mode: String. `"fix"` or `"finetune"` (see `transfer_probe`).
        rows: Tuple of `TransferRow`, in the order the models were given.
        num_classes: Int. Classes of the target task.
        train_examples: Int. Target training examples.
        test_examples: Int. Target test examples.
        settings: Dict. The settings the probes were trained with.

    Example:

    >>> table = TransferTable.from_accuracies(
    ...     "fix", ["stage1", "stage2", "stage3"], [0.60, 0.70, 0.75])
    >>> {k: round(v, 4) for k, v in table.gains.items()}
    {'Gain12': 0.1, 'Gain23': 0.05}
    >>> {k: round(v, 4) for k, v in table.ratios.items()}
    {'Gain23/Gain12': 0.5}
    """

    mode: str
    rows: tuple
    num_classes: int = None
    train_examples: int = None
    test_examples: int = None
    settings: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_accuracies(cls, mode, names, accuracies, train_accuracies=None,
                        **fields):
        """A table from per-model accuracies; gains and ratios computed."""
        if train_accuracies is None:
            train_accuracies = [math.nan] * len(accuracies)
        rows, previous_gain = [], None
        for k, (name, accuracy, train) in enumerate(
                zip(names, accuracies, train_accuracies)):
            gain = ratio = None
            if k > 0:
                gain = float(accuracy) - float(accuracies[k - 1])
            if k > 1:
                ratio = gain / previous_gain if previous_gain else math.nan
            rows.append(TransferRow(str(name), float(accuracy), float(train),
                                    gain, ratio))
            previous_gain = gain
        return cls(mode, tuple(rows), **fields)

    @property
    def names(self):
        """The models' names, in order."""
        return [row.name for row in self.rows]

    @property
    def accuracies(self):
        """The target test accuracies, in order."""
        return [row.accuracy for row in self.rows]

    @property
    def gains(self):
        """`{"Gain12": acc2 - acc1, "Gain23": ...}` (rows counted from 1)."""
        return {gain_name(k): row.gain
                for k, row in enumerate(self.rows[1:], 1)}

    @property
    def ratios(self):
        """`{"Gain23/Gain12": Gain23 / Gain12, ...}` (NaN over a zero gain)."""
        return {f"{gain_name(k + 1)}/{gain_name(k)}": row.gain_ratio
                for k, row in enumerate(self.rows[2:], 1)}

    def to_dict(self):
        """A JSON-ready dict (NaN written as None)."""
        def clean(value):
            if isinstance(value, float) and math.isnan(value):
                return None
            return value

        return {
            "mode": self.mode,
            "num_classes": self.num_classes,
            "train_examples": self.train_examples,
            "test_examples": self.test_examples,
            "settings": dict(self.settings),
            "rows": [{k: clean(v) for k, v in
                      dataclasses.asdict(row).items()} for row in self.rows],
            "gains": {k: clean(v) for k, v in self.gains.items()},
            "ratios": {k: clean(v) for k, v in self.ratios.items()},
        }

    def to_markdown(self):
        """The table in Markdown, accuracies and gains in percent.

        One row per model (`model | accuracy | gain | gain ratio`), then a
        line in the paper's Table 2 layout (`Stage1 Gain12 Stage2 ...`).
        """
        def pct(value):
            if value is None:
                return "-"
            return "nan" if math.isnan(value) else f"{100 * value:.2f}"

        def ratio(value):
            if value is None:
                return "-"
            return "nan" if math.isnan(value) else f"{value:.2f}"

        lines = [f"Transfer ({self.mode}): accuracy on the target test data "
                 "(%); gain: change from the row above (percentage points); "
                 "ratio: gain over the previous gain.", "",
                 "| model | accuracy (%) | train accuracy (%) | gain | "
                 "gain ratio |", "|---|---|---|---|---|"]
        for row in self.rows:
            lines.append(f"| {row.name} | {pct(row.accuracy)} | "
                         f"{pct(row.train_accuracy)} | {pct(row.gain)} | "
                         f"{ratio(row.gain_ratio)} |")
        header, cells = [], []
        for k, row in enumerate(self.rows, 1):
            if k > 1:
                header.append(gain_name(k - 1))
                cells.append(pct(row.gain))
            header.append(row.name)
            cells.append(pct(row.accuracy))
        for name, value in self.ratios.items():
            header.append(name)
            cells.append(ratio(value))
        lines += ["", "As in Table 2 of the Learning Stages paper:", "",
                  "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header),
                  "| " + " | ".join(cells) + " |"]
        return "\n".join(lines) + "\n"
