import contextlib
import io
import json
import pathlib
import re

import matplotlib
import pytest

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
    controller = namespace["controller"]
    assert controller.phase == "convergence"
    # Algorithm 1: switch = plateau + round(n / 3) with n = plateau + 1.
    n = controller.plateau_epoch + 1
    assert controller.switch_epoch == n + round(n / 3) - 1
    # A decay decided at epoch d is in force from epoch d + 1 on.
    rates = namespace["history"].history["learning_rate"]
    last = len(rates) - 1
    decays = sum(1 for epoch in controller.decay_epochs if epoch < last)
    assert rates[last] == pytest.approx(
        rates[controller.switch_epoch] * 0.5**decays, rel=1e-6
    )


def test_autodecay_notebook_shows_stages_and_loads_their_models():
    namespace, text = execute("autodecay.ipynb")
    controller = namespace["controller"]
    stages = namespace["stages"].stages
    history = namespace["history"].history
    assert controller.decay_epochs and controller.should_stop
    # One stage per decay plus the last one; they tile the epochs run.
    assert len(stages) == len(controller.decay_epochs) + 1
    assert stages[0]["first_epoch"] == 1
    assert stages[-1]["last_epoch"] == len(history["loss"]) == controller.stop_epoch + 1
    for before, after in zip(stages, stages[1:]):
        assert after["first_epoch"] == before["last_epoch"] + 1
    assert [s["last_epoch"] - 1 for s in stages[:-1]] == controller.decay_epochs
    assert text.count("test accuracy") == len(stages)
