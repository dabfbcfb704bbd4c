"""The package imports only the backend Keras is configured with, and the
command line parses (`--help`, usage errors) without Keras at all."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.backend_neutral

BACKENDS = ("tensorflow", "jax", "torch")

# Prints, as JSON, the backends imported by the package and its public names
# beyond those `import keras` imports itself (Keras on torch imports JAX
# where it is installed).
_IMPORTED_BY_THE_PACKAGE = """
import json, sys
import keras
before = set(sys.modules)
import keras_lrphase
import keras_lrphase.controllers
for name in keras_lrphase.__all__:
    getattr(keras_lrphase, name)
keras_lrphase.controllers.Controller
print(json.dumps({"backend": keras.backend.backend(), "imported": sorted(
    m for m in %r if m in sys.modules and m not in before)}))
""" % (BACKENDS,)

# Runs the command in-process and prints, as JSON, its exit status and which
# of Keras and the backends it imported.
_COMMAND_IMPORTS = """
import json, sys
sys.argv[0] = "keras-lrphase"  # as the console script, while it imports
from keras_lrphase import cli_entry
try:
    status = cli_entry.main(sys.argv[1:])
except SystemExit as stop:
    status = stop.code
print(json.dumps({"status": status, "imported": sorted(
    m for m in ("keras",) + %r if m in sys.modules)}))
""" % (BACKENDS,)


def _installed(module):
    return importlib.util.find_spec(module) is not None


def _run(code, *argv, backend):
    env = dict(os.environ, KERAS_BACKEND=backend)
    result = subprocess.run([sys.executable, "-c", code, *argv], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result, json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_package_imports_no_backend_but_the_chosen_one(backend):
    if not _installed(backend):
        pytest.skip(f"{backend} is not installed")
    _, report = _run(_IMPORTED_BY_THE_PACKAGE, backend=backend)
    assert report["backend"] == backend
    # TensorFlow (installed or not) and the other backends stay unloaded.
    assert report["imported"] in ([], [backend])


@pytest.mark.parametrize("argv", [
    ["--help"], ["train", "--help"], ["compare", "--help"],
    ["train", "--lr", "x"], ["compare", "--preset", "nope"], [],
])
def test_the_command_line_parses_without_keras(argv):
    result, report = _run(_COMMAND_IMPORTS, *argv, backend="tensorflow")
    assert report["imported"] == []
    if "--help" in argv:
        assert report["status"] == 0 and "usage: keras-lrphase" in result.stdout
    else:
        assert report["status"] == 2
        assert result.stderr.strip().splitlines()[-1].startswith("keras-lrphase")
        assert "error: " in result.stderr


def test_a_bad_value_names_the_flag_without_loading_keras():
    result, report = _run(_COMMAND_IMPORTS, "train", "--batch-size", "eight",
                          backend="tensorflow")
    assert report == {"status": 2, "imported": []}
    assert result.stderr.strip().splitlines()[-1] == (
        "keras-lrphase train: error: argument --batch-size: invalid int "
        "value: 'eight'")


def test_a_command_that_runs_registers_the_serializable_classes(tmp_path):
    """The package imported without Keras registers its classes before the
    command runs, and the switch that defers them does not leak."""
    code = """
import os, sys
sys.argv[0] = "keras-lrphase"  # as the console script, while it imports
from keras_lrphase import cli_entry
status = cli_entry.main(sys.argv[1:])
import keras
for name in ("LARS", "LARSWrapper", "ScaledLearningRate"):
    assert keras.saving.get_registered_object("keras_lrphase>" + name), name
assert not any("LRPHASE" in key for key in os.environ), os.environ
print(status)
"""
    result = subprocess.run(
        # Passes the checks without a backend; the data refuses the batch.
        [sys.executable, "-c", code, "train", "--batch-size", "4096",
         "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["2"]
    assert "Argument --batch-size must be at most" in result.stderr




@pytest.mark.parametrize("argv,message", [
    (["train", "--dataset", "digts"], "Argument --dataset must be one of"),
    (["train", "--epochs", "0"], "Argument --epochs must be an integer >= 1"),
    (["train", "--dataset", "folder"], "Argument --data-dir is required"),
    (["train", "--model", "resnet21"], "--model='resnet21'"),
    (["train", "--out", "/proc/lrphase-out"], "a folder cannot be created"),
    (["compare", "--preset", "cifar10-cpu"], "pass --data-dir"),
    (["compare", "--preset", "landscape-cpu"], "pass --data-dir"),
    (["compare", "--preset", "dmeo"], "did you mean 'demo'?"),
    (["compare", "--preset", "demo", "--epochs", "0"], "--epochs=0"),
])
def test_option_values_are_checked_before_a_backend_is_loaded(argv, message):
    """What needs no backend fails at once: no Keras, no TensorFlow."""
    result, report = _run(_COMMAND_IMPORTS, *argv, backend="tensorflow")
    assert report == {"status": 2, "imported": []}
    assert message in result.stderr.strip().splitlines()[-1]


def test_python_m_keras_lrphase_answers_help_without_keras():
    """`python -m keras_lrphase`, the console script's twin, imports no
    Keras for --help (`-X importtime` lists every module imported)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "keras_lrphase", "--help"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "usage: keras-lrphase" in result.stdout
    imported = {line.rsplit("|", 1)[-1].strip()
                for line in result.stderr.splitlines() if "|" in line}
    assert "keras_lrphase.cli" in imported
    assert not imported & {"keras", "tensorflow", "jax", "torch"}
