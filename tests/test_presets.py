import pytest

from keras_lrphase.presets import PRESET_NAMES
from keras_lrphase.presets import get_preset


def test_preset_names():
    assert PRESET_NAMES == ("demo", "cifar10-cpu", "cifar10-table2")
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
