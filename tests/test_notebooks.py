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


def test_spectrum_notebook_measures_the_dense_spectrum_across_the_phases():
    import numpy as np
    import scipy.sparse.linalg

    from keras_lrphase.hessian import HessianOperator

    namespace, text = execute("spectrum.ipynb")
    sample = namespace["sample"]
    # The top eigenvalues printed for the trained models are the dense
    # Hessian's (output layer: 650 weights) and SciPy's eigsh on the
    # package's products (every weight), not the package's own Lanczos.
    for label, model in namespace["models"].items():
        tops = namespace["tops"][label]
        dense = HessianOperator(model, sample, layer="logits").dense()
        assert tops["logits"] == pytest.approx(
            np.linalg.eigvalsh(dense)[-1], rel=1e-4)
        operator = HessianOperator(model, sample).as_linear_operator()
        largest = scipy.sparse.linalg.eigsh(operator, k=1, which="LA",
                                            tol=1e-8)[0][0]
        assert tops["all"] == pytest.approx(largest, rel=1e-4)
        spectrum = namespace["spectra"][label]
        assert spectrum.eigenvalues.values[0] == pytest.approx(largest, rel=1e-4)
        assert np.trapezoid(spectrum.density.density, spectrum.density.grid) \
            == pytest.approx(1.0, abs=1e-3)
    # What the text says: the large batch's spectrum lies further out.
    small, large = namespace["spectra"]["batch 16"], namespace["spectra"]["batch 700"]
    assert large.eigenvalues.values[0] > 2 * small.eigenvalues.values[0]
    assert large.trace.value > small.trace.value

    # The two-phase run: the monitor measured epochs 3, 6, ..., 60 (1-based),
    # on both sides of the switch, and where TwoPhaseLR computed its
    # eigenvalue (from the switch on) it is the monitor's output-layer one.
    two_phase, history = namespace["two_phase"], namespace["history"].history
    records = namespace["records"]
    epochs = [record["epoch"] for record in records]
    assert epochs == list(range(3, 61, 3))
    switch = two_phase.switch_epoch
    assert two_phase.controller.phase == "convergence"
    assert epochs[0] < switch < epochs[-1]
    mine = np.asarray(history["logits/hessian_eigenvalue_1"])
    theirs = np.asarray(history["hessian_max_eigenvalue"])
    both = ~np.isnan(mine) & ~np.isnan(theirs)
    compared = np.flatnonzero(both) + 1  # 1-based epochs
    assert set(compared) >= {e for e in epochs if e > switch}
    assert compared.min() >= switch
    np.testing.assert_allclose(mine[both], theirs[both], rtol=1e-4)
    assert np.isnan(theirs[:switch - 1]).all()
    # A record holds what History logged for its epoch.
    for record in records:
        for layer, prefix in (("all", ""), ("logits", "logits/")):
            logged = [history[f"{prefix}hessian_eigenvalue_{i}"][record["epoch"] - 1]
                      for i in (1, 2, 3)]
            np.testing.assert_allclose(
                record["layers"][layer]["eigenvalues"], logged, rtol=1e-6)
    # The last record against the final model's dense output-layer Hessian.
    dense = HessianOperator(namespace["model"], sample, layer="logits").dense()
    np.testing.assert_allclose(records[-1]["layers"]["logits"]["eigenvalues"],
                               np.linalg.eigvalsh(dense)[::-1][:3], rtol=1e-4)
    assert f"switch epoch: {switch}" in text


@pytest.mark.parametrize("backend", [
    pytest.param("jax", marks=pytest.mark.jax),
    pytest.param("torch", marks=pytest.mark.torch),
])
def test_spectrum_notebook_on_another_backend(backend):
    # The test above, in a process whose Keras runs on `backend` (the
    # backend is fixed when Keras is imported).
    import importlib.util
    import os
    import subprocess
    import sys

    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    test = (f"{__file__}::"
            "test_spectrum_notebook_measures_the_dense_spectrum_across_the_phases")
    env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu",
               TF_CPP_MIN_LOG_LEVEL="3")
    process = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m",
         "slow", test], env=env, capture_output=True, text=True, timeout=1200)
    assert process.returncode == 0, (process.stdout + process.stderr)[-4000:]
    assert "1 passed" in process.stdout
