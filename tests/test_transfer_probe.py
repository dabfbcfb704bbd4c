import json
import math

import keras
import numpy as np
import pytest

from keras_lrphase.analysis.linear_probe import fit_linear_probe
from keras_lrphase.analysis.transfer_probe import feature_layer
from keras_lrphase.analysis.transfer_probe import penultimate_features
from keras_lrphase.analysis.transfer_probe import transfer_probe
from keras_lrphase.analysis.transfer_table import TransferTable
from keras_lrphase.data.class_subset import select_classes
from keras_lrphase.data.digits import load_digits_data
from keras_lrphase.data.pipeline import channel_stats
from keras_lrphase.data.pipeline import normalize_array
from keras_lrphase.models.small import small_cnn

pytestmark = pytest.mark.backend_neutral


def _stage_model(seed, moving_mean):
    """A tiny BatchNorm CNN with distinct weights and BN statistics."""
    keras.utils.set_random_seed(seed)
    model = small_cnn((8, 8, 1), 5, filters=(4, 6), name=f"stage{seed}")
    weights = model.get_weights()
    for k, variable in enumerate(model.weights):
        if "moving_mean" in variable.path:
            weights[k] = np.full(variable.shape, moving_mean, "float32")
    model.set_weights(weights)
    return model


@pytest.fixture(scope="module")
def target():
    """The digits 5-9 (held out of a 0-4 source task), 200 + 100 samples."""
    data = select_classes(load_digits_data(), [5, 6, 7, 8, 9])
    data = data.subset(200, 100, seed=0)
    mean, std = channel_stats(data.x_train)
    return ((normalize_array(data.x_train, mean, std), data.y_train),
            (normalize_array(data.x_test, mean, std), data.y_test))


@pytest.fixture(scope="module")
def stages():
    return [_stage_model(seed, mean) for seed, mean in ((1, 0.0), (2, 0.3),
                                                         (3, -0.2))]


def test_select_classes_relabels_in_the_given_order():
    data = load_digits_data()
    target = select_classes(data, [7, 2])
    assert target.class_names == ("7", "2")
    assert np.array_equal(target.x_train,
                          data.x_train[np.isin(data.y_train, [7, 2])])
    expected = np.where(data.y_test[np.isin(data.y_test, [7, 2])] == 7, 0, 1)
    assert np.array_equal(target.y_test, expected)
    with pytest.raises(ValueError, match=r"classes=\[3, 3\]"):
        select_classes(data, [3, 3])


def test_features_are_the_input_of_the_last_layer(stages, target):
    (x, _), _ = target
    model = stages[1]
    assert feature_layer(model).name == "logits"
    direct = keras.Model(model.input, model.layers[-1].input)
    expected = keras.ops.convert_to_numpy(direct(x, training=False))
    features = penultimate_features(model, x, batch_size=64)
    assert features.shape == (200, 6)
    np.testing.assert_allclose(features, expected, rtol=1e-6, atol=1e-6)


def test_features_skip_a_final_softmax():
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    scores = keras.layers.Dense(2, name="scores")(hidden)
    model = keras.Model(inputs, keras.layers.Softmax()(scores))
    assert feature_layer(model).name == "scores"
    x = np.arange(6.0, dtype="float32").reshape(2, 3)
    np.testing.assert_allclose(
        penultimate_features(model, x),
        keras.ops.convert_to_numpy(model.get_layer("hidden")(x)), rtol=1e-6)
    np.testing.assert_allclose(penultimate_features(model, x, layer="hidden"),
                               x)


def test_linear_probe_is_scikit_learns_logistic_regression():
    linear_model = pytest.importorskip("sklearn.linear_model")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(150, 6)) * [1, 2, 3, 0.5, 1, 4] + 2.0
    y = np.argmax(x @ rng.normal(size=(6, 4)) + rng.normal(size=(150, 4)), 1)
    probe = fit_linear_probe(x, y, l2=0.01, tolerance=1e-10)
    assert probe.gradient_norm < 1e-10
    z = (x - x.mean(0)) / x.std(0)
    reference = linear_model.LogisticRegression(
        C=1 / (0.01 * 150), tol=1e-12, max_iter=10_000).fit(z, y)
    # scikit-learn's L-BFGS stops earlier (gradient ~1e-6): 1e-5 apart.
    np.testing.assert_allclose(probe.kernel, reference.coef_.T, atol=1e-5)
    np.testing.assert_allclose(
        probe.bias, reference.intercept_ - reference.intercept_.mean(),
        atol=1e-5)
    assert np.array_equal(probe.predict(x), reference.predict(z))
    assert probe.accuracy(x, y) == reference.score(z, y)


def test_fix_accuracies_gains_and_ratio_match_a_direct_computation(stages,
                                                                    target):
    (x, y), (x_test, y_test) = target
    table = transfer_probe(stages, (x, y), (x_test, y_test), l2=1e-2)
    assert table.names == ["stage1", "stage2", "stage3"]
    expected = []
    for model in stages:
        direct = keras.Model(model.input, model.layers[-1].input)
        train = keras.ops.convert_to_numpy(direct(x, training=False))
        test = keras.ops.convert_to_numpy(direct(x_test, training=False))
        probe = fit_linear_probe(train, y, 5, l2=1e-2)
        expected.append(float(np.mean(probe.predict(test) == y_test)))
    assert table.accuracies == expected
    a1, a2, a3 = expected
    assert table.gains == {"Gain12": a2 - a1, "Gain23": a3 - a2}
    assert table.ratios == {"Gain23/Gain12": (a3 - a2) / (a2 - a1)}
    assert [r.gain for r in table.rows] == [None, a2 - a1, a3 - a2]
    assert (table.num_classes, table.train_examples,
            table.test_examples) == (5, 200, 100)
    assert table.settings == {"l2": 0.01, "feature_layers": ["logits"] * 3}
    again = transfer_probe(stages, (x, y), (x_test, y_test), l2=1e-2)
    assert again == table  # deterministic


def test_models_load_from_keras_files_named_by_their_stems(stages, target,
                                                            tmp_path):
    paths = []
    for k, model in enumerate(stages[:2], 1):
        paths.append(str(tmp_path / f"stage{k}.keras"))
        model.save(paths[-1])
    (x, y), test = target
    from_files = transfer_probe(paths, (x[:60], y[:60]), test)
    direct = transfer_probe({"stage1": stages[0], "stage2": stages[1]},
                            (x[:60], y[:60]), test)
    assert from_files.names == ["stage1", "stage2"]
    assert from_files.accuracies == direct.accuracies


def test_finetune_trains_a_copy_with_a_new_head_and_repeats_exactly():
    # Two classes 1 apart along (1, 1, 0, 0): easily separated.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32")
    x[:, :2] += np.where(y == 1, 0.5, -0.5)[:, None]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)),
                              keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(7, name="old_head")])
    before = [w.copy() for w in model.get_weights()]
    kwargs = dict(mode="finetune", epochs=6, batch_size=16,
                  learning_rate=0.05, seed=1)
    table = transfer_probe([model], (x[:48], y[:48]), (x[48:], y[48:]),
                           **kwargs)
    assert table.rows[0].train_accuracy == 1.0
    assert table.rows[0].accuracy == 1.0
    assert table.settings["feature_layers"] == ["old_head"]
    for old, new in zip(before, model.get_weights()):
        assert np.array_equal(old, new)
    again = transfer_probe([model], (x[:48], y[:48]), (x[48:], y[48:]),
                           **kwargs)
    assert again == table


def test_table_of_equal_accuracies_has_nan_ratio_and_json_nulls():
    table = TransferTable.from_accuracies("fix", ["a", "b", "c"],
                                          [0.5, 0.5, 0.75], [1.0, 1.0, 1.0])
    assert table.gains == {"Gain12": 0.0, "Gain23": 0.25}
    assert math.isnan(table.ratios["Gain23/Gain12"])
    data = json.loads(json.dumps(table.to_dict(), allow_nan=False))
    assert data["ratios"] == {"Gain23/Gain12": None}
    assert data["rows"][0] == {"name": "a", "accuracy": 0.5,
                               "train_accuracy": 1.0, "gain": None,
                               "gain_ratio": None}
    markdown = table.to_markdown()
    assert "| a | Gain12 | b | Gain23 | c | Gain23/Gain12 |" in markdown
    assert "| 50.00 | 0.00 | 50.00 | 25.00 | 75.00 | nan |" in markdown


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="frozen"), r"Argument `mode` .* Received: mode='frozen'"),
    (dict(l2=0.0), r"Received: l2=0.0"),
    (dict(names=["only one"]), r"Argument `names` must hold one name per"),
    (dict(layer="nope"), r"Received: layer='nope'"),
])
def test_bad_arguments_name_themselves(stages, target, kwargs, message):
    (x, y), test = target
    with pytest.raises(ValueError, match=message):
        transfer_probe(stages[:2], (x, y), test, **kwargs)


def test_bad_data_and_models_are_rejected_before_work(stages, target,
                                                      tmp_path):
    (x, y), test = target
    with pytest.raises(ValueError, match=r"must fit the models' input shape"
                                         r" \(8, 8, 1\)"):
        transfer_probe(stages, (x[:, :4], y), test)
    with pytest.raises(ValueError, match="at least 2 classes"):
        transfer_probe(stages, (x[:3], np.zeros(3, "int32")),
                       (x[:3], np.zeros(3, "int32")))
    missing = str(tmp_path / "missing.keras")
    with pytest.raises(ValueError, match="must hold existing .keras files"):
        transfer_probe([missing], (x, y), test)
