"""Running a test script once per Keras backend, each in its own process.

The Keras backend is fixed when Keras is imported, so a test that compares
backends runs its script in one subprocess per backend, all at once; the
script prints one JSON object as the last line of its stdout.
"""

import importlib.util
import json
import os
import subprocess
import sys


def installed_backends():
    """The Keras backends whose package is importable here."""
    return [b for b in ("tensorflow", "jax", "torch")
            if importlib.util.find_spec(b) is not None]


def run_on_backends(script, arguments, backends, timeout, extra=None):
    """Runs `python script *arguments` under each backend; returns the JSON.

    Args:
        script: Path of the script.
        arguments: List of command-line arguments for every backend.
        backends: The `KERAS_BACKEND` values to run.
        timeout: Seconds each process may take (then it is killed).
        extra: Dict `{backend: [arguments]}` added for some backends.

    Returns:
        A dict `{backend: the last stdout line, parsed}`; asserts that each
        process succeeded and reports its own backend.
    """
    # One intra-op thread: the tensors are tiny, and a thread pool costs
    # many times the work on a shared, busy CPU.
    processes = {}
    for backend in backends:
        env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu",
                   TF_CPP_MIN_LOG_LEVEL="3", OMP_NUM_THREADS="1")
        argv = [sys.executable, os.path.abspath(script), *map(str, arguments),
                *(extra or {}).get(backend, [])]
        processes[backend] = subprocess.Popen(
            argv, env=env, cwd=os.path.dirname(os.path.abspath(script)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    try:
        for backend, process in processes.items():
            try:
                stdout, stderr = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
            assert process.returncode == 0, f"{backend}: {stderr[-3000:]}"
            results[backend] = json.loads(stdout.strip().splitlines()[-1])
            assert results[backend]["backend"] == backend
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    return results
