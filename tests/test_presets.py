import pytest

from keras_lrphase.presets import PRESET_NAMES
from keras_lrphase.presets import get_preset


def test_preset_names():
    assert PRESET_NAMES == ("demo", "cifar10-cpu", "cifar10-table2",
                            "cifar10-lr-search", "cifar10-autodecay-cpu",
                            "cifar10-momentum-cpu")
    with pytest.raises(ValueError, match="preset='imagenet'"):
        get_preset("imagenet")


def test_table2_mirrors_the_paper():
    preset = get_preset("cifar10-table2")
    runs = preset.configs(data_dir="/data")
    labels = [run.label for run, _ in runs]
    assert labels == ["small-batch", "large-batch", "LARS", "two-phase",
                      "two-phase + LARS"]
    assert [run.paper for run, _ in runs] == [92.83, 90.40, 92.10, 92.48, 92.66]
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
