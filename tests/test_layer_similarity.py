import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_lrphase.analysis.activations import FourierSample
from keras_lrphase.analysis.activations import PositionSample
from keras_lrphase.analysis.activations import average_pool
from keras_lrphase.analysis.layer_similarity import default_layers
from keras_lrphase.analysis.layer_similarity import layer_similarity
from keras_lrphase.analysis.similarity_plot import plot_layer_similarity
from keras_lrphase.models import small_cnn


def _model(seed):
    keras.utils.set_random_seed(seed)
    return small_cnn((8, 8, 3), 3, filters=(4, 6))  # conv1 8x8x4, conv2 4x4x6


def _images(count, seed=0):
    return np.random.default_rng(seed).normal(size=(count, 8, 8, 3)).astype("float32")


def _pooling_model():
    """conv (8x8x4), its 2x2 average pool (4x4x4), its global mean (4)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu",
                               name="conv")(inputs)
    pool = keras.layers.AveragePooling2D(2, name="pool")(conv)
    mix = keras.layers.Conv2D(4, 1, name="mix")(pool)  # linear 1x1: invertible
    mean = keras.layers.GlobalAveragePooling2D(name="mean")(conv)
    return keras.Model(inputs, [mix, mean])


def test_default_layers_are_convolutions_and_dense():
    assert default_layers(_model(0)) == ["conv1", "conv2", "logits"]


@pytest.mark.parametrize("method", ["svcca", "dft_svcca"])
def test_model_with_itself_has_ones_on_the_diagonal(method):
    model = _model(0)
    similarity = layer_similarity(model, model, _images(64), method=method)
    assert similarity.shape == (3, 3)
    np.testing.assert_allclose(np.diag(similarity), np.ones(3), atol=1e-6)
    np.testing.assert_allclose(similarity, similarity.T, atol=1e-10)
    assert np.all((similarity >= 0) & (similarity <= 1))
    assert similarity[0, 2] < 0.99  # distinct layers are not identical


def test_two_models_with_mixed_layer_arguments():
    model_a, model_b = _model(0), _model(1)
    x = _images(64)
    similarity = layer_similarity(
        model_a, model_b, x, layers_a=["conv1", model_a.get_layer("logits")],
        layers_b=[model_b.get_layer("conv2")], max_rows=500, seed=3)
    assert similarity.shape == (2, 1)
    assert np.all((similarity > 0) & (similarity < 1))
    again = layer_similarity(
        model_a, model_b, x, layers_a=["conv1", "logits"], layers_b=["conv2"],
        max_rows=500, seed=3)
    np.testing.assert_array_equal(similarity, again)  # seeded sample


@pytest.mark.parametrize("method", ["svcca", "dft_svcca"])
def test_layers_of_different_sizes_are_pooled_to_the_smaller(method):
    # conv pooled to 4x4 is exactly `pool`, and `mix` is an invertible linear
    # map of it; conv pooled to 1x1 is exactly `mean`.
    model = _pooling_model()
    similarity = layer_similarity(
        model, model, _images(64), layers_a=["conv"],
        layers_b=["pool", "mix", "mean"], method=method, keep_variance=1.0)
    np.testing.assert_allclose(similarity, [[1.0, 1.0, 1.0]], atol=1e-5)


def test_average_pool_adaptive_bins():
    x = np.arange(25.0).reshape(1, 5, 5, 1)
    # rows/columns 0-2 and 2-4 (bins [0, 3) and [2, 5)).
    want = np.array([[6.0, 8.0], [16.0, 18.0]])
    np.testing.assert_allclose(average_pool(x, (2, 2))[0, :, :, 0], want)
    np.testing.assert_allclose(average_pool(x, (1, 1))[0, 0, 0, 0], 12.0)
    assert average_pool(x, (5, 5)) is x


def test_samples_are_bounded_and_seeded():
    positions = PositionSample((8, 8), num_inputs=100, max_rows=500, seed=0)
    assert positions.data_points == 500
    np.testing.assert_array_equal(
        positions.rows, PositionSample((8, 8), 100, 500, seed=0).rows)
    assert not np.array_equal(positions.rows,
                              PositionSample((8, 8), 100, 500, seed=1).rows)
    assert PositionSample((2, 2), 100, 500, seed=0).data_points == 400
    fourier = FourierSample((8, 8), num_inputs=100, max_rows=500, seed=0)
    assert (fourier.data_points, len(fourier.frequencies)) == (100, 5)
    fourier = FourierSample((8, 8), num_inputs=1000, max_rows=500, seed=0)
    assert (fourier.data_points, len(fourier.frequencies)) == (500, 1)


@pytest.mark.parametrize("max_rows", [60, 5000])  # direct DFT / FFT
def test_fourier_sample_takes_the_dft_of_the_chosen_frequencies(max_rows):
    maps = np.random.default_rng(0).normal(size=(20, 6, 5, 3)).astype("float32")
    sample = FourierSample((6, 5), num_inputs=20, max_rows=max_rows, seed=0)
    got = np.concatenate([sample.take(maps[:7], 0), sample.take(maps[7:], 7)])
    spectrum = np.fft.fft2(maps.astype(np.float64), axes=(1, 2))
    want = spectrum.reshape(20, 30, 3)[:, sample.frequencies]
    assert got.shape == (20, min(30, max_rows // 20), 3)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_too_few_data_points_is_an_error_naming_x():
    model = _model(0)
    with pytest.raises(ValueError, match=r"`x`.*6 neurons of layer 'conv2'"):
        layer_similarity(model, model, _images(4), layers_a=["conv2"],
                         layers_b=["logits"])


def test_bad_arguments_name_the_argument_and_value():
    model, other = _model(0), _model(1)
    x = _images(16)
    with pytest.raises(ValueError, match=r"`layers_a`.*'nope'"):
        layer_similarity(model, model, x, layers_a=["conv1", "nope"])
    with pytest.raises(ValueError, match=r"`layers_b`.*model 'small_cnn'"):
        layer_similarity(model, other, x, layers_b=[model.get_layer("conv1")])
    with pytest.raises(ValueError, match=r"`method`.*method='cka'"):
        layer_similarity(model, model, x, method="cka")
    with pytest.raises(ValueError, match=r"keep_variance=0"):
        layer_similarity(model, model, x, keep_variance=0)
    with pytest.raises(ValueError, match=r"`max_rows`.*max_rows=1"):
        layer_similarity(model, model, x, max_rows=1)
    with pytest.raises(ValueError, match=r"`x`.*at least 2 inputs"):
        layer_similarity(model, model, x[:1])
    with pytest.raises(ValueError, match=r"`layers_a`.*must hold at least one"):
        layer_similarity(model, model, x, layers_a=[])


def test_plot_layer_similarity_and_difference(tmp_path):
    pytest.importorskip("matplotlib")
    a = np.array([[1.0, 0.4], [0.3, 0.9], [0.2, 0.6]])
    b = np.array([[0.9, 0.4], [0.1, 0.8], [0.2, 0.9]])
    figure = plot_layer_similarity(a, ["a1", "a2", "a3"], ["b1", "b2"],
                                   title="t", label_a="A", label_b="B")
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.get_yticklabels()] == ["a1", "a2", "a3"]
    assert axes.get_xlabel() == "B" and len(figure.axes) == 2  # + colorbar
    np.testing.assert_allclose(axes.images[0].get_array(), a)
    difference = plot_layer_similarity(a, reference=b)
    np.testing.assert_allclose(difference.axes[0].images[0].get_array(),
                               np.abs(a - b), atol=1e-12)
    path = tmp_path / "similarity.png"
    figure.savefig(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match=r"`names_b`.*2 names"):
        plot_layer_similarity(a, names_b=["b1"])
    with pytest.raises(ValueError, match=r"`reference`.*shape"):
        plot_layer_similarity(a, reference=b[:2])


@pytest.mark.jax
def test_same_matrix_on_the_jax_backend(tmp_path):
    pytest.importorskip("jax")
    model_a, model_b = _model(0), _model(1)
    x = _images(64)
    model_a.save_weights(str(tmp_path / "a.weights.h5"))
    model_b.save_weights(str(tmp_path / "b.weights.h5"))
    np.save(tmp_path / "x.npy", x)
    want = layer_similarity(model_a, model_b, x)
    script = textwrap.dedent(f"""
        import numpy as np, keras
        from keras_lrphase.analysis import layer_similarity
        from keras_lrphase.models import small_cnn
        assert keras.backend.backend() == "jax"
        models = []
        for name in ("a", "b"):
            model = small_cnn((8, 8, 3), 3, filters=(4, 6))
            model.load_weights({str(tmp_path)!r} + f"/{{name}}.weights.h5")
            models.append(model)
        x = np.load({str(tmp_path / "x.npy")!r})
        np.save({str(tmp_path / "jax.npy")!r}, layer_similarity(*models, x))
    """)
    env = dict(os.environ, KERAS_BACKEND="jax")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "jax.npy"), want, atol=1e-4)
