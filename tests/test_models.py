import numpy as np
import pytest

import keras

from keras_lrphase.models import MODEL_NAMES
from keras_lrphase.models import get_model
from keras_lrphase.models import is_model_name
from keras_lrphase.models.resnet import ZeroPadShortcut
from keras_lrphase.models.resnet import cifar_resnet
from keras_lrphase.models.resnet import resnet20
from keras_lrphase.models.small import small_cnn
from keras_lrphase.models.wide_resnet import wide_resnet

pytestmark = pytest.mark.backend_neutral


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_resnet20_parameter_count_matches_hand_count():
    # conv 3x3 kernels, no biases; BN: gamma, beta (trainable) + 2 stats.
    stem = 3 * 3 * 3 * 16 + 4 * 16
    stage1 = 3 * (2 * 3 * 3 * 16 * 16 + 2 * 4 * 16)
    stage2 = (3 * 3 * 16 * 32 + 3 * 3 * 32 * 32 + 2 * 4 * 32) + 2 * (
        2 * 3 * 3 * 32 * 32 + 2 * 4 * 32)
    stage3 = (3 * 3 * 32 * 64 + 3 * 3 * 64 * 64 + 2 * 4 * 64) + 2 * (
        2 * 3 * 3 * 64 * 64 + 2 * 4 * 64)
    dense = 64 * 10 + 10
    expected = stem + stage1 + stage2 + stage3 + dense
    model = resnet20()
    assert expected == 271098
    assert model.count_params() == 271098
    # He et al. (2016), Table 6: 0.27M parameters.
    assert _trainable(model) == 269722
    assert round(_trainable(model) / 1e6, 2) == 0.27
    assert model.name == "resnet20"
    assert model.layers[-1].name == "logits"
    assert model.layers[-1].activation is keras.activations.linear
    assert model.output_shape == (None, 10)
    # 19 convolutions + 1 dense = 20 weighted layers.
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    assert len(convs) == 19


def test_resnet_depths_and_option_b():
    assert cifar_resnet(32).count_params() == 466426
    assert cifar_resnet(56).count_params() == 857082
    assert _trainable(cifar_resnet(110)) == 1727962  # 1.7M in He et al.
    # Option B adds a 1x1 conv + BN at the two stage transitions.
    extra = (16 * 32 + 4 * 32) + (32 * 64 + 4 * 64)
    assert resnet20(shortcut="B").count_params() == 271098 + extra
    assert resnet20(num_classes=100).count_params() == 271098 + 90 * 65


def test_wide_resnet_parameter_counts():
    # Zagoruyko & Komodakis (2016), Table 3: 11.0M and 36.5M parameters.
    wrn168 = get_model("wrn-16-8", (32, 32, 3), 10)
    assert _trainable(wrn168) == 10961370
    assert wrn168.count_params() == 10968570
    assert [l.rate for l in wrn168.layers
            if isinstance(l, keras.layers.Dropout)] == [0.5] * 6
    wrn2810 = get_model("wrn-28-10", (32, 32, 3), 100)
    assert _trainable(wrn2810) == 36536884
    assert wrn2810.count_params() == 36554836
    assert wrn2810.layers[-1].name == "logits"
    assert wide_resnet(10, 1, input_shape=(8, 8, 3)).count_params() == 78330


def test_small_cnn_parameter_count_and_shapes():
    model = small_cnn()
    expected = (3 * 3 * 1 * 16 + 4 * 16) + (3 * 3 * 16 * 32 + 4 * 32) + (
        32 * 10 + 10)
    assert model.count_params() == expected == 5274
    assert model.output_shape == (None, 10)
    assert get_model("small-cnn", (8, 8, 1), 10).count_params() == 5274


def test_zero_pad_shortcut_values():
    x = np.arange(2 * 4 * 4 * 2, dtype="float32").reshape(2, 4, 4, 2)
    y = keras.ops.convert_to_numpy(ZeroPadShortcut(6)(x))
    assert y.shape == (2, 2, 2, 6)
    np.testing.assert_array_equal(y[..., 2:4], x[:, ::2, ::2, :])
    np.testing.assert_array_equal(y[..., :2], 0.0)
    np.testing.assert_array_equal(y[..., 4:], 0.0)
    layer = ZeroPadShortcut.from_config(ZeroPadShortcut(6, 2).get_config())
    assert (layer.filters, layer.strides) == (6, 2)
    with pytest.raises(ValueError, match="strides=0"):
        ZeroPadShortcut(4, strides=0)


def test_weight_decay_is_lambda_over_two_l2():
    model = small_cnn(weight_decay=0.01)
    kernels = [l.kernel for l in model.layers if hasattr(l, "kernel")]
    expected = 0.01 / 2 * sum(
        float(np.sum(keras.ops.convert_to_numpy(k) ** 2)) for k in kernels)
    got = float(sum(keras.ops.convert_to_numpy(l) for l in model.losses))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert small_cnn().losses == []


def test_resnet_save_and_load_round_trip(tmp_path):
    model = cifar_resnet(8, input_shape=(8, 8, 3))
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(x)),
        keras.ops.convert_to_numpy(model(x)), rtol=1e-5, atol=1e-6)


def test_registry_names_and_errors():
    assert all(is_model_name(n) for n in MODEL_NAMES)
    assert is_model_name("resnet8") and is_model_name("wrn-10-2")
    for bad in ("resnet21", "wrn-15-8", "vgg16", None, "resnet2"):
        assert not is_model_name(bad)
    with pytest.raises(ValueError, match="name='vgg16'"):
        get_model("vgg16", (32, 32, 3), 10)
    with pytest.raises(ValueError, match="depth=21"):
        cifar_resnet(21)
    with pytest.raises(ValueError, match="shortcut='C'"):
        resnet20(shortcut="C")
    with pytest.raises(ValueError, match="depth=15"):
        wide_resnet(15, 8)
    with pytest.raises(ValueError, match="dropout=1.0"):
        wide_resnet(16, 8, dropout=1.0)
    with pytest.raises(ValueError, match="num_classes=1"):
        small_cnn(num_classes=1)
    with pytest.raises(ValueError, match="weight_decay=-0.1"):
        small_cnn(weight_decay=-0.1)
