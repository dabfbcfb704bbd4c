"""Every script in benchmarks/ runs: a smoke run of each, in a tiny setting.

A benchmark measures the package's speed or memory targets (ratios printed
from one run); CI runs each with `--smoke`, its tiny setting, so a change
that breaks a script fails CI instead of the next measurement. What a new
script must provide: an argparse option `--smoke` that picks a setting
which runs in seconds on a CPU without data files, accelerators or network
(data it needs it makes itself, or the bundled digits), and exits with
status 0 (a failed check raises). The smoke runs are marked slow: the main
job of .ci/run runs them after the default suite.
"""

import ast
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))


def _options(path):
    """The option strings of every `add_argument` call in a script."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "add_argument"):
            found.update(a.value for a in node.args
                         if isinstance(a, ast.Constant) and isinstance(a.value, str))
    return found


def test_every_benchmark_has_a_smoke_setting():
    assert SCRIPTS, "benchmarks/ holds no script"
    missing = [p.name for p in SCRIPTS if "--smoke" not in _options(p)]
    assert missing == [], f"benchmarks without --smoke: {missing}"


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_benchmark_smoke_run(script, tmp_path):
    # From the repository root, with its package first on the path; the
    # scripts' temporary folders go to tmp_path.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
        TMPDIR=str(tmp_path), TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, str(script), "--smoke"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (
        f"{script.name} --smoke exited with {result.returncode}:\n"
        f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    assert result.stdout.strip(), f"{script.name} --smoke printed nothing"
