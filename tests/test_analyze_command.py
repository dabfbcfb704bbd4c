"""`keras-lrphase analyze` end to end on tiny models saved to .keras files:
the JSON numbers equal direct calls of the library on the same data."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_lrphase.analysis.loss_plane import loss_plane
from keras_lrphase.analysis.margins import normalized_margins
from keras_lrphase.analysis.margins import quartile_statistics
from keras_lrphase.analysis.mode_connectivity import fit_curve
from keras_lrphase.analysis.mode_connectivity import linear_path
from keras_lrphase.analysis.transfer_probe import transfer_probe
from keras_lrphase.cli import main
from keras_lrphase.data import channel_stats
from keras_lrphase.data import load_digits_data
from keras_lrphase.data import normalize_array
from keras_lrphase.data.class_subset import select_classes
from keras_lrphase.models.small import small_cnn

pytestmark = pytest.mark.backend_neutral

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Paths of tiny digit CNNs: m1-m3 (10 classes), stage1-2 (5 classes)."""
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name, seed, classes in (("m1", 1, 10), ("m2", 2, 10), ("m3", 3, 10),
                                ("stage1", 4, 5), ("stage2", 5, 5)):
        keras.utils.set_random_seed(seed)
        model = small_cnn((8, 8, 1), classes, filters=(3, 4))
        paths[name] = str(folder / f"{name}.keras")
        model.save(paths[name])
    return paths


def _digits(samples, classes=None):
    """The data as the command prepares it, computed here independently."""
    data = load_digits_data()
    mean, std = channel_stats(data.x_train)
    if classes is not None:
        data = select_classes(data, classes)
    data = data.subset(samples, samples, seed=0)
    return ((normalize_array(data.x_train, mean, std), data.y_train),
            (normalize_array(data.x_test, mean, std), data.y_test))


def _load(*paths):
    return [keras.saving.load_model(p, compile=False) for p in paths]


def _analyze(tmp_path, *argv):
    out = str(tmp_path / "out")
    assert main(["analyze", *argv, "--out", out]) == 0
    return out


def _json(out, name):
    with open(os.path.join(out, name)) as f:
        return json.load(f)


def _pngs_written(out, names):
    for name in names:
        with open(os.path.join(out, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name


def test_connect_writes_the_curve_and_segment_evaluations(saved, tmp_path,
                                                          capsys):
    out = _analyze(tmp_path, "connect", saved["m1"], saved["m2"],
                   "--samples", "40", "--epochs", "2", "--points", "3",
                   "--batch-size", "20", "--curve", "polychain",
                   "--seed", "3")
    assert sorted(os.listdir(out)) == ["connect.json", "connect.png"]
    _pngs_written(out, ["connect.png"])
    record = _json(out, "connect.json")
    assert record["t"] == [0.0, 0.5, 1.0]
    assert record["models"] == {"m1": saved["m1"], "m2": saved["m2"]}
    assert record["data"]["train_examples"] == 40
    assert record["settings"]["batch_norm_recalibrated"] is True
    train, test = _digits(40)
    a, b = _load(saved["m1"], saved["m2"])
    paths = {"polychain": fit_curve(a, b, train, curve="polychain", epochs=2,
                                    batch_size=20, loss=LOSS, seed=3),
             "segment": linear_path(a, b, loss=LOSS)}
    assert list(record["paths"]) == ["polychain", "segment"]
    for label, path in paths.items():
        # BatchNorm statistics recomputed at each t on the training split.
        direct = path.evaluate([0.0, 0.5, 1.0], test, batch_size=20,
                               recalibrate_data=train)
        got = record["paths"][label]["test"]
        np.testing.assert_allclose(got["loss"], direct["loss"], rtol=1e-5)
        np.testing.assert_allclose(got["accuracy"], direct["accuracy"])
        assert got["barrier"] == pytest.approx(
            max(got["loss"]) - max(got["loss"][0], got["loss"][-1]))
        assert len(record["paths"][label]["train"]["loss"]) == 3
    assert "Wrote" in capsys.readouterr().out


def test_plane_writes_the_grid_of_loss_plane(saved, tmp_path):
    out = _analyze(tmp_path, "plane", saved["m1"], saved["m2"], saved["m3"],
                   "--samples", "30", "--grid", "3", "--no-recalibrate",
                   "--split", "test", "--project", saved["m1"])
    assert sorted(os.listdir(out)) == ["plane.json", "plane_error.png",
                                       "plane_loss.png"]
    _pngs_written(out, ["plane_error.png", "plane_loss.png"])
    record = _json(out, "plane.json")
    _, test = _digits(30)
    m1, m2, m3 = _load(saved["m1"], saved["m2"], saved["m3"])
    direct = loss_plane(m1, m2, m3, m1, test, grid=3, points=[m1], loss=LOSS)
    for key in ("x", "y", "anchors", "projections"):
        np.testing.assert_allclose(record[key], getattr(direct, key),
                                   atol=1e-9)
    for key in ("loss", "accuracy"):
        got = np.array(record[key], dtype=np.float64)  # null: NaN
        np.testing.assert_allclose(got, getattr(direct, key), rtol=1e-5,
                                   equal_nan=True)
    np.testing.assert_allclose(record["projections"], [[0.0, 0.0]],
                               atol=1e-6)


def test_margins_writes_the_quartiles_of_each_model(saved, tmp_path):
    out = _analyze(tmp_path, "margins", saved["m1"], saved["m2"],
                   "--samples", "50", "--split", "test", "--layer", "pool")
    assert sorted(os.listdir(out)) == ["margins.json", "margins.png"]
    _pngs_written(out, ["margins.png"])
    record = _json(out, "margins.json")
    _, (x, y) = _digits(50)
    for name, model in zip(("m1", "m2"), _load(saved["m1"], saved["m2"])):
        margins = normalized_margins(model, x, y, layer="pool")
        got = record["margins"][name]
        for key, value in quartile_statistics(margins).items():
            assert got[key] == pytest.approx(value, rel=1e-6), key
        assert got["samples"] == 50
        assert got["negative_fraction"] == pytest.approx(np.mean(margins < 0))
        assert got["percentiles"]["50"] == pytest.approx(
            got["margin_median"])


def test_transfer_writes_the_table_of_transfer_probe(saved, tmp_path):
    out = _analyze(tmp_path, "transfer", saved["stage1"], saved["stage2"],
                   "--classes", "5,6,7,8,9", "--samples", "60", "--l2",
                   "0.01")
    assert sorted(os.listdir(out)) == ["transfer.json", "transfer.md",
                                       "transfer.png"]
    _pngs_written(out, ["transfer.png"])
    record = _json(out, "transfer.json")
    train, test = _digits(60, classes=[5, 6, 7, 8, 9])
    direct = transfer_probe(
        dict(zip(("stage1", "stage2"), _load(saved["stage1"],
                                             saved["stage2"]))),
        train, test, l2=0.01)
    assert [row["accuracy"] for row in record["rows"]] == direct.accuracies
    assert record["gains"] == direct.gains
    assert record["data"]["classes"] == [5, 6, 7, 8, 9]
    assert record["data"]["class_names"] == ["5", "6", "7", "8", "9"]
    with open(os.path.join(out, "transfer.md")) as f:
        assert f.read() == direct.to_markdown()


def _error(capsys, argv, tmp_path):
    out = tmp_path / "never"
    status = main(["analyze", *argv, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err, out


@pytest.mark.parametrize("argv, expected", [
    (["connect", "{m1}"], "analyze connect takes exactly 2 MODEL files; "
                          "received 1."),
    (["plane", "{m1}", "{m2}"], "analyze plane takes exactly 3 MODEL files"),
    (["margins", "{dir}/missing.keras"],
     "Argument MODEL must be an existing .keras file. Received: "
     "MODEL='{dir}/missing.keras'"),
    (["margins", "{dir}/m1.h5"], "Argument MODEL must be a .keras file"),
    (["connect", "{m1}", "{m2}", "--samples", "1"],
     "Argument --samples must be an integer >= 2. Received: --samples=1"),
    (["transfer", "{m1}", "--classes", "1,1"],
     "Argument --classes must hold distinct classes. Received: "
     "--classes=1,1"),
    (["transfer", "{m1}", "--l2", "0"], "Received: --l2=0.0"),
    (["margins", "{m1}", "--dataset", "nope"], "Received: --dataset='nope'"),
])
def test_bad_arguments_fail_before_any_work(saved, tmp_path, capsys, argv,
                                            expected):
    names = dict(saved, dir=os.path.dirname(saved["m1"]))
    err, out = _error(capsys, [a.format(**names) for a in argv], tmp_path)
    assert expected.format(**names) in err
    assert err.startswith(f"keras-lrphase analyze {argv[0]}: error: ")
    assert not out.exists()


@pytest.mark.parametrize("argv, expected", [
    (["connect", "{m1}", "{stage1}"],
     "Argument MODEL must have the architecture of '{m1}' (the same layers "
     "and weight shapes, in the same order). Received: MODEL='{stage1}'"),
    (["plane", "{m1}", "{m2}", "{m3}", "--project", "{stage1}"],
     "Argument --project must have the architecture of '{m1}'"),
    (["margins", "{stage1}"],
     "Argument --dataset must have as many classes as model '{stage1}' "
     "outputs (5); it has 10. Received: --dataset='digits'"),
    (["margins", "{m1}", "--layer", "nope"],
     "Argument --layer must name a layer of every model"),
    (["transfer", "{stage1}", "--classes", "5,10"],
     "Argument --classes must hold at least 2 distinct class indices in "
     "[0, 10). Received: --classes=[5, 10]"),
])
def test_models_that_do_not_fit_name_the_flag(saved, tmp_path, capsys,
                                              argv, expected):
    err, _ = _error(capsys, [a.format(**saved) for a in argv], tmp_path)
    assert expected.format(**saved) in err


def test_the_analyze_parser_needs_no_keras():
    # As the console script: `sys.argv[0]` names it while it imports.
    code = ("import json, sys\nsys.argv[0] = 'keras-lrphase'\n"
            "from keras_lrphase import cli_entry\n"
            "try:\n    cli_entry.main(sys.argv[1:])\n"
            "except SystemExit as stop:\n    status = stop.code\n"
            "print(json.dumps([status, 'keras' in sys.modules]))")
    for argv, status in ((["analyze", "--help"], 0),
                         (["analyze", "connect", "--help"], 0),
                         (["analyze", "transfer", "--classes", "x"], 2)):
        result = subprocess.run([sys.executable, "-c", code, *argv],
                                capture_output=True, text=True, timeout=120)
        assert json.loads(result.stdout.strip().splitlines()[-1]) == [
            status, False], result.stderr
