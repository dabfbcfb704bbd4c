import math

import pytest

from keras_lrphase.presets import PRESET_NAMES
from keras_lrphase.presets import get_preset

pytestmark = pytest.mark.backend_neutral


def test_preset_names():
    assert PRESET_NAMES == ("demo", "cifar10-cpu", "cifar10-excursion-cpu",
                            "digits-excursion", "cifar10-table2",
                            "cifar10-lr-search", "cifar10-autodecay-cpu",
                            "cifar10-momentum-cpu", "cifar10-table1",
                            "cifar100-table3", "svhn-table4", "imagenet-table5",
                            "cifar10-table6", "cifar10-table7",
                            "heuristics-warmup-cpu",
                            "heuristics-distillation-cpu", "landscape-cpu",
                            "cifar10-table1-cpu", "cifar10-table6-cpu",
                            "cifar10-table7-cpu", "stages-cpu")
    with pytest.raises(ValueError, match="preset='imagenet'"):
        get_preset("imagenet")


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_every_run_can_be_picked_with_only_and_has_a_folder_of_its_own(name):
    # `compare --only` splits its value at commas: a label with a comma in
    # it could not be picked ("extra 50%, 88 epochs" once was).
    from keras_lrphase.training.compare import slug as _slug

    labels = [run.label for run in get_preset(name).runs]
    for label in labels:
        assert [part.strip() for part in label.split(",")] == [label]
    assert len({_slug(label) for label in labels}) == len(labels)


def test_table2_mirrors_the_paper():
    preset = get_preset("cifar10-table2")
    runs = preset.configs(data_dir="/data")
    labels = [run.label for run, _ in runs]
    assert labels == ["small-batch", "large-batch", "LARS", "two-phase",
                      "two-phase + LARS", "two-phase 4.8",
                      "two-phase (defaults)"]
    assert [run.paper for run, _ in runs] == [92.83, 90.40, 92.10, 92.48, 92.66,
                                              None, None]
    table = {run.label: config.resolved() for run, config in runs}
    for config in table.values():
        config.validate(check_data=False)
        assert (config.model, config.epochs, config.warmup_epochs) == ("resnet20", 300, 10)
        assert config.data_dir == "/data" and config.momentum == 0.9
    small = table["small-batch"]
    assert (small.batch_size, small.lr, small.decay_epochs, small.decay_factor) == (
        128, 0.1, (150, 225), 0.1)
    large = table["large-batch"]
    assert (large.batch_size, large.accumulate, large.lr, large.lars) == (8192, 8, 6.4, None)
    assert table["LARS"].lars == 0.01 and table["LARS"].decay_epochs == (150, 225)
    assert table["two-phase"].schedule == "two-phase"
    assert table["two-phase"].decay_factor == 0.5
    assert (table["two-phase + LARS"].lr, table["two-phase + LARS"].lars) == (3.5, 0.01)
    # The paper's rows use the paper's rules; the two extra two-phase rows
    # differ from the two-phase row in the rate only, or in the rules only.
    rules = lambda c: (c.plateau_rule, c.decay_rule)
    for label in ("two-phase", "two-phase + LARS", "two-phase 4.8"):
        assert rules(table[label]) == ("paper", "paper")
    assert rules(table["two-phase (defaults)"]) == ("flat", "paper")
    two_phase = table["two-phase"].to_dict()
    for label, differ in (("two-phase 4.8", {"lr": 4.8}),
                          ("two-phase (defaults)",
                           {"plateau_rule": "flat", "excursion_threshold": 0.1,
                            "min_factor": 0.01})):
        other = table[label].to_dict()
        assert {k: v for k, v in other.items()
                if two_phase.get(k) != v and k != "name"} == differ


def test_epoch_override_scales_decay_warmup_and_patience():
    preset = get_preset("cifar10-table2")
    table = {run.label: c for run, c in preset.configs(epochs=30, data_dir="/d")}
    assert table["small-batch"].epochs == 30
    assert table["small-batch"].decay_epochs == (15, 22)  # 150, 225 scaled by 0.1
    assert table["small-batch"].warmup_epochs == 1
    tiny = {run.label: c for run, c in preset.configs(epochs=2, data_dir="/d")}
    assert tiny["large-batch"].decay_epochs == (1,)
    assert tiny["large-batch"].warmup_epochs == 0
    for config in tiny.values():
        config.resolved().validate(check_data=False)
    with pytest.raises(ValueError, match="epochs=0"):
        preset.configs(epochs=0, data_dir="/d")


def test_cifar10_cpu_needs_a_data_dir_and_demo_does_not():
    with pytest.raises(ValueError, match="pass --data-dir"):
        get_preset("cifar10-cpu").configs()
    demo = get_preset("demo").configs()
    assert [(run.label, c.seed) for run, c in demo] == [
        (label, seed) for label in ("small-batch", "large-batch", "two-phase")
        for seed in (0, 1, 2)]
    for _, config in demo:
        config.validate()  # digits: nothing to download
        assert config.dataset == "digits" and config.data_dir is None
    one = get_preset("demo").configs(seeds=[5])
    assert [c.seed for _, c in one] == [5, 5, 5]
    with pytest.raises(ValueError, match="seeds=()"):
        get_preset("demo").configs(seeds=[])
    # Linear scaling rule between the demo's small and large batch.
    small, large = one[0][1], one[1][1]
    assert large.lr / small.lr == large.batch_size / small.batch_size
    cpu = {run.label: c for run, c in get_preset("cifar10-cpu").configs(data_dir="/d")}
    assert cpu["large-batch"].batch_size == cpu["two-phase"].batch_size == 512
    assert cpu["large-batch"].lr / cpu["small-batch"].lr == 512 / 128
    assert cpu["large-batch"].resolved().decay_epochs == (40, 60)


def test_lr_search_scales_table2_rates_into_the_cpu_setting():
    search = get_preset("cifar10-lr-search")
    with pytest.raises(ValueError, match="pass --data-dir"):
        search.configs()
    runs = {run.label: c.resolved() for run, c in search.configs(data_dir="/d")}
    assert list(runs) == ["LARS 2.5", "LARS 3.5", "LARS 5", "two-phase 2.8",
                          "two-phase 4.8", "two-phase 6.4", "two-phase 8"]
    cpu = {run.label: c.resolved()
           for run, c in get_preset("cifar10-cpu").configs(data_dir="/d")}
    for label, config in runs.items():
        config.validate(check_data=False)
        table2_lr = float(label.split()[-1])
        assert config.lr == pytest.approx(table2_lr * 512 / 8192, rel=1e-12)
        # Everything but the rate and the rule is the cifar10-cpu setting.
        for field in ("model", "epochs", "train_size", "test_size",
                      "batch_size", "weight_decay", "warmup_epochs",
                      "hessian_batch_size", "momentum"):
            assert getattr(config, field) == getattr(cpu["two-phase"], field)
    # Table 2's linear-scaling 6.4 is cifar10-cpu's large-batch rate.
    assert runs["two-phase 6.4"].lr == cpu["two-phase"].lr == 0.4
    assert runs["two-phase 6.4"].min_delta == cpu["two-phase"].min_delta
    assert {runs[f"LARS {lr}"].lars for lr in ("2.5", "3.5", "5")} == {0.01}
    assert runs["LARS 3.5"].decay_epochs == cpu["large-batch"].decay_epochs
    assert runs["two-phase 8"].schedule == "two-phase"


def test_autodecay_and_momentum_presets_are_the_cifar10_cpu_setting():
    base = get_preset("cifar10-cpu").common
    runs = get_preset("cifar10-autodecay-cpu").configs(data_dir="/d")
    assert [(c.schedule, c.seed) for _, c in runs] == [
        ("step", 0), ("step", 1), ("autodecay", 0), ("autodecay", 1)]
    for _, config in runs:
        assert (config.model, config.train_size, config.epochs, config.batch_size,
                config.lr, config.warmup_epochs) == (
            base["model"], base["train_size"], base["epochs"], 128, 0.1, 3)
        config.validate(check_data=False)
    assert runs[2][1].stage_checkpoints == "stages"
    runs = get_preset("cifar10-momentum-cpu").configs(data_dir="/d")
    assert [(c.schedule, c.momentum_correction, c.seed) for _, c in runs] == [
        ("step", False, 0), ("step", True, 0), ("two-phase", False, 0),
        ("two-phase", True, 0)]
    assert {(c.batch_size, c.lr) for _, c in runs} == {(512, 0.4)}


def _table(name):
    """`{label: (run, resolved config)}`, each label's first seed."""
    preset = get_preset(name)
    data_dir = "/data" if preset.requires_data_dir else None
    table = {}
    for run, config in preset.configs(data_dir=data_dir):
        table.setdefault(run.label, (run, config.resolved()))
    return table


def test_table1_first_decays_mirror_the_paper():
    table = _table("cifar10-table1")
    assert {label: (config.decay_epochs, run.paper)
            for label, (run, config) in table.items()} == {
        "first decay 100": ((100, 200), 87.72),
        "first decay 150": ((150, 225), 90.23),
        "first decay 200": ((200, 250), 91.43),
        "first decay 250": ((250, 275), 91.40)}
    large = dict(_table("cifar10-table2"))["large-batch"][1]
    for _, config in table.values():
        config.validate(check_data=False)
        for field in ("model", "epochs", "batch_size", "accumulate", "lr",
                      "warmup_epochs", "momentum", "weight_decay",
                      "decay_factor", "schedule", "hessian_every"):
            assert getattr(config, field) == getattr(large, field), field


@pytest.mark.parametrize("name,dataset,model,epochs,batches,rows", [
    ("cifar100-table3", "cifar100", "wrn-28-10", 250, (128, 8192), {
        "small-batch": (0.1, "step", (125, 185), None, 81.09),
        "large-batch": (6.4, "step", (125, 185), None, 76.89),
        "LARS": (6.0, "step", (125, 185), 0.01, 78.88),
        "two-phase": (6.4, "two-phase", (), None, 78.90),
        "two-phase + LARS": (6.0, "two-phase", (), 0.01, 80.34)}),
    ("svhn-table4", "svhn", "wrn-16-8", 160, (256, 4096), {
        "small-batch": (0.01, "step", (80, 120), None, 98.55),
        "large-batch": (0.32, "step", (80, 120), None, 98.11),
        "LARS": (0.32, "step", (80, 120), 0.001, 98.32),
        "two-phase": (0.32, "two-phase", (), None, 98.29),
        "two-phase + LARS": (0.32, "two-phase", (), 0.001, 98.48)}),
])
def test_tables_3_and_4_mirror_the_paper(name, dataset, model, epochs,
                                          batches, rows):
    table = _table(name)
    assert list(table) == list(rows)
    for label, (run, config) in table.items():
        config.validate(check_data=False)
        lr, schedule, decays, lars, paper = rows[label]
        assert (config.lr, config.schedule, config.lars, run.paper) == (
            lr, schedule, lars, paper)
        if schedule == "step":
            assert (config.decay_epochs, config.decay_factor) == (decays, 0.1)
        else:
            assert config.decay_factor == 0.5
        assert (config.dataset, config.model, config.epochs) == (
            dataset, model, epochs)
        assert (config.warmup_epochs, config.momentum, config.hessian_every) == (
            10, 0.9, 1)
        small = label == "small-batch"
        assert config.batch_size == batches[0 if small else 1]
        assert config.batch_size // config.accumulate <= 1024


def test_tables_6_and_7_vary_one_setting_of_two_phase_lars():
    base = dict(_table("cifar10-table2"))["two-phase + LARS"][1]
    six = _table("cifar10-table6")
    assert {label: (config.extra_epochs_fraction, config.epochs, run.paper)
            for label, (run, config) in six.items()} == {
        "extra 20%": (0.2, 300, 92.03), "extra 30%": (0.3, 300, 92.66),
        "extra 40%": (0.4, 300, 92.54), "extra 50%": (0.5, 300, 92.03),
        "extra 50% (330 epochs)": (0.5, 330, 92.86)}
    seven = _table("cifar10-table7")
    assert {label: (config.decay_factor, run.paper)
            for label, (run, config) in seven.items()} == {
        "beta 0.3": (0.3, 92.31), "beta 0.4": (0.4, 92.63),
        "beta 0.5": (0.5, 92.66), "beta 0.6": (0.6, 92.18),
        "beta 0.7": (0.7, 91.46)}
    for _, config in list(six.values()) + list(seven.values()):
        config.validate(check_data=False)
        for field in ("model", "batch_size", "accumulate", "lr", "lars",
                      "schedule", "warmup_epochs", "weight_decay",
                      "hessian_every"):
            assert getattr(config, field) == getattr(base, field), field


@pytest.mark.tensorflow_backend
@pytest.mark.parametrize("name", ["cifar10-table1", "cifar100-table3",
                                  "svhn-table4", "cifar10-table6",
                                  "cifar10-table7"])
def test_paper_scale_presets_run_an_epoch_on_mock_data(name, tmp_path):
    """One large-batch row per preset, one epoch, a tiny model, mock TFDS."""
    import dataclasses

    import tensorflow_datasets as tfds

    from keras_lrphase.training.epoch_recorder import EpochRecorder
    from keras_lrphase.training.runner import HISTORY_FILE
    from keras_lrphase.training.runner import run_training

    run, config = next((run, config) for run, config in
                       get_preset(name).configs(epochs=1)
                       if config.batch_size > 1024)
    # A tiny model and batches 16 times smaller (the same accumulation), so
    # the mock data stays small; everything else is the preset's row.
    config = dataclasses.replace(
        config, model="small-cnn", test_size=None,
        batch_size=config.batch_size // 16,
        hessian_batch_size=config.hessian_batch_size // 16)
    with tfds.testing.mock_data(num_examples=config.batch_size):
        summary = run_training(config, str(tmp_path), verbose=0, log=None)
    assert summary["epochs_completed"] == 1
    assert summary["config"]["batch_size"] == config.batch_size
    rows = EpochRecorder.read(str(tmp_path / HISTORY_FILE))
    assert math.isfinite(rows[-1]["hessian_max_eigenvalue"])


def test_cpu_scale_studies_vary_one_setting_of_a_cifar10_cpu_row():
    cpu = _table("cifar10-cpu")
    large, two_phase = cpu["large-batch"][1], cpu["two-phase (paper rules)"][1]
    shared = ("dataset", "model", "train_size", "test_size", "weight_decay",
              "momentum", "warmup_epochs", "hessian_every",
              "hessian_batch_size")
    # Table 1: the paper's decay epochs scaled from 300 to 80 epochs.
    one = _table("cifar10-table1-cpu")
    assert {label: (config.decay_epochs, run.paper)
            for label, (run, config) in one.items()} == {
        "first decay 27": ((27, 53), 87.72), "first decay 40": ((40, 60), 90.23),
        "first decay 53": ((53, 67), 91.43), "first decay 67": ((67, 73), 91.40)}
    for label, (_, config) in one.items():
        for epoch_300, epoch_80 in zip(
                {"27": (100, 200), "40": (150, 225), "53": (200, 250),
                 "67": (250, 275)}[label.split()[-1]], config.decay_epochs):
            assert epoch_80 == round(epoch_300 * 80 / 300)
    six = _table("cifar10-table6-cpu")
    assert {label: (config.extra_epochs_fraction, config.epochs)
            for label, (_, config) in six.items()} == {
        "extra 20%": (0.2, 80), "extra 30%": (0.3, 80), "extra 40%": (0.4, 80),
        "extra 50%": (0.5, 80), "extra 50% (88 epochs)": (0.5, 88)}
    seven = _table("cifar10-table7-cpu")
    assert {label: config.decay_factor
            for label, (_, config) in seven.items()} == {
        "beta 0.3": 0.3, "beta 0.4": 0.4, "beta 0.5": 0.5, "beta 0.6": 0.6,
        "beta 0.7": 0.7}
    for table, base, varied in (
            (one, large, ("decay_epochs",)),
            (six, two_phase, ("extra_epochs_fraction", "epochs")),
            (seven, two_phase, ("decay_factor",))):
        for _, config in table.values():
            config.validate(check_data=False)
            for field in shared + ("batch_size", "lr", "schedule",
                                   "min_delta", "decay_factor", "epochs"):
                if field not in varied:
                    assert getattr(config, field) == getattr(base, field), field
    for name in ("cifar10-table1-cpu", "cifar10-table6-cpu",
                 "cifar10-table7-cpu", "stages-cpu"):
        preset = get_preset(name)
        assert preset.seeds == (0, 1, 2) and preset.minutes_estimated
        # cifar10-cpu's time per 80-epoch run (75 min / 3 runs), per run
        # and seed, in proportion to the run's epochs.
        epochs = sum(config.epochs for _, config in _table(name).values())
        assert preset.minutes == round(epochs / 80 * 3 * 75 / 3)
    assert [get_preset(name).minutes for name in (
        "cifar10-table1-cpu", "cifar10-table6-cpu", "cifar10-table7-cpu",
        "stages-cpu")] == [300, 382, 375, 1350]


def test_stages_preset_compares_sgd_and_full_batch_gd_decays():
    stages = _table("stages-cpu")
    rows = {label: (config.batch_size, config.accumulate, config.lr,
                    config.epochs, config.decay_epochs, run.versus)
            for label, (run, config) in stages.items()}
    assert rows == {
        "SGD no decay": (128, 1, 0.1, 80, (), None),
        "SGD decay 30": (128, 1, 0.1, 80, (30,), "SGD no decay"),
        "SGD decay 50": (128, 1, 0.1, 80, (50,), "SGD no decay"),
        "GD no decay": (5000, 10, 0.4, 400, (), None),
        "GD decay 150": (5000, 10, 0.4, 400, (150,), "GD no decay"),
        "GD decay 250": (5000, 10, 0.4, 400, (250,), "GD no decay")}
    # Each optimizer decays at the same fractions of its budget.
    for sgd, gd in ((30, 150), (50, 250)):
        assert sgd / 80 == gd / 400
    # A decay acts at once (momentum correction), as in the paper's SGD.
    assert all(config.momentum_correction and config.momentum == 0.9
               for _, config in stages.values())
    for _, config in stages.values():
        config.validate(check_data=False)
        # Full batch: one optimizer step per epoch on the 5,000 images.
        assert config.train_size == 5000 and config.schedule == "step"


# Presets that reproduce the paper's tables, or that measured Algorithm 1 as
# printed, run it with the paper's rules; the rows that run the package's
# robust defaults say so in their label or in their preset's purpose.
_PAPER_RULE_PRESETS = (
    "cifar10-table2", "cifar100-table3", "svhn-table4",
    "imagenet-table5", "cifar10-table6", "cifar10-table7", "cifar10-table6-cpu", "cifar10-table7-cpu",
    "cifar10-lr-search", "cifar10-momentum-cpu", "landscape-cpu")


@pytest.mark.parametrize("name", _PAPER_RULE_PRESETS)
def test_paper_table_presets_run_two_phase_with_the_paper_rules(name):
    two_phase = {label: config for label, (_, config) in _table(name).items()
                 if config.schedule == "two-phase"}
    assert two_phase, name
    for label, config in two_phase.items():
        rules = (config.plateau_rule, config.decay_rule)
        if "defaults" in label:
            assert rules == ("flat", "paper"), label
            assert config.min_factor == 0.01, label
        else:
            assert rules == ("paper", "paper"), label
            assert config.min_factor == 0.0, label


def test_cpu_rows_name_the_rules_they_run():
    for name in ("cifar10-cpu", "cifar10-excursion-cpu", "digits-excursion"):
        rules = {label: (config.plateau_rule, config.decay_rule)
                 for label, (_, config) in _table(name).items()
                 if config.schedule == "two-phase"}
        assert rules == {"two-phase": ("flat", "paper"),
                         "two-phase (paper rules)": ("paper", "paper"),
                         "two-phase (noise-aware decays)": (
                             "flat", "significant")}, name
        floors = {label: config.min_factor
                  for label, (_, config) in _table(name).items()
                  if config.schedule == "two-phase"}
        assert floors == {"two-phase": 0.01, "two-phase (paper rules)": 0.0,
                          "two-phase (noise-aware decays)": 0.0}
