"""Named sets of training configurations that `keras-lrphase compare` runs.

* `demo`: the offline main job (scikit-learn's 8x8 digits, a small CNN,
  CPU-friendly): small-batch step decay, large-batch step decay with the
  linear scaling rule, and large-batch two-phase.
* `cifar10-cpu`: a reduced CIFAR-10 setting that runs on a 2-core CPU within
  an hour (an image folder such as the JPEG copy, via `--data-dir`).
* `cifar10-excursion-cpu`: the `cifar10-cpu` setting at a rate whose loss
  rises after the warmup (an excursion): the paper's two-phase rules and
  the package's defaults against step decay.
* `digits-excursion`: the same failure offline, in minutes: the demo's
  setting at 4 times its linear-scaling rate, 10 seeds.
* `cifar10-table2`: the paper's Table 2 (ResNet-20, 300 epochs, batch 128 vs
  8192) with its five configurations, plus two-phase at rate 4.8 and with
  the package's default rules; needs an accelerator.
* `cifar10-lr-search`: the search behind the two Table 2 learning rates that
  the paper's text leaves illegible, run in the `cifar10-cpu` setting.
* `cifar10-autodecay-cpu`: AutoDecay against step decay at the small batch
  of the `cifar10-cpu` setting, with the model of every stage saved.
* `cifar10-momentum-cpu`: momentum correction on the learning-rate changes
  of the `cifar10-cpu` step-decay and two-phase rows.
* `cifar10-table1`, `cifar100-table3`, `svhn-table4`, `imagenet-table5`,
  `cifar10-table6`, `cifar10-table7`: the paper's other tables at the
  paper's scale; they need an accelerator.
* `heuristics-warmup-cpu`, `heuristics-distillation-cpu`: the Heuristics
  paper's warmup (with FC freezing) and distillation studies, with their
  SVCCA heatmaps, at CPU scale on CIFAR-10.
* `landscape-cpu`: the loss-landscape figures (the Heuristics paper's
  Figures 1 and 2, the two-phase paper's Figure 1) at CPU scale on
  CIFAR-10 (`keras_lrphase.training.landscape_study`).
"""

import dataclasses

from keras_lrphase.training.run_config import RunConfig
from keras_lrphase.training.study_findings import StudyQuestion

# Two-phase exactly as Algorithm 1 of the paper prints it (the plateau and
# decay rules of `TwoPhaseController` named "paper"): the rule of the
# presets that reproduce the paper's tables and of the studies measured
# with it (no floor on the decays). The other two-phase rows use the
# package's defaults (plateau rule "flat", the paper's decay rule with the
# floor min_factor=0.01).
PAPER_RULES = dict(plateau_rule="paper", decay_rule="paper", min_factor=0.0)
# Decay rule "significant" (rises beyond the run's noise), without a floor:
# the alternative the studies measured against the defaults.
NOISE_AWARE_DECAYS = dict(decay_rule="significant", min_factor=0.0)


@dataclasses.dataclass(frozen=True)
class PresetRun:
    """One configuration of a preset.

    Attributes:
        label: String. Row name in `table.md` and run folder name.
        overrides: Dict. `RunConfig` fields on top of the preset's common
            fields. A relative `stage_checkpoints` is a folder inside the
            run's output folder.
        paper: Float or None. The paper's validation accuracy (percent) for
            this configuration, where the preset mirrors the paper.
        versus: String or None. The label of the run this one is tested
            against (Welch's t-test over seeds); None uses the preset's
            `reference`.
        teacher: String or None. The label of the run of the same preset
            whose trained model (its `model.keras`: that run must set
            `save_model`) is this run's distillation teacher, seed by seed.
            `compare` runs the teacher first (also with `--jobs`) and
            trains this run again when the teacher's model file changed
            (`keras_lrphase.training.teacher_runs`).
    """

    label: str
    overrides: dict
    paper: float = None
    versus: str = None
    teacher: str = None


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named comparison: common `RunConfig` fields and the runs.

    Attributes:
        name: String. The `--preset` name.
        description: String. One line for `table.md` and `--help`.
        common: Dict. `RunConfig` fields shared by every run.
        runs: Tuple of `PresetRun`.
        requires_data_dir: Bool. Whether `--data-dir` must be given.
        paper_source: String or None. Where the `paper` numbers come from.
        notes: String. Free text written under the table.
        seeds: Tuple of ints. Every run is repeated with each seed; the
            table reports the mean and standard deviation over seeds.
        reference: String or None. The label of the run the others are
            tested against (Welch's t-test over seeds).
        minutes: Float or None. Measured wall time of the whole preset on
            this project's 2-core CPU machine (its default seeds); None:
            it needs an accelerator. The one place this figure is kept: the
            preset table of docs/guides/command-line.md and `--help` show it.
        minutes_estimated: Bool. `minutes` is an estimate from another
            preset's measured time per run, not yet measured itself.
        study: String or None. The analysis `compare` writes after the
            runs: `"landscape"` (`keras_lrphase.training.landscape_study`),
            or None: the SVCCA study (`heuristics_study`) when a run has
            weight snapshots or a teacher.
        question: A `StudyQuestion` or None. What a study preset asks and
            the paper's answer; `table.md` answers it from the runs
            (`keras_lrphase.training.study_findings`).
        closing: String or None. The last line `compare` prints: what the
            comparison shows and does not, and where to go next.
    """

    name: str
    description: str
    common: dict
    runs: tuple
    requires_data_dir: bool = False
    paper_source: str = None
    notes: str = ""
    seeds: tuple = (0,)
    reference: str = None
    minutes: float = None
    minutes_estimated: bool = False
    study: str = None
    question: StudyQuestion = None
    closing: str = None

    @property
    def epochs(self):
        """The preset's epoch budget."""
        return self.common.get("epochs", RunConfig.epochs)

    def configs(self, epochs=None, data_dir=None, cache_dir=None, seeds=None):
        """The runs as `(PresetRun, RunConfig)` pairs, one per run and seed.

        Args:
            epochs: Int or None. Overrides the epoch budget for a quick
                check; decay epochs, warmup, patience and restart periods
                are scaled by the same ratio. Defaults to `None`.
            data_dir: String or None. Data folder for every run.
            cache_dir: String or None. Cache folder for every run.
            seeds: Sequence of ints or None. Overrides the preset's seeds.
                Defaults to `None`.

        Returns:
            A list of `(PresetRun, RunConfig)`, run by run, each run's seeds
            in order.
        """
        if self.requires_data_dir and data_dir is None:
            raise ValueError(
                f"Preset {self.name!r} reads an image folder: pass --data-dir "
                "(e.g. /tmp/cifar10 extracted from cifar10-jpeg.tar.gz). "
                "Received: data_dir=None"
            )
        if epochs is not None and (isinstance(epochs, bool)
                                   or not isinstance(epochs, int) or epochs < 1):
            raise ValueError(
                f"Argument `epochs` must be an integer >= 1. Received: epochs={epochs!r}"
            )
        seeds = tuple(self.seeds if seeds is None else seeds)
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int)
                            or s < 0 for s in seeds):
            raise ValueError(
                "Argument `seeds` must be a non-empty sequence of integers "
                f">= 0. Received: seeds={seeds!r}"
            )
        result = []
        for run in self.runs:
            values = dict(self.common)
            values.update(run.overrides)
            values["name"] = run.label
            if data_dir is not None:
                values["data_dir"] = data_dir
            if cache_dir is not None:
                values["cache_dir"] = cache_dir
            if epochs is not None and epochs != values.get("epochs"):
                values = _scale_epochs(values, epochs)
            for seed in seeds:
                result.append((run, RunConfig(**dict(values, seed=seed))))
        return result


def _scale_epochs(values, epochs):
    ratio = epochs / values.get("epochs", RunConfig.epochs)
    values = dict(values)
    values["epochs"] = epochs
    if values.get("warmup_epochs"):
        values["warmup_epochs"] = min(epochs - 1,
                                      int(round(values["warmup_epochs"] * ratio)))
        values["warmup_epochs"] = max(values["warmup_epochs"], 0)
    if values.get("decay_epochs"):
        scaled = sorted({min(max(1, int(round(e * ratio))), epochs - 1)
                         for e in values["decay_epochs"]})
        values["decay_epochs"] = tuple(e for e in scaled if e >= 1) or None
    for key in ("plateau_patience", "restart_epochs"):
        if values.get(key):
            values[key] = max(1, int(round(values[key] * ratio)))
    if values.get("freeze_epochs"):  # as warmup, which it stands in for
        values["freeze_epochs"] = max(0, min(
            epochs - 1, int(round(values["freeze_epochs"] * ratio))))
    if values.get("snapshot_epochs"):  # the initialisation stays 0
        values["snapshot_epochs"] = tuple(sorted({
            e if e == 0 else max(1, min(epochs, int(round(e * ratio))))
            for e in values["snapshot_epochs"]}))
    return values


# The demo: digits (1,438 train / 359 test, 8x8x1), a 5.3K-parameter CNN.
# "Large batch" is 512 of 1,438 examples (2 steps per epoch) against a small
# batch of 32 (44 steps per epoch), the paper's 8192 / 128 ratio being 64.
DEMO = Preset(
    name="demo",
    description=(
        "Offline demo: small CNN on scikit-learn's 8x8 digits; two-phase vs "
        "step decay at a large batch, 3 seeds."),
    common=dict(dataset="digits", model="small-cnn", epochs=100,
                weight_decay=5e-4, warmup_epochs=5, hessian_every=1,
                momentum=0.9, augment="crop"),
    runs=(
        PresetRun("small-batch", dict(batch_size=32, lr=0.05,
                                      schedule="step")),
        PresetRun("large-batch", dict(batch_size=512, lr=0.8,
                                      schedule="step")),
        PresetRun("two-phase", dict(batch_size=512, lr=0.8,
                                    schedule="two-phase", min_delta=0.005)),
    ),
    notes=(
        "All runs: 5 warmup epochs, random 1-pixel shifts, weight decay "
        "5e-4. Large-batch runs use the linear scaling rule (lr 0.05 x "
        "512/32 = 0.8). Step decay: x0.1 after 50% and 75% of the budget. "
        "Two-phase: plateau = no loss decrease larger than 0.005 for 5% of "
        "the budget (5 epochs), then x/3 extra epochs, then Hessian-aware "
        "decays by 0.5. The validation set has 359 images: one image is "
        "0.28 points. What this demo shows: the mechanics (the plateau, the "
        "switch and the Hessian-aware decays, in each run's curves.png). "
        "What it does not: an accuracy gain. At this scale (about 97% "
        "accuracy) the rows differ by less than their seed spread; with 5 "
        "seeds the large-batch gap was 0.56 points (p = 0.22) and "
        "two-phase's gain 0.44 points (p = 0.28). The cifar10-cpu preset is "
        "the one that measures the gain."),
    seeds=(0, 1, 2),
    reference="large-batch",
    minutes=5.5,
    closing=(
        "This demo shows the mechanics of two-phase (the plateau, the switch "
        "and the Hessian-aware decays above; look at a two-phase run's "
        "curves.png), not an accuracy gain: at about 97% on 359 validation "
        "images the rows differ by less than their seed spread. The preset "
        "that measures the gain is cifar10-cpu: keras-lrphase compare "
        "--preset cifar10-cpu --data-dir /path/to/cifar10 (ResNet-8 on "
        "CIFAR-10, about 75 min on 2 CPU cores)."),
)

# A reduced CIFAR-10 for 2 CPU cores: He et al.'s CIFAR ResNet with one
# block per stage (ResNet-8, 76K parameters, about 3x faster than ResNet-20)
# on a class-balanced 5,000-image training subset, 80 epochs. Batch 512 on
# 5,000 images (9 steps per epoch) is the paper's 8192 on 50,000 (6 steps
# per epoch) in miniature. In a budget this short the loss still falls by
# about 0.01 per epoch when it has flattened in the paper's sense, so the
# plateau threshold is a loss decrease of 0.03 (with 0 the plateau comes at
# 70% of the budget and leaves the convergence phase a handful of epochs;
# with 0.03 it comes at about 35%, the paper's proportion: 105 of 300).
CIFAR10_CPU = Preset(
    name="cifar10-cpu",
    description=(
        "Reduced CIFAR-10 for a 2-core CPU: ResNet-8 on a 5,000-image "
        "subset, 80 epochs; two-phase (package defaults, the paper's rules "
        "and noise-aware decays), step decay and cosine decay at batch 512, "
        "with a batch-128 reference."),
    common=dict(dataset="cifar10", model="resnet8", epochs=80,
                train_size=5000, test_size=5000, weight_decay=1e-4,
                warmup_epochs=3, hessian_every=1, hessian_batch_size=1024,
                momentum=0.9),
    runs=(
        PresetRun("small-batch", dict(batch_size=128, lr=0.1,
                                      schedule="step")),
        PresetRun("large-batch", dict(batch_size=512, lr=0.4,
                                      schedule="step")),
        PresetRun("two-phase", dict(batch_size=512, lr=0.4,
                                    schedule="two-phase", min_delta=0.03)),
        PresetRun("two-phase (paper rules)", dict(
            batch_size=512, lr=0.4, schedule="two-phase", min_delta=0.03,
            **PAPER_RULES)),
        PresetRun("two-phase (noise-aware decays)", dict(
            batch_size=512, lr=0.4, schedule="two-phase", min_delta=0.03,
            **NOISE_AWARE_DECAYS)),
        PresetRun("cosine", dict(batch_size=512, lr=0.4, schedule="cosine")),
    ),
    requires_data_dir=True,
    notes=(
        "All runs: 3 warmup epochs, 4-pixel crops and flips, weight decay "
        "1e-4, momentum 0.9, validation on a class-balanced half of the test "
        "set (5,000 images). Large batch: linear scaling (0.1 x 512/128 = "
        "0.4). Step decay: x0.1 after 40 and 60 epochs (50%/75%). Cosine: "
        "Keras' CosineDecay from 0.4 to 0 over the 77 epochs after the same "
        "3-epoch linear warmup (its warmup_steps). Two-phase: plateau = no "
        "loss decrease larger than 0.03 for 4 epochs (5% of the budget), "
        "then x/3 extra epochs, then Hessian-aware decays by 0.5 "
        "(eigenvalue of the output layer on a fixed 1024-image batch); "
        "'two-phase' with the package's default rules (an excursion of the "
        "loss 10% above its best is not a plateau; the decays stop at 1/100 "
        "of the rate), 'two-phase (paper rules)' with Algorithm 1 as "
        "printed, 'two-phase (noise-aware decays)' with decay rule "
        "'significant' (a decay needs rises beyond the epoch-to-epoch "
        "noise) and no floor."),
    reference="large-batch",
    minutes=150.0,
    minutes_estimated=True,
)

def _excursion_runs(min_delta):
    """The rows of the excursion studies: step decay, then two-phase with
    the paper's rules, with the package's defaults and with noise-aware
    decays, all with the plateau threshold `min_delta`."""
    return (
        PresetRun("step decay", dict(schedule="step")),
        PresetRun("two-phase (paper rules)", dict(
            schedule="two-phase", min_delta=min_delta, **PAPER_RULES)),
        PresetRun("two-phase", dict(schedule="two-phase",
                                    min_delta=min_delta)),
        PresetRun("two-phase (noise-aware decays)", dict(
            schedule="two-phase", min_delta=min_delta, **NOISE_AWARE_DECAYS)),
    )


# The post-warmup instability of the full-scale Table 2 run, at CPU scale:
# the cifar10-cpu setting at lr 6.4 (16 x its linear-scaling rate 0.4, the
# number Table 2 uses at batch 8192). After the 3-epoch warmup the loss
# falls to about chance level (2.30), rises 15% above that best and takes
# about 14 epochs (more than the 4-epoch patience) to come back below it;
# then the network learns. Step decay goes through that excursion; the
# paper's plateau rule counts its epochs as a plateau.
CIFAR10_EXCURSION_CPU = Preset(
    name="cifar10-excursion-cpu",
    description=(
        "Two-phase through a post-warmup loss excursion: cifar10-cpu's "
        "large-batch setting at lr 6.4; step decay, two-phase with the "
        "paper's rules, with the package's defaults and with noise-aware "
        "decays; 3 seeds."),
    common=dict(CIFAR10_CPU.common, batch_size=512, lr=6.4),
    runs=_excursion_runs(min_delta=0.03),
    requires_data_dir=True,
    notes=(
        "cifar10-cpu's large-batch setting (ResNet-8, 5,000 images, batch "
        "512, 3 warmup epochs, 80 epochs) at lr 6.4 instead of 0.4. Step "
        "decay: x0.1 after 40 and 60 epochs. Two-phase: plateau = no loss "
        "decrease larger than 0.03 for 4 epochs, x/3 extra epochs, decays "
        "by 0.5; 'two-phase (paper rules)' is Algorithm 1 as printed, "
        "'two-phase' the package's defaults (plateau rule 'flat', the "
        "paper's decay rule, decays stopping at 1/100 of the rate), "
        "'two-phase (noise-aware decays)' plateau rule 'flat' with decay "
        "rule 'significant' (threshold 1) and no floor."),
    seeds=(0, 1, 2),
    reference="step decay",
    minutes=300.0,
    minutes_estimated=True,
)


# The failure of the full-scale Table 2 run, offline in about 12 minutes:
# the demo's setting at 4 times its linear-scaling rate, where the loss
# rises after the warmup (1.45 after epoch 6, 4.4 after epoch 9) and stays
# above that best until about epoch 24; step decay rides it out.
DIGITS_EXCURSION = Preset(
    name="digits-excursion",
    description=(
        "Two-phase through a post-warmup loss excursion, offline: the demo's "
        "large batch at lr 3.2 (4 x the linear-scaling 0.8); step decay, "
        "two-phase with the paper's rules, with the package's defaults and "
        "with noise-aware decays; 10 seeds."),
    common=dict(DEMO.common, batch_size=512, lr=3.2),
    runs=_excursion_runs(min_delta=0.005),
    notes=(
        "The demo's setting (small CNN on scikit-learn's 8x8 digits, batch "
        "512, 5 warmup epochs, 100 epochs, weight decay 5e-4) at lr 3.2 "
        "instead of 0.8: after the warmup the training loss rises for about "
        "20 epochs. Step decay: x0.1 after 50 and 75 epochs. Two-phase: "
        "plateau = no loss decrease larger than 0.005 for 5 epochs, x/3 "
        "extra epochs, decays by 0.5; 'two-phase (paper rules)' is "
        "Algorithm 1 as printed, 'two-phase' the package's defaults "
        "(plateau rule 'flat', the paper's decay rule, decays stopping at "
        "1/100 of the rate), 'two-phase (noise-aware decays)' plateau rule "
        "'flat' with decay rule 'significant' (threshold 1) and no floor. "
        "The validation set has 359 images: one image is 0.28 points."),
    seeds=tuple(range(10)),
    reference="step decay",
    minutes=12.5,
)

def _five_configurations(small, large, accumulate, decay_epochs, lars, papers):
    """The paper's five rows: small batch, large batch, LARS, two-phase and
    two-phase + LARS.

    Args:
        small: `(batch_size, lr)` of the small-batch row.
        large: `(batch_size, lr, lars_lr, two_phase_lr, two_phase_lars_lr)`.
        accumulate: Int. Sub-batches per large-batch step.
        decay_epochs: Tuple. The step rows' decays (x0.1 each).
        lars: Float. The LARS trust coefficient.
        papers: The paper's five accuracies, in row order.
    """
    batch, lr, lars_lr, two_phase_lr, two_phase_lars_lr = large
    step = dict(schedule="step", decay_epochs=decay_epochs, decay_factor=0.1)
    adaptive = dict(schedule="two-phase", decay_factor=0.5, **PAPER_RULES)
    big = dict(batch_size=batch, accumulate=accumulate)
    rows = (
        ("small-batch", dict(step, batch_size=small[0], lr=small[1],
                             hessian_batch_size=1024)),
        ("large-batch", dict(step, **big, lr=lr)),
        ("LARS", dict(step, **big, lr=lars_lr, lars=lars)),
        ("two-phase", dict(adaptive, **big, lr=two_phase_lr)),
        ("two-phase + LARS", dict(adaptive, **big, lr=two_phase_lars_lr,
                                  lars=lars)),
    )
    return tuple(PresetRun(label, overrides, paper)
                 for (label, overrides), paper in zip(rows, papers))


# The two-phase paper, Table 2 (ResNet-20 on CIFAR-10, 300 epochs, warmup 10 epochs).
CIFAR10_TABLE2 = Preset(
    name="cifar10-table2",
    description=(
        "Two-phase paper, Table 2: ResNet-20 on CIFAR-10, 300 epochs, batch 128 vs "
        "8192 (8 x 1024 sub-batches), five configurations plus two-phase "
        "at 4.8 and with the default rules."),
    common=dict(dataset="cifar10", model="resnet20", epochs=300,
                weight_decay=1e-4, warmup_epochs=10, momentum=0.9,
                hessian_every=1, hessian_batch_size=8192),
    runs=_five_configurations(
        small=(128, 0.1), large=(8192, 6.4, 3.5, 6.4, 3.5), accumulate=8,
        decay_epochs=(150, 225), lars=0.01,
        papers=(92.83, 90.40, 92.10, 92.48, 92.66)) + (
        # The second candidate rate of the search, and the package's
        # default two-phase rules ('flat' plateau, decays floored at 1/100)
        # at the table's rate; not in the paper.
        PresetRun("two-phase 4.8", dict(
            schedule="two-phase", decay_factor=0.5, **PAPER_RULES,
            batch_size=8192, accumulate=8, lr=4.8)),
        PresetRun("two-phase (defaults)", dict(
            schedule="two-phase", decay_factor=0.5, batch_size=8192,
            accumulate=8, lr=6.4)),
    ),
    paper_source="Two-phase paper, Table 2 (mean of 5 runs, original CIFAR-10)",
    notes=(
        "Learning rates: 0.1 (batch 128) and 6.4 (batch 8192, linear scaling "
        "0.1 x 64) are legible in the paper's Table 2; 3.5 for two-phase + "
        "LARS is legible in its Tables 6 and 7. The LARS and two-phase rates "
        "are garbled in the text extraction and were chosen with the "
        "cifar10-lr-search preset (rates scaled by 512/8192 into the "
        "cifar10-cpu setting): two-phase at 6.4 (final accuracy 68.32 +- "
        "0.21% over 3 runs) beat 4.8 (67.34 +- 0.76%), 8 (66.54%) and 2.8 "
        "(62.62%). For LARS the scaled candidates 2.5 / 3.5 / 5 rose "
        "monotonically (58.46 / 60.80 / 62.26%) and stayed below plain SGD, "
        "so the search does not separate them: LARS uses 3.5, the legible "
        "LARS rate at this batch and coefficient. The 8192 batch is "
        "processed as 8 "
"sequential sub-batches of 1024 (gradient accumulation), as in the "
        "paper. Warmup: 10 epochs for every row. On the JPEG copy of "
        "CIFAR-10 expect 1-2 points below the paper. Two rows beyond the "
        "paper's five: 'two-phase 4.8' (the search's second rate, the "
        "paper's rules) and 'two-phase (defaults)' (rate 6.4, the package's "
        "default rules: plateau rule 'flat', the paper's decay rule with "
        "its decays stopping at 1/100 of the rate)."),
)

# The Table 2 rates that the text extraction garbles are LARS ("^5-", so
# x.5) and two-phase ("^8-", so x.8). The search runs each candidate in the
# `cifar10-cpu` setting, with every Table 2 rate carried over by the linear
# scaling rule between the two large batches (x 512/8192 = x 1/16: 6.4 -> 0.4,
# the `cifar10-cpu` large-batch rate). The label names the Table 2 rate.
_SEARCH_SCALE = 512 / 8192
_SEARCH_LARS = (2.5, 3.5, 5.0)
_SEARCH_TWO_PHASE = (2.8, 4.8, 6.4, 8.0)

CIFAR10_LR_SEARCH = Preset(
    name="cifar10-lr-search",
    description=(
        "Table 2 learning-rate search: the illegible LARS and two-phase "
        "rates, run in the cifar10-cpu setting with each rate scaled by "
        "512/8192."),
    common=dict(CIFAR10_CPU.common, batch_size=512),
    runs=tuple(
        PresetRun(f"LARS {lr:g}", dict(lr=lr * _SEARCH_SCALE, schedule="step",
                                       lars=0.01))
        for lr in _SEARCH_LARS
    ) + tuple(
        PresetRun(f"two-phase {lr:g}", dict(lr=lr * _SEARCH_SCALE,
                                            schedule="two-phase",
                                            min_delta=0.03, **PAPER_RULES))
        for lr in _SEARCH_TWO_PHASE
    ),
    requires_data_dir=True,
    notes=(
        "Each row is named by its Table 2 learning rate; the run uses that "
        "rate x 512/8192 (linear scaling between the two large batches, so "
        "Table 2's 6.4 is cifar10-cpu's 0.4). Candidates: LARS (coefficient "
        "0.01, step x0.1 after 40 and 60 epochs) at 2.5, 3.5 and 5, the "
        "garbled cell reading x.5; two-phase at 2.8, 4.8, 6.4 and 8, the "
        "garbled cell reading x.8. Everything else is cifar10-cpu: ResNet-8, "
        "5,000 training images, 80 epochs, 3 warmup epochs, one seed. With "
        "5,000 validation images one standard error is about 0.66 points."),
    minutes=175.0,
    minutes_estimated=True,
)

# The Learning Stages paper's claim for AutoDecay: the accuracy of a tuned
# step schedule in fewer epochs (ImageNet: 81 vs 90 epochs). Here at the
# small batch of `cifar10-cpu`, where step decay is the usual recipe.
CIFAR10_AUTODECAY_CPU = Preset(
    name="cifar10-autodecay-cpu",
    description=(
        "AutoDecay vs step decay in the cifar10-cpu setting (ResNet-8, 5,000 "
        "CIFAR-10 images, batch 128, budget 80 epochs), with the model of "
        "every AutoDecay stage saved."),
    common=dict(CIFAR10_CPU.common, batch_size=128, lr=0.1, hessian_every=0),
    runs=(
        PresetRun("step decay", dict(schedule="step")),
        PresetRun("AutoDecay", dict(schedule="autodecay",
                                    stage_checkpoints="stages")),
    ),
    requires_data_dir=True,
    notes=(
        "Both runs: ResNet-8, 5,000 training images, batch 128, lr 0.1, 3 "
        "warmup epochs, 4-pixel crops and flips, weight decay 1e-4, momentum "
        "0.9. Step decay: x0.1 after 40 and 60 of 80 epochs. AutoDecay: x0.1 "
        "at the end of each stage (bias-corrected moving average of the loss "
        "with beta 0.9 stable over 5 epochs within 5%), stopping when a "
        "stage brings its smoothed loss no lower than 85% of its first value; "
        "80 epochs at most. Its stage models are in <run>/seed<N>/stages."),
    seeds=(0, 1),
    reference="step decay",
    minutes=135.0,
)

# Goyal et al.'s momentum correction measured on the `cifar10-cpu` rows that
# change their learning rate: step decay (x0.1, twice) and two-phase (x0.5,
# several times), each with and without the correction.
CIFAR10_MOMENTUM_CPU = Preset(
    name="cifar10-momentum-cpu",
    description=(
        "Momentum correction at learning-rate changes, in the cifar10-cpu "
        "setting: the large-batch step-decay and two-phase rows with and "
        "without it."),
    common=dict(CIFAR10_CPU.common, batch_size=512, lr=0.4),
    runs=(
        PresetRun("step decay", dict(schedule="step")),
        PresetRun("step decay + correction", dict(schedule="step",
                                                  momentum_correction=True),
                  versus="step decay"),
        PresetRun("two-phase", dict(schedule="two-phase", min_delta=0.03,
                                    **PAPER_RULES)),
        PresetRun("two-phase + correction", dict(schedule="two-phase",
                                                 min_delta=0.03, **PAPER_RULES,
                                                 momentum_correction=True),
                  versus="two-phase"),
    ),
    requires_data_dir=True,
    notes=(
        "The cifar10-cpu large-batch setting (ResNet-8, 5,000 images, batch "
        "512, lr 0.4, 3 warmup epochs, 80 epochs). Correction: at every epoch "
        "start where the learning rate in force changed, the SGD velocity is "
        "multiplied by lr_new / lr_old (Goyal et al. 2017, Section 2.2)."),
    minutes=228.0,
)

# The two-phase paper, Table 1: the later the first decay of a large-batch
# step schedule, the higher the final accuracy (the margin keeps growing
# after the loss plateau). Batch 8192 at Table 2's large-batch rate.
CIFAR10_TABLE1 = Preset(
    name="cifar10-table1",
    description=(
        "Two-phase paper, Table 1: ResNet-20 on CIFAR-10 at batch 8192, 300 "
        "epochs, step decay with the first decay after 100 / 150 / 200 / 250 "
        "epochs."),
    common=dict(CIFAR10_TABLE2.common, batch_size=8192, accumulate=8, lr=6.4,
                schedule="step", decay_factor=0.1),
    runs=tuple(
        PresetRun(f"first decay {first}", dict(decay_epochs=(first, second)),
                  paper)
        for first, second, paper in ((100, 200, 87.72), (150, 225, 90.23),
                                     (200, 250, 91.43), (250, 275, 91.40))),
    paper_source="Two-phase paper, Table 1 (mean of 5 runs, original CIFAR-10)",
    notes=(
        "Table 1's rows: 100 epochs before the first decay and 100 / 100 "
        "after each decay (decays after 100 and 200), 150 / 75 / 75 (150, "
        "225), 200 / 50 / 50 (200, 250), 250 / 25 / 25 (250, 275). Each x0.1. "
        "Everything else is Table 2's large-batch row: batch 8192 as 8 x "
        "1024, lr 6.4, 10 warmup epochs, momentum 0.9, weight decay 1e-4."),
)

# The two-phase paper, Table 3 (WRN-28-10 on CIFAR-100, 250 epochs).
CIFAR100_TABLE3 = Preset(
    name="cifar100-table3",
    description=(
        "Two-phase paper, Table 3: WRN-28-10 on CIFAR-100 (TFDS), 250 epochs, "
        "batch 128 vs 8192 (8 x 1024 sub-batches), five configurations."),
    common=dict(dataset="cifar100", model="wrn-28-10", epochs=250,
                weight_decay=5e-4, warmup_epochs=10, momentum=0.9,
                hessian_every=1, hessian_batch_size=8192),
    runs=_five_configurations(
        small=(128, 0.1), large=(8192, 6.4, 6.0, 6.4, 6.0), accumulate=8,
        decay_epochs=(125, 185), lars=0.01,
        papers=(81.09, 76.89, 78.88, 78.90, 80.34)),
    paper_source="Two-phase paper, Table 3 (mean of 5 runs)",
    notes=(
        "Rates: 0.1 (batch 128) and 6.4 (linear scaling, x64) as in Table 2; "
        "6 for LARS and two-phase + LARS, legible in Tables 6 and 7's "
        "CIFAR-100 column; the two-phase rate is illegible in the text and "
        "is taken as the linear-scaling 6.4 (Table 2's choice for CIFAR-10). "
        "Weight decay 5e-4 and decays after 125 / 185 epochs (x0.1) for the "
        "step rows; 10 warmup epochs. Reads TFDS cifar100 (prepared with "
        "`tfds build cifar100` where there is a network; --data-dir names "
        "the TFDS folder)."),
)

# The two-phase paper, Table 4 (WRN-16-8 with dropout 0.5 on SVHN train +
# extra, 160 epochs): every rate is legible.
SVHN_TABLE4 = Preset(
    name="svhn-table4",
    description=(
        "Two-phase paper, Table 4: WRN-16-8 (dropout 0.5) on SVHN train + "
        "extra (TFDS), 160 epochs, batch 256 vs 4096, five configurations."),
    common=dict(dataset="svhn", model="wrn-16-8", epochs=160,
                weight_decay=5e-4, warmup_epochs=10, momentum=0.9,
                hessian_every=1, hessian_batch_size=4096),
    runs=_five_configurations(
        small=(256, 0.01), large=(4096, 0.32, 0.32, 0.32, 0.32), accumulate=4,
        decay_epochs=(80, 120), lars=0.001,
        papers=(98.55, 98.11, 98.32, 98.29, 98.48)),
    paper_source="Two-phase paper, Table 4 (mean of 5 runs)",
    notes=(
        "All rates and LARS coefficients are legible in Table 4: 0.01 at "
        "batch 256, 0.32 at 4096 (linear scaling, x16), LARS 0.001. Step: "
        "x0.1 after 80 and 120 epochs (Zagoruyko & Komodakis's SVHN "
        "schedule); weight decay 5e-4 (theirs); dropout 0.5 (Appendix A.2); "
        "batch 4096 as 4 x 1024 sub-batches. Reads TFDS svhn_cropped, "
        "training on train + extra (604K images)."),
)

# The two-phase paper, Table 5 (ResNet-50 on ImageNet, 100 epochs, Goyal et
# al.'s settings). Its learning-rate column is garbled in the text: see notes.
IMAGENET_TABLE5 = Preset(
    name="imagenet-table5",
    description=(
        "Two-phase paper, Table 5: ResNet-50 on ImageNet (an image folder or "
        "TFDS imagenet2012), 100 epochs, batch 256 vs 16384 (64 x 256 "
        "sub-batches), five configurations."),
    common=dict(dataset="imagenet", model="imagenet-resnet50", epochs=100,
                weight_decay=1e-4, warmup_epochs=10, momentum=0.9,
                hessian_every=1, hessian_batch_size=1024),
    runs=_five_configurations(
        small=(256, 0.1), large=(16384, 6.4, 3.2, 6.4, 3.2), accumulate=64,
        decay_epochs=(30, 60, 80), lars=0.001,
        papers=(76.79, 74.91, 76.15, 76.17, 76.67)),
    paper_source=("Two-phase paper, Table 5 (mean of 5 runs, ILSVRC2012 "
                  "validation set)"),
    notes=(
        "Rates: 0.1 at batch 256 (Goyal et al.'s reference; the cell reads "
        "\"^0^\") and 6.4 at 16384 for large-batch and two-phase (linear "
        "scaling 0.1 x 64; the cells read \"-61-\", as the 6.4 of Tables 2 "
        "and 3). Two-phase + LARS: 3.2, reading \"~32~\" with the decimal "
        "point lost as in Table 2's \"~33~\" for the 3.5 that Tables 6 and 7 "
        "print (32 is the other reading); the LARS cell is illegible and "
        "takes the same rate, as the LARS rows do in Tables 2-4. LARS "
        "coefficient 0.001; step decays x0.1 after 30 / 60 / 80 epochs "
        "(Goyal et al.'s schedule, legible); weight decay 1e-4 and momentum "
        "0.9 (Goyal et al.); 10 warmup epochs for every row (Section 4); "
        "two-phase plateau: no loss decrease for 5 epochs (5% of the "
        "budget). Batch 16384 as 64 sequential sub-batches of 256. "
        "Preprocessing (Appendix A.2): training images resized to a "
        "shorter side drawn from [256, 384] (aspect kept), a random 224 x "
        "224 crop, flip with probability 0.5, brightness +-32/255, hue "
        "+-0.1, saturation and contrast x0.6-1.4, ImageNet mean/std; "
        "validation: shorter side 256, central 224 crop. ResNet-50 (v1.5) "
        "with the last batch-norm gamma of every block at 0 and the fc "
        "bias L2-regularised with the kernels (batch-norm parameters are "
        "not). The Hessian eigenvalue (every epoch, every row: the paper's "
        "Figure 3b) is estimated on a fixed batch of 1024 training images: "
        "the estimator runs the network on its whole batch at once, which "
        "16384 images at 224 x 224 would not fit. Reads an ImageNet folder "
        "(train/ and val/, one folder per class) or TFDS imagenet2012 "
        "prepared beforehand (--data-dir); nothing is downloaded."),
)

# The two-phase paper, Tables 6 and 7 (CIFAR-10 columns): two-phase + LARS at
# batch 8192 with the exploration length, then the decay factor, varied.
_TWO_PHASE_LARS = dict(CIFAR10_TABLE2.common, batch_size=8192, accumulate=8,
                       lr=3.5, lars=0.01, schedule="two-phase",
                       decay_factor=0.5, **PAPER_RULES)

CIFAR10_TABLE6 = Preset(
    name="cifar10-table6",
    description=(
        "Two-phase paper, Table 6 (CIFAR-10): two-phase + LARS at batch "
        "8192 with 20 / 30 / 40 / 50% extra epochs after the loss plateau, "
        "and 50% with a 10% larger budget."),
    common=_TWO_PHASE_LARS,
    runs=tuple(
        PresetRun(f"extra {round(100 * fraction)}%",
                  dict(extra_epochs_fraction=fraction), paper)
        for fraction, paper in ((0.2, 92.03), (0.3, 92.66), (0.4, 92.54),
                                (0.5, 92.03))
    ) + (PresetRun("extra 50% (330 epochs)",
                   dict(extra_epochs_fraction=0.5, epochs=330), 92.86),),
    paper_source="Two-phase paper, Table 6, CIFAR-10 column (mean of 5 runs)",
    notes=(
        "Extra epochs: after a plateau detected at epoch x, x times the "
        "fraction more epochs before the convergence phase (the package's "
        "default is 1/3, Table 6's 30% row). Everything else is Table 2's "
        "two-phase + LARS row (lr 3.5, LARS 0.01, beta 0.5, 300 epochs); "
        "the last row has 330."),
)

CIFAR10_TABLE7 = Preset(
    name="cifar10-table7",
    description=(
        "Two-phase paper, Table 7 (CIFAR-10): two-phase + LARS at batch "
        "8192 with decay factor beta 0.3 to 0.7."),
    common=_TWO_PHASE_LARS,
    runs=tuple(
        PresetRun(f"beta {beta:g}", dict(decay_factor=beta), paper)
        for beta, paper in ((0.3, 92.31), (0.4, 92.63), (0.5, 92.66),
                            (0.6, 92.18), (0.7, 91.46))),
    paper_source="Two-phase paper, Table 7, CIFAR-10 column (mean of 5 runs)",
    notes=(
        "Everything but beta is Table 2's two-phase + LARS row (lr 3.5, "
        "LARS 0.01, extra epochs 1/3, 300 epochs)."),
)

# The Heuristics paper's warmup study (Section 4, Figures 4d, 5 and 15) at
# CPU scale. The paper: VGG-11 on CIFAR-10, batch 100 at 0.05 against batch
# 5000 at 2.5 (10 steps per epoch), warmup over the first 200 iterations,
# or no warmup but the fully-connected stack frozen for as long. Here:
# `vgg-small` (4 convolutions with batch normalisation, 3 Dense layers
# without) on 5,000 images, so batch 500 keeps the paper's 10 steps per
# epoch; warmup and freeze last 10 epochs (100 iterations). The paper's
# linearly scaled 2.5 sends this network to NaN in the first epoch, with or
# without warmup; at 0.1 the three large-batch rows differ as in the paper
# (measured on 2,000 images, batch 200, 8 epochs: no warmup stalls near 18%
# validation accuracy, warmup reaches 38%, the freeze 40% while it lasts).
HEURISTICS_WARMUP_CPU = Preset(
    name="heuristics-warmup-cpu",
    description=(
        "Heuristics paper, warmup (Figures 4d, 5): vgg-small on 5,000 "
        "CIFAR-10 images, 30 epochs; batch 500 with warmup, without, and "
        "with the FC stack frozen instead; batch 50; SVCCA heatmaps of each "
        "network at initialisation vs the end of warmup."),
    common=dict(dataset="cifar10", model="vgg-small", epochs=30,
                train_size=5000, test_size=5000, weight_decay=5e-4,
                momentum=0.9, hessian_every=0, schedule="step",
                decay_epochs=(), snapshot_epochs=(0, 10)),
    runs=(
        PresetRun("LB + warmup", dict(batch_size=500, lr=0.1,
                                      warmup_epochs=10)),
        PresetRun("LB no warmup", dict(batch_size=500, lr=0.1)),
        PresetRun("LB + FC freeze", dict(batch_size=500, lr=0.1,
                                         freeze_epochs=10)),
        PresetRun("SB no warmup", dict(batch_size=50, lr=0.01)),
    ),
    requires_data_dir=True,
    notes=(
        "All runs: vgg-small (conv 32-64-128-128 with batch normalisation, "
        "Dense 128-128-10 without), 5,000 training images, 4-pixel crops "
        "and flips, momentum 0.9, weight decay 5e-4, constant learning rate "
        "(no decay within the 30 epochs, as in the paper's first 60). Large "
        "batch: 500 at 0.1 (10 steps per epoch, the paper's count); small "
        "batch: 50 at 0.01 (linear scaling). Warmup: linear over 10 epochs. "
        "FC freeze: the trailing Dense stack (fc1, fc2, logits) frozen for "
        "the first 10 epochs, no warmup. Each run saves its weights at "
        "initialisation and after epoch 10; similarity_<run>.png is the "
        "SVCCA similarity of every layer at epoch 0 with every layer after "
        "epoch 10 on 1,000 test images (the paper's Figure 5), "
        "similarity_layers.png its diagonal (Figure 4c), similarity.json "
        "and similarity.md the numbers. The SVCCA comparison is at equal "
        "epochs for every run (the paper's is at iteration 200 for all). "
        "Measured on the JPEG copy (one seed): without warmup the network "
        "never leaves 10% and its FC stack changes most in the first 10 "
        "epochs (SVCCA of logits with itself 0.11, against 0.31-0.34 for "
        "the other rows); the freeze matches warmup at the end of warmup "
        "(54% vs 50%, the paper's claim), but the stack released at the "
        "full rate collapses to 10% and recovers to 45% by epoch 30 "
        "(warmup: 60%)."),
    reference="LB no warmup",
    minutes=64.0,
)

# The Heuristics paper's distillation study (Section 5, Figure 6) at CPU
# scale: the teacher is trained first (its model.keras), then the same
# shallow student twice, from the teacher's outputs at temperature 5 and
# from the labels.
HEURISTICS_DISTILLATION_CPU = Preset(
    name="heuristics-distillation-cpu",
    description=(
        "Heuristics paper, distillation (Figure 6): a vgg-small teacher on "
        "5,000 CIFAR-10 images, then a shallow-cnn student distilled from "
        "it vs trained on the labels; SVCCA heatmaps of the teacher's "
        "layers against each student's and their difference."),
    common=dict(dataset="cifar10", epochs=40, train_size=5000,
                test_size=5000, batch_size=100, lr=0.05, weight_decay=5e-4,
                momentum=0.9, hessian_every=0, schedule="step",
                save_model=True),
    runs=(
        PresetRun("teacher", dict(model="vgg-small")),
        PresetRun("distilled", dict(model="shallow-cnn", lr=0.01),
                  teacher="teacher", versus="independent"),
        PresetRun("independent", dict(model="shallow-cnn", lr=0.01)),
    ),
    requires_data_dir=True,
    notes=(
        "All runs: 5,000 training images, batch 100, lr 0.05 (teacher) "
        "or 0.01 (students: the shallow net has no BatchNorm and diverges "
        "at 0.05), x0.1 after epochs 20 and 30 of 40, momentum 0.9, weight decay 5e-4, 4-pixel "
        "crops and flips. Teacher: vgg-small, trained first (also with "
        "--jobs); its model.keras is the distilled run's teacher, and a "
        "changed teacher retrains it. Students: shallow-cnn, the paper's "
        "[conv, maxpool, relu] x 2, fc, relu, fc, fc; distilled: the "
        "teacher's softmax at temperature 5 only (alpha 0, the KL term "
        "scaled by T^2), on the same augmented batches; independent: the "
        "labels. similarity_distilled.png, similarity_independent.png: the "
        "SVCCA similarity of every teacher layer with every student layer "
        "on 1,000 test images; similarity_difference.png: their absolute "
        "difference (the paper's Figure 6); similarity.md: its mean per "
        "student layer. Measured (one seed, 2 loaded CPU cores, 51 min): "
        "teacher 67.86%, distilled 60.56%, independent 57.26%; the mean "
        "difference grows with depth (relu1 0.016 to logits 0.077), as the "
        "paper finds."),
    reference="independent",
    minutes=51.0,
)

# The loss-landscape figures of the two papers at CPU scale
# (`keras_lrphase.training.landscape_study` draws them after the runs):
# the Heuristics paper's Figure 1 (curves from a reference model to variants
# trained with another batch size, optimizer and learning-rate schedule) and
# Figure 2 (segments between consecutive SGDR iterates vs step-decay
# iterates), and the two-phase paper's Figure 1 (training loss and margin
# per epoch at a small and a large batch, the loss plateau marked). The
# network is `small-cnn` (5.6K parameters, about 5 s per epoch on 5,000
# images on 2 cores): a larger one does not fit six runs and the analyses
# into the budget.
_LANDSCAPE_SNAPSHOTS = (5, 10, 15, 20, 25, 30)
LANDSCAPE_CPU = Preset(
    name="landscape-cpu",
    description=(
        "Loss landscape (Heuristics paper, Figures 1 and 2; two-phase paper, "
        "Figure 1): small-cnn on 5,000 CIFAR-10 images, 30 epochs; curves "
        "from a reference to large-batch, LARS and SGDR variants, segments "
        "between SGDR vs step-decay snapshots, loss vs margin at batch 128 "
        "and 1024."),
    common=dict(dataset="cifar10", model="small-cnn", epochs=30,
                train_size=5000, test_size=2000, weight_decay=5e-4,
                momentum=0.9, hessian_every=0),
    runs=(
        PresetRun("reference", dict(batch_size=128, lr=0.1, schedule="step",
                                    decay_epochs=(15, 25), save_model=True,
                                    snapshot_epochs=_LANDSCAPE_SNAPSHOTS)),
        PresetRun("large-batch", dict(batch_size=1024, lr=0.8,
                                      warmup_epochs=3, schedule="step",
                                      decay_epochs=(15, 25),
                                      save_model=True)),
        PresetRun("lars", dict(batch_size=128, lr=1.0, lars=0.01,
                               schedule="step", decay_epochs=(15, 25),
                               save_model=True)),
        PresetRun("sgdr", dict(batch_size=128, lr=0.1,
                               schedule="cosine-restarts", restart_epochs=5,
                               restart_mult=1.0, save_model=True,
                               snapshot_epochs=_LANDSCAPE_SNAPSHOTS)),
        PresetRun("two-phase-small", dict(
            batch_size=128, lr=0.1, schedule="two-phase", min_delta=0.03,
            plateau_patience=3, **PAPER_RULES, snapshot_epochs=tuple(range(1, 31)))),
        PresetRun("two-phase-large", dict(
            batch_size=1024, lr=0.8, warmup_epochs=3, schedule="two-phase",
            min_delta=0.03, plateau_patience=3, **PAPER_RULES,
            snapshot_epochs=tuple(range(1, 31)))),
    ),
    requires_data_dir=True,
    notes=(
        "All runs: small-cnn, 5,000 training images (4-pixel crops and "
        "flips), 2,000 test images, momentum 0.9, weight decay 5e-4, 30 "
        "epochs. reference: batch 128, lr 0.1, x0.1 after epochs 15 and 25, "
        "weights saved every 5 epochs: the start of every curve (Figure 1) "
        "and the step-decay iterates of Figure 2. large-batch: batch 1024, "
        "lr 0.8 (linear scaling), 3 warmup epochs, same decays (Figure 1's "
        "batch-size variant). lars: the reference with LARS (trust "
        "coefficient 0.01) instead of SGD (the optimizer variant). sgdr: "
        "cosine annealing with warm restarts every 5 epochs (T_mult 1; the "
        "paper's T_0 10, T_mult 2 gives too few cycles in 30 epochs), "
        "weights saved at the end of every cycle: the learning-rate-schedule "
        "variant of Figure 1 and the SGDR iterates of Figure 2. "
        "two-phase-small / two-phase-large: two-phase at batch 128 / 1024 "
        "(plateau: no loss decrease larger than 0.03 for 3 epochs, as in "
        "cifar10-cpu), weights "
        "saved every epoch (Figure 1 of the two-phase paper). After the "
        "runs, landscape.md / landscape.json and curves.png (segment and a "
        "Bezier curve trained for 4 epochs from reference to each variant), "
        "segments.png (consecutive snapshots of sgdr and reference, and "
        "each earlier one to the last) and "
        "margins.png (training loss and the interquartile mean of the "
        "normalized margins of 1,000 training images per epoch, plateau "
        "marked). Points of paths: BatchNorm recomputed on 2,000 training "
        "images, training loss on the same images, accuracy on the 2,000 "
        "test images. Measured on the JPEG copy (one seed; 2 CPU cores, 23 "
        "min: 19 of training, 5 of analyses): final accuracy reference "
        "43.9%, large-batch 39.0%, lars 47.5%, sgdr 44.4%, two-phase "
        "41.6% / 37.5%. Figure 1: every segment is already a low-loss path "
        "(barrier 0 to large-batch and sgdr, 0.053 to lars, which the "
        "curve lowers to 0.005), so the curves agree with the paper (a "
        "high-accuracy connection for every pair) without the paper's "
        "contrast with the segment: at this scale all runs share the "
        "initialisation and stay underfit. Figure 2: no barrier between "
        "any consecutive snapshots, nor between any snapshot and the last "
        "(the paper's pairs), of sgdr or of the step reference: the step "
        "run agrees with the paper, but its SGDR barriers (w30-w150, "
        "w70-w150) are not reproduced. "
        "Figure 1 of the two-phase paper: plateaus at epochs 18 (batch "
        "128) and 20 (1024); the margin rises after the plateau at both "
        "batches (+0.005 and +0.007 until the convergence phase) while "
        "the loss still falls slowly, so the paper's small / large batch "
        "contrast is not reproduced."),
    reference="reference",
    minutes=23.0,
    study="landscape",
)

# Issue-scale versions of Tables 1, 6 and 7 and of the Learning Stages
# paper's Figure 3, in the cifar10-cpu setting (ResNet-8 on 5,000 images,
# 80 epochs, batch 512 at lr 0.4), 3 seeds per row. The paper's Tables 6
# and 7 vary two-phase + LARS; here the two-phase row of cifar10-cpu (plain
# SGD), because LARS stayed below SGD at this scale (cifar10-lr-search).
# Their time is estimated as cifar10-cpu's: about 25 minutes per run.
_CPU_LARGE = dict(CIFAR10_CPU.common, batch_size=512, lr=0.4)
_CPU_TWO_PHASE = dict(_CPU_LARGE, schedule="two-phase", min_delta=0.03,
                      decay_factor=0.5, **PAPER_RULES)
_CPU_MINUTES_PER_RUN = 25.0
_CPU_SEEDS = (0, 1, 2)


def _timed_as_cifar10_cpu(preset):
    """`preset` with its minutes estimated from cifar10-cpu's time per
    80-epoch run, in proportion to the epochs of each run and seed."""
    epochs = sum(run.overrides.get("epochs", preset.epochs)
                 for run in preset.runs) * len(preset.seeds)
    return dataclasses.replace(
        preset, minutes_estimated=True,
        minutes=round(epochs / CIFAR10_CPU.epochs * _CPU_MINUTES_PER_RUN))

CIFAR10_TABLE1_CPU = _timed_as_cifar10_cpu(Preset(
    name="cifar10-table1-cpu",
    description=(
        "Table 1's question at CPU scale: does a later first decay give a "
        "higher accuracy? cifar10-cpu's large-batch row (batch 512, 80 "
        "epochs) with the first x0.1 decay after 27 / 40 / 53 / 67 epochs; "
        "3 seeds."),
    common=dict(_CPU_LARGE, schedule="step", decay_factor=0.1),
    runs=tuple(
        PresetRun(f"first decay {first}", dict(decay_epochs=(first, second)),
                  paper)
        for first, second, paper in ((27, 53, 87.72), (40, 60, 90.23),
                                     (53, 67, 91.43), (67, 73, 91.40))),
    requires_data_dir=True,
    paper_source="Two-phase paper, Table 1 (ResNet-20, 300 epochs, batch 8192)",
    notes=(
        "Table 1's decays scaled from 300 to 80 epochs: after 100 and 200 "
        "-> 27 and 53; 150 and 225 -> 40 and 60 (cifar10-cpu's large-batch "
        "row); 200 and 250 -> 53 and 67; 250 and 275 -> 67 and 73. Each "
        "x0.1. Everything else is cifar10-cpu's large-batch row."),
    seeds=_CPU_SEEDS,
    reference="first decay 27",
    question=StudyQuestion(
        "Does a later first decay give a higher accuracy?",
        "Yes, up to the first decay after 2/3 of the budget: 87.72 / 90.23 / "
        "91.43 / 91.40% for the first decay after 100 / 150 / 200 / 250 of "
        "300 epochs (batch 8192).",
        kind="best", ordered=True),
))

CIFAR10_TABLE6_CPU = _timed_as_cifar10_cpu(Preset(
    name="cifar10-table6-cpu",
    description=(
        "Table 6's question at CPU scale: which exploration length after "
        "the plateau is best, and is the default 1/3 near it? cifar10-cpu's "
        "two-phase row with 20 / 30 / 40 / 50% extra epochs, and 50% with "
        "a 10% larger budget; 3 seeds."),
    common=_CPU_TWO_PHASE,
    runs=tuple(
        PresetRun(f"extra {round(100 * fraction)}%",
                  dict(extra_epochs_fraction=fraction), paper)
        for fraction, paper in ((0.2, 92.03), (0.3, 92.66), (0.4, 92.54),
                                (0.5, 92.03))
    ) + (PresetRun("extra 50% (88 epochs)",
                   dict(extra_epochs_fraction=0.5, epochs=88), 92.86),),
    requires_data_dir=True,
    paper_source=("Two-phase paper, Table 6, CIFAR-10 column (two-phase + "
                  "LARS, ResNet-20, batch 8192)"),
    notes=(
        "Extra epochs: after a plateau detected at epoch x, x times the "
        "fraction more epochs before the convergence phase. Everything else "
        "is cifar10-cpu's two-phase row (batch 512, lr 0.4, plateau = no "
        "loss decrease larger than 0.03 for 4 epochs, beta 0.5); the last "
        "row has 88 epochs instead of 80."),
    seeds=_CPU_SEEDS,
    reference="extra 30%",
    question=StudyQuestion(
        "Which exploration length after the plateau is best, and is the "
        "default 1/3 near it?",
        "30% extra epochs is best within the budget (92.66%; 20%: 92.03, "
        "40%: 92.54, 50%: 92.03), so x/3 is near the best; 50% with a 10% "
        "larger budget is higher still (92.86%).",
        kind="best", default="extra 30%", outside=("extra 50% (88 epochs)",)),
))

CIFAR10_TABLE7_CPU = _timed_as_cifar10_cpu(Preset(
    name="cifar10-table7-cpu",
    description=(
        "Table 7's question at CPU scale: which decay factor beta is best, "
        "and is the default 0.5 near it? cifar10-cpu's two-phase row with "
        "beta 0.3 to 0.7; 3 seeds."),
    common=_CPU_TWO_PHASE,
    runs=tuple(
        PresetRun(f"beta {beta:g}", dict(decay_factor=beta), paper)
        for beta, paper in ((0.3, 92.31), (0.4, 92.63), (0.5, 92.66),
                            (0.6, 92.18), (0.7, 91.46))),
    requires_data_dir=True,
    paper_source=("Two-phase paper, Table 7, CIFAR-10 column (two-phase + "
                  "LARS, ResNet-20, batch 8192)"),
    notes="Everything but beta is cifar10-cpu's two-phase row.",
    seeds=_CPU_SEEDS,
    reference="beta 0.5",
    question=StudyQuestion(
        "Which decay factor beta is best, and is the default 0.5 near it?",
        "0.5 is best (92.66%); 0.4 is as good (92.63%), 0.3 and 0.6 lose "
        "0.3-0.5 points and 0.7 loses 1.2 (91.46%).",
        kind="best", default="beta 0.5"),
))

# The Learning Stages paper, Figure 3 and Section 3.3: under step decay with
# SGD the training loss drops sharply right after a decay made while the
# current stage was stable; with batch gradient descent (BGD, its Figure 5
# and Appendix A.2: 3,000 iterations) decays at different epochs reach
# almost the same best accuracy (no stages). Full batch here: all 5,000
# training images in one step per epoch, as 10 accumulated sub-batches of
# 500. GD gets 400 steps (SGD's 80 epochs are 3,160 steps), so that it has
# flattened before its decays; its decays fall at the same fractions of
# its budget as SGD's (30 and 50 of 80 -> 150 and 250 of 400). Momentum
# correction on: the paper's SGD (PyTorch's) applies the learning rate to
# the whole momentum buffer, so a decay acts at once; Keras' SGD keeps the
# velocity of the old rate for some steps (on cifar10-momentum-cpu the loss
# rose in the epoch after a cut without the correction), and the epoch
# right after the decay is what this study measures.
_STAGES_ROWS = (("SGD", dict(batch_size=128, lr=0.1), (30, 50)),
                ("GD", dict(batch_size=5000, accumulate=10, lr=0.4,
                            epochs=400), (150, 250)))
STAGES_CPU = _timed_as_cifar10_cpu(Preset(
    name="stages-cpu",
    description=(
        "Learning Stages paper, Figures 3 and 5 at CPU scale: SGD (batch "
        "128, 80 epochs) and full-batch gradient descent (5,000 images, one "
        "step per epoch, 400 epochs), each without decay and with one x0.1 "
        "decay after 3/8 or 5/8 of its budget; 3 seeds."),
    common=dict(CIFAR10_CPU.common, schedule="step", decay_factor=0.1,
                momentum_correction=True),
    runs=tuple(
        PresetRun(f"{name} {'no decay' if decay is None else f'decay {decay}'}",
                  dict(batch, decay_epochs=() if decay is None else (decay,)),
                  versus=f"{name} no decay" if decay is not None else None)
        for name, batch, decays in _STAGES_ROWS
        for decay in (None, *decays)),
    requires_data_dir=True,
    paper_source=None,
    notes=(
        "SGD: batch 128 at lr 0.1 (cifar10-cpu's small-batch row), 80 "
        "epochs, one x0.1 decay after epoch 30 or 50, or none. GD: the full "
        "5,000-image training set per step (10 accumulated sub-batches of "
        "500, BatchNorm statistics per sub-batch), lr 0.4, 400 epochs (400 "
        "steps, so that it flattens before its decays; the paper's BGD had "
        "3,000), one x0.1 decay after epoch 150 or 250, or none. Every "
        "decayed row is tested against its optimizer's no-decay row. Every "
        "row with momentum correction, so that a decay acts at once, as in "
        "the paper's SGD (which applies the rate to the momentum buffer). "
        "The stage transition is the training loss of the epochs right "
        "after the decay (compare.png, <run>/curves.png)."),
    seeds=_CPU_SEEDS,
    question=StudyQuestion(
        "Does the training loss drop sharply right after a decay made when "
        "the stage was stable, and do the stages disappear with full-batch "
        "gradient descent?",
        "Yes: with SGD the training loss drops sharply in the epoch right "
        "after a decay made on a plateau, and more patterns are learnt "
        "(Figure 3; without a decay the loss stays on its plateau); with "
        "batch gradient descent (the whole training set as one batch) "
        "decays at different epochs reach almost the same best accuracy "
        "(Figure 5): no learning stages.",
        kind="stages"),
))

PRESETS = {p.name: p for p in (DEMO, CIFAR10_CPU, CIFAR10_EXCURSION_CPU,
                               DIGITS_EXCURSION,
                               CIFAR10_TABLE2,
                               CIFAR10_LR_SEARCH, CIFAR10_AUTODECAY_CPU,
                               CIFAR10_MOMENTUM_CPU, CIFAR10_TABLE1,
                               CIFAR100_TABLE3, SVHN_TABLE4, IMAGENET_TABLE5,
                               CIFAR10_TABLE6, CIFAR10_TABLE7,
                               HEURISTICS_WARMUP_CPU,
                               HEURISTICS_DISTILLATION_CPU, LANDSCAPE_CPU,
                               CIFAR10_TABLE1_CPU, CIFAR10_TABLE6_CPU,
                               CIFAR10_TABLE7_CPU, STAGES_CPU)}
PRESET_NAMES = tuple(PRESETS)


def preset_time(preset):
    """`"5.5 min"` (measured on 2 CPU cores), `"about 75 min (estimated)"`
    or `"needs an accelerator"`."""
    if preset.minutes is None:
        return "needs an accelerator"
    if preset.minutes_estimated:
        return f"about {preset.minutes:g} min (estimated)"
    return f"{preset.minutes:g} min"


def get_preset(name):
    """The `Preset` called `name` (one of `PRESET_NAMES`).

    Raises:
        ValueError: naming the closest presets to a mistyped name.

    Example:

    >>> get_preset("cifar10-cpus")
    Traceback (most recent call last):
    ...
    ValueError: Argument `preset` must name a preset; did you mean 'cifar10-cpu'? (`keras-lrphase compare --help` lists them all) Received: preset='cifar10-cpus'
    """
    if name not in PRESETS:
        import difflib

        close = difflib.get_close_matches(str(name), PRESET_NAMES, n=1,
                                          cutoff=0.6)
        if close:
            hint = (f"did you mean {close[0]!r}? "
                    "(`keras-lrphase compare --help` lists them all)")
        else:
            hint = f"one of {', '.join(PRESET_NAMES)}"
        raise ValueError(
            f"Argument `preset` must name a preset; {hint} "
            f"Received: preset={name!r}"
        )
    return PRESETS[name]
