import contextlib
import io
import json
import pathlib
import re

import matplotlib
import pytest

# The notebooks train for a minute each: the main job of .ci/run executes
# them after the default suite (`-m slow tests/test_notebooks.py`).
pytestmark = pytest.mark.slow

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"


def execute(name):
    """Runs a notebook's code cells in order; returns (namespace, output)."""
    matplotlib.use("Agg")
    path = NOTEBOOKS / name
    cells = json.loads(path.read_text())["cells"]
    code = "\n".join(
        "".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"
    )
    namespace = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(path), "exec"), namespace)
    return namespace, out.getvalue()


def test_quickstart_notebook_runs_and_reaches_the_convergence_phase():
    namespace, text = execute("quickstart.ipynb")
    value = float(re.search(r"lambda_max = ([0-9.]+)", text).group(1))
    assert value > 0 and "converged: True" in text
    # The callback's epochs are numbered from 1, as Keras prints them.
    two_phase = namespace["two_phase"]
    assert two_phase.controller.phase == "convergence"
    # Algorithm 1: with the plateau at (1-based) epoch n, the exploration
    # goes on round(n / 3) more epochs.
    n = two_phase.plateau_epoch
    assert two_phase.switch_epoch == n + round(n / 3)
    # A decay decided after epoch D is in force from epoch D + 1 on; the
    # history's rate at index i is the one of epoch i + 1.
    rates = namespace["history"].history["learning_rate"]
    decays = sum(1 for epoch in two_phase.decay_epochs if epoch < len(rates))
    assert rates[-1] == pytest.approx(
        rates[two_phase.switch_epoch - 1] * 0.5**decays, rel=1e-6
    )


def test_autodecay_notebook_shows_stages_and_loads_their_models():
    namespace, text = execute("autodecay.ipynb")
    autodecay = namespace["autodecay"]
    stages = namespace["stages"].stages
    history = namespace["history"].history
    assert autodecay.decay_epochs and autodecay.controller.should_stop
    # One stage per decay plus the last one; they tile the epochs run, all
    # numbered from 1.
    assert len(stages) == len(autodecay.decay_epochs) + 1
    assert stages[0]["first_epoch"] == 1
    assert stages[-1]["last_epoch"] == len(history["loss"]) == autodecay.stop_epoch
    for before, after in zip(stages, stages[1:]):
        assert after["first_epoch"] == before["last_epoch"] + 1
    assert [s["last_epoch"] for s in stages[:-1]] == autodecay.decay_epochs
    assert text.count("test accuracy") == len(stages)


def test_heuristics_notebook_freezes_the_fc_stack_and_compares_layers():
    import numpy as np

    from keras_lrphase.analysis import svcca

    namespace, text = execute("heuristics.ipynb")
    runs = namespace["runs"]
    assert text.count("validation accuracy after epoch 4") == 4
    # FreezeLayers(4): after epoch 4 the FC stack is the initial one, bit for
    # bit, and the convolutions trained.
    initial, after_freeze, final, _ = runs["large batch + FC freeze"]
    for name in ("fc1", "fc2", "fc3"):
        for before, after in zip(initial.get_layer(name).get_weights(),
                                 after_freeze.get_layer(name).get_weights()):
            np.testing.assert_array_equal(before, after)
    assert not np.array_equal(initial.get_layer("conv1").get_weights()[0],
                              after_freeze.get_layer("conv1").get_weights()[0])
    # The warmup run's learning rate reached the target at epoch 4.
    assert runs["large batch + warmup"][2].optimizer.learning_rate.numpy() \
        == np.float32(0.3)
    # One cell of the heatmap against a direct SVCCA of the activations.
    similarity = namespace["similarity"]
    assert similarity.shape == (5, 5)
    initial, after_warmup, *_ = runs["large batch + warmup"]
    x = namespace["x_test"]
    a = keras_features(initial, "fc2", x)
    b = keras_features(after_warmup, "fc2", x)
    assert similarity[3, 3] == pytest.approx(svcca(a, b), abs=1e-6)


def keras_features(model, name, x):
    import keras

    probe = keras.Model(model.inputs, model.get_layer(name).output)
    return probe.predict(x, verbose=0)


def test_landscape_notebook_connects_two_solutions():
    import numpy as np

    from keras_lrphase.analysis import normalized_margins
    from keras_lrphase.analysis import quartile_statistics

    namespace, text = execute("landscape.ipynb")
    curve, ts = namespace["curve"], namespace["ts"]
    small_a, small_b = namespace["small_a"], namespace["small_b"]
    # The curve's end points are the two networks, bit for bit.
    for got, want in zip(curve.weights_at(0.0), small_a.get_weights()):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(curve.weights_at(1.0), small_b.get_weights()):
        np.testing.assert_array_equal(got, want)
    # The segment's middle is the mean of the end points' weights.
    middle = namespace["segment"].weights_at(0.5)
    for got, a, b in zip(middle, small_a.get_weights(), small_b.get_weights()):
        np.testing.assert_allclose(got, (a + b) / 2, rtol=1e-6, atol=1e-7)
    on_curve, on_segment = namespace["on_curve"], namespace["on_segment"]
    assert len(on_curve["loss"]) == len(ts) == 11
    # What the notebook says: the trained curve's worst point is lower than
    # the segment's barrier.
    assert max(on_curve["loss"]) < max(on_segment["loss"])
    # The margin statistics printed are those of a direct computation, and
    # the last value MarginMonitor logged for the large batch is the same.
    x, y = namespace["x_train"][:500], namespace["y_train"][:500]
    direct = quartile_statistics(normalized_margins(namespace["large"], x, y))
    assert namespace["log_large"]["margin_mean_iqr"][-1] == pytest.approx(
        direct["margin_mean_iqr"], rel=1e-5)
    assert f"'margin_median': {round(direct['margin_median'], 4)}" in text
