"""`keras-lrphase analyze spectrum` end to end on tiny saved CNNs: the JSON's
eigenvalues, traces and quadrature nodes against the dense Hessian
(numpy.linalg.eigvalsh) of the same model on the same data."""

import json
import os

import keras
import numpy as np
import pytest

from keras_lrphase.cli import main
from keras_lrphase.data import channel_stats
from keras_lrphase.data import load_digits_data
from keras_lrphase.data import normalize_array
from keras_lrphase.hessian import HessianOperator
from keras_lrphase.models.small import small_cnn

pytestmark = pytest.mark.backend_neutral

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
LAYERS = ["all", "conv1", "bn1", "conv2", "bn2", "logits"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name, seed in (("m1", 1), ("m2", 2)):
        keras.utils.set_random_seed(seed)
        model = small_cnn((8, 8, 1), 10, filters=(3, 4))
        paths[name] = str(folder / f"{name}.keras")
        model.save(paths[name])
    return paths


def _digits(samples):
    data = load_digits_data()
    mean, std = channel_stats(data.x_train)
    data = data.subset(samples, samples, seed=0)
    return normalize_array(data.x_train, mean, std), data.y_train


def _run(models, tmp_path, *argv):
    out = str(tmp_path / "out")
    assert main(["analyze", "spectrum", *models, "--samples", "40", "--out",
                 out, *argv]) == 0
    with open(os.path.join(out, "spectrum.json")) as f:
        return out, json.load(f)


@pytest.mark.slow  # ~1,000 Hessian-vector products and 400 for the dense
def test_spectrum_of_every_weight_and_each_layer_is_the_dense_one(
        saved, tmp_path):
    out, record = _run([saved["m1"]], tmp_path, "--layers", "all,each",
                       "--k", "3",
                       "--trace-probes", "30", "--density-steps", "10",
                       "--tolerance", "1e-9", "--max-iterations", "199")
    assert sorted(os.listdir(out)) == ["spectrum.json", "spectrum_density.png",
                                       "spectrum_layers.png"]
    for name in ("spectrum_density.png", "spectrum_layers.png"):
        with open(os.path.join(out, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    x, y = _digits(40)
    assert record["data"]["train_examples"] == 40
    for name in ("m1",):
        layers = record["spectrum"][name]["layers"]
        assert list(layers) == LAYERS
        model = keras.saving.load_model(saved[name], compile=False)
        for layer, entry in layers.items():
            dense = HessianOperator(model, (x, y), layer=layer,
                                    loss=LOSS).dense()
            exact = np.linalg.eigvalsh(dense)
            assert entry["size"] == len(exact) and entry["samples"] == 40
            np.testing.assert_allclose(
                entry["eigenvalues"], exact[::-1][:3], rtol=1e-5,
                atol=1e-7 * np.abs(exact).max(), err_msg=f"{name} {layer}")
            trace = entry["trace"]
            if 3 * len(exact) <= 30:  # the sketch spans the layer: exact
                assert trace["standard_error"] == 0.0
                assert trace["value"] == pytest.approx(np.trace(dense),
                                                       rel=1e-5)
            else:
                assert abs(trace["value"] - np.trace(dense)) <= \
                    3 * trace["standard_error"]
            density = entry["density"]
            assert density["steps"] == min(10, len(exact))
            if len(exact) <= 10:  # Lanczos spans the layer: the spectrum
                np.testing.assert_allclose(
                    sorted(density["nodes"][0]), exact, rtol=1e-4,
                    atol=1e-5 * np.abs(exact).max())


def test_small_layers_are_measured_whole_and_exactly(saved, tmp_path):
    # bn1 and bn2 have 6 and 8 weights, fewer than --k and --density-steps:
    # all their eigenvalues, an exact Hutch++ trace, quadrature nodes equal
    # to the dense spectrum.
    out, record = _run([saved["m2"]], tmp_path, "--layers", "bn1,bn2",
                       "--k", "10", "--trace-probes", "30",
                       "--density-steps", "20", "--tolerance", "1e-9")
    assert sorted(os.listdir(out)) == ["spectrum.json", "spectrum_density.png",
                                       "spectrum_layers.png"]
    x, y = _digits(40)
    model = keras.saving.load_model(saved["m2"], compile=False)
    for layer, size in (("bn1", 6), ("bn2", 8)):
        entry = record["spectrum"]["m2"]["layers"][layer]
        dense = HessianOperator(model, (x, y), layer=layer, loss=LOSS).dense()
        exact = np.linalg.eigvalsh(dense)
        assert entry["size"] == size == len(entry["eigenvalues"])
        np.testing.assert_allclose(entry["eigenvalues"], exact[::-1],
                                   rtol=1e-5, atol=1e-6 * np.abs(exact).max())
        assert entry["trace"]["standard_error"] == 0.0
        assert entry["trace"]["value"] == pytest.approx(np.trace(dense),
                                                        rel=1e-5)
        assert entry["density"]["steps"] == size
        np.testing.assert_allclose(sorted(entry["density"]["nodes"][0]), exact,
                                   rtol=1e-4, atol=1e-5 * np.abs(exact).max())


def test_gauss_newton_eigenvalues_are_the_dense_ggn(saved, tmp_path):
    _, record = _run([saved["m1"], saved["m2"]], tmp_path, "--layers",
                     "logits", "--k", "2",
                     "--trace-probes", "0", "--density-steps", "0",
                     "--curvature", "gauss_newton", "--tolerance", "1e-9")
    x, y = _digits(40)
    model = keras.saving.load_model(saved["m2"], compile=False)
    dense = HessianOperator(model, (x, y), layer="logits", loss=LOSS,
                            curvature="gauss_newton").dense()
    entry = record["spectrum"]["m2"]["layers"]["logits"]
    assert entry["curvature"] == "gauss_newton"
    assert "trace" not in entry and "density" not in entry
    np.testing.assert_allclose(entry["eigenvalues"],
                               np.linalg.eigvalsh(dense)[::-1][:2], rtol=1e-5)


@pytest.mark.parametrize("argv, expected", [
    (["--trace-probes", "3"],
     "Argument --trace-probes must be 0 or an integer >= 6. Received: "
     "--trace-probes=3"),
    (["--k", "-1"], "Argument --k must be an integer >= 0. Received: --k=-1"),
    (["--k", "0", "--trace-probes", "0", "--density-steps", "0"],
     "nothing to compute"),
    (["--layers", "all,,bn1"], "Argument --layers must be distinct"),
    (["--tolerance", "0"], "Argument --tolerance must be a finite number > 0"),
    (["--layers", "nope"], "Argument --layers must name layers of every "
                           "model"),
    (["--layers", "relu1"], "Argument --layers must name layers with "
                            "trainable weights"),
])
def test_bad_arguments_name_the_flag(saved, tmp_path, capsys, argv, expected):
    out = tmp_path / "never"
    status = main(["analyze", "spectrum", saved["m1"], "--samples", "20",
                   "--out", str(out), *argv])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1, err
    assert expected in err
    assert err.startswith("keras-lrphase analyze spectrum: error: ")
