import contextlib
import math
import io
import os
import pathlib
import re

import pytest

pytestmark = pytest.mark.backend_neutral

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs_and_reaches_the_convergence_phase():
    code = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    lines = out.getvalue().strip().splitlines()
    value, iterations, converged = lines[0].split()
    assert float(value) > 0 and converged == "True" and int(iterations) <= 20
    assert "switching to the convergence phase" in out.getvalue()
    learning_rate, phase = lines[-1].split()
    assert phase == "1"
    # The base LR 0.5 times decay_factor 0.5 once per decay.
    decays = math.log2(0.5 / float(learning_rate))
    assert decays == round(decays) and 0 <= decays <= 10


def test_readme_autodecay_example_stops_early_and_keeps_the_stages():
    code = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[1]
    out = io.StringIO()
    namespace = {}
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), namespace)
    history = namespace["history"].history
    files = sorted(os.listdir(namespace["folder"]))
    stages = [f for f in files if f.endswith(".keras")]
    assert len(history["loss"]) < 100
    assert len(stages) >= 2 and "backup" not in files  # deleted at the end
    assert [f"stage{i}.json" for i in range(1, len(stages) + 1)] == [
        f for f in files if f.endswith(".json")]


def test_readme_gives_the_two_commands():
    text = README.read_text()
    assert "keras-lrphase compare --preset demo" in text
    assert ('pip install torch==2.13.0 && pip install -e '
            '".[tensorflow,test,jax,torch]" && python -m pytest -q') in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert ("pip install -q torch==2.13.0" in ci
            and 'pip install -q -e ".[tensorflow,test,jax,torch]"' in ci
            and "python -m pytest -q" in ci)


def test_readme_preset_times_are_the_presets_figures():
    from keras_lrphase.presets import PRESET_NAMES, PRESETS, preset_time

    rows = {}
    for line in README.read_text().splitlines():
        match = re.match(r"\| `([\w-]+)` \| .* \| ([^|]+) \|$", line)
        if match:
            rows[match.group(1)] = match.group(2).strip()
    assert set(rows) == set(PRESET_NAMES)
    for name in PRESET_NAMES:
        assert rows[name] == preset_time(PRESETS[name]), name
        assert "minute" not in PRESETS[name].description
