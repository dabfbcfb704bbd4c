"""The examples of the documentation pages print what the pages say.

The home page's "In fifteen lines" is also the README's; the first run of
Getting started and the preset table of Command line and presets were the
long README's, checked in tests/test_readme.py before they moved here.
"""

import contextlib
import io
import math
import os
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
GETTING_STARTED = ROOT / "docs" / "guides" / "getting-started.md"


def _fifteen_lines(path):
    """The code and the shown output of a page's "In fifteen lines"."""
    text = (ROOT / path).read_text()
    section = text[text.index("## In fifteen lines"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    shown = re.search(r"```text\n(.*?)```", section, re.S).group(1)
    return code, shown


def _first_run_example(index):
    """The `index`-th Python block of Getting started's "A first run"."""
    text = GETTING_STARTED.read_text()
    section = text[text.index("## A first run"):]
    section = section[:section.index("\n## ")]
    return re.findall(r"```python\n(.*?)```", section, re.S)[index]


def test_home_page_example_prints_the_output_it_shows():
    code, shown = _fifteen_lines("docs/index.md")
    assert len(code.strip().splitlines()) <= 16
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/index.md", "exec"), {})
    assert out.getvalue() == shown


def test_readme_shows_the_home_page_example():
    assert _fifteen_lines("README.md") == _fifteen_lines("docs/index.md")


@pytest.mark.backend_neutral
def test_first_run_example_reaches_the_convergence_phase():
    code = _first_run_example(0)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(GETTING_STARTED), "exec"), {})
    lines = out.getvalue().strip().splitlines()
    value, iterations, converged = lines[0].split()
    assert float(value) > 0 and converged == "True" and int(iterations) <= 20
    assert "switching to the convergence phase" in out.getvalue()
    learning_rate, phase = lines[-1].split()
    assert phase == "1"
    # The base LR 0.5 times decay_factor 0.5 once per decay.
    decays = math.log2(0.5 / float(learning_rate))
    assert decays == round(decays) and 0 <= decays <= 10


@pytest.mark.backend_neutral
def test_first_run_autodecay_example_stops_early_and_keeps_the_stages():
    code = _first_run_example(1)
    out = io.StringIO()
    namespace = {}
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(GETTING_STARTED), "exec"), namespace)
    history = namespace["history"].history
    files = sorted(os.listdir(namespace["folder"]))
    stages = [f for f in files if f.endswith(".keras")]
    assert len(history["loss"]) < 100
    assert len(stages) >= 2 and "backup" not in files  # deleted at the end
    assert [f"stage{i}.json" for i in range(1, len(stages) + 1)] == [
        f for f in files if f.endswith(".json")]


@pytest.mark.backend_neutral
def test_command_line_page_preset_times_are_the_presets_figures():
    from keras_lrphase.presets import PRESET_NAMES, PRESETS, preset_time

    text = (ROOT / "docs" / "guides" / "command-line.md").read_text()
    rows = {}
    for line in text.splitlines():
        match = re.match(r"\| `([\w-]+)` \| .* \| ([^|]+) \|$", line)
        if match:
            rows[match.group(1)] = match.group(2).strip()
    assert set(rows) == set(PRESET_NAMES)
    for name in PRESET_NAMES:
        assert rows[name] == preset_time(PRESETS[name]), name
        assert "minute" not in PRESETS[name].description
