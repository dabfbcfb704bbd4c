"""`benchmarks/accelerator_throughput.py` end to end on CPU, tiny setting."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.backend_neutral

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "benchmarks", "accelerator_throughput.py")


def _run(*args, timeout=600):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("args, message", [
    (["--backends", "tensorflow,tf"],
     "argument --backends: 'tf' is not one of tensorflow, jax, torch"),
    (["--batch-sizes", "16,0"],
     "argument --batch-sizes: 0 must be a positive integer"),
    (["--batch-sizes", "16,big"],
     "argument --batch-sizes: 'big' is not an integer"),
    (["--precisions", "fp16"],
     "argument --precisions: 'fp16' is not one of fp32, bf16"),
    (["--backends", "tensorflow", "--pipelines", "device"],
     "argument --pipelines: 'device' runs on the jax and torch backends only"),
    (["--pipelines", "gpu"],
     "argument --pipelines: 'gpu' is not one of auto, numpy, device"),
    (["--batch-sizes", "64", "--images", "100"],
     "argument --images: 100 must be at least 2 batches"),
])
def test_bad_flags_fail_before_any_work(args, message):
    done = _run(*args, timeout=60)
    assert done.returncode == 2
    assert message in done.stderr
    assert "#" not in done.stderr  # no run was started


@pytest.mark.slow
def test_tiny_cpu_run_reports_every_cell():
    if importlib.util.find_spec("torch") is None:
        pytest.skip("the PyTorch reference needs torch")
    backends = [b for b in ("tensorflow", "torch")
                if importlib.util.find_spec(b) is not None]
    done = _run("--backends", ",".join(backends), "--batch-sizes", "16",
                "--precisions", "fp32", "--images", "64", "--epochs", "2",
                "--no-compile", "--device", "cpu")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines[2].startswith("| backend | pipeline | batch | precision |")
    result = json.loads(lines[-1])
    assert result["device"] == "cpu" and result["torch_compile"] is False
    cells = {(c["backend"], c["batch_size"], c["precision"]): c
             for c in result["cells"]}
    assert sorted(cells) == sorted((b, 16, "fp32") for b in backends)
    for (backend, _, _), cell in cells.items():
        ips = cell["package_images_per_second"]
        ref = cell["reference_images_per_second"]
        assert ips > 0 and ref > 0
        assert cell["keras_device"] == "cpu"
        assert cell["ratio"] == ips / ref
        minutes = 300 * 50000 / ips / 60
        assert cell["table2_row_minutes"] == minutes
        # auto: the numpy pipeline on TensorFlow, the device one elsewhere.
        pipeline = "numpy" if backend == "tensorflow" else "device"
        assert cell["pipeline"] == pipeline
        key = f"{backend} {pipeline} fp32 batch 16"
        assert result["table2_row_minutes"][key] == minutes
