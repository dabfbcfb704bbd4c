import contextlib
import io
import json
import pathlib
import re

import matplotlib
import pytest

NOTEBOOK = pathlib.Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_runs_and_reaches_the_convergence_phase():
    matplotlib.use("Agg")
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = "\n".join(
        "".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"
    )
    namespace = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(NOTEBOOK), "exec"), namespace)
    text = out.getvalue()
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
