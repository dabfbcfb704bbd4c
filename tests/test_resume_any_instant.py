"""A run killed (SIGKILL) at random instants resumes to the uninterrupted result.

`kill_resume_worker.py` trains with GradualWarmup, TwoPhaseLR (real Hessian
estimates, momentum correction, a state_path copy), StageCheckpoint and the
package's BackupAndRestore. The test kills it at random moments of
training, restarts it until it finishes, and compares everything with an
uninterrupted run: the weights, the optimizer state, the controller's
state, the learning rate of every step and every decision.
`benchmarks/kill_resume.py` runs the same with Keras' own BackupAndRestore
and counts the kills it cannot recover from.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "kill_resume_worker.py")


def start(workdir, backend, backup="package"):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.Popen([sys.executable, WORKER, str(workdir), backup], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_ready(process, workdir, timeout=300):
    ready = os.path.join(workdir, "ready")
    deadline = time.monotonic() + timeout
    while not os.path.exists(ready):
        if process.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def run_to_completion(workdir, backend, backup="package"):
    process = start(workdir, backend, backup)
    wait_ready(process, workdir)
    started = time.monotonic()
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err.decode()[-3000:]
    return time.monotonic() - started


def journal(workdir):
    """Epoch -> its line; a re-run epoch must repeat its line exactly."""
    lines = {}
    with open(os.path.join(workdir, "epochs.jsonl")) as f:
        for raw in f:
            line = json.loads(raw)
            if line["epoch"] in lines:
                assert lines[line["epoch"]] == line, line["epoch"]
            lines[line["epoch"]] = line
    return lines


def killed_run(workdir, backend, kills, duration, seed, backup="package"):
    rng = random.Random(seed)
    killed = 0
    while killed < kills:
        if os.path.exists(os.path.join(workdir, "result.json")):
            break  # the run finished (a kill during Python's exit is no kill)
        ready = os.path.join(workdir, "ready")
        if os.path.exists(ready):
            os.remove(ready)
        process = start(workdir, backend, backup)
        if not wait_ready(process, workdir):
            _, err = process.communicate()
            raise AssertionError(err.decode()[-3000:])
        time.sleep(rng.uniform(0.0, duration))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.communicate()  # reaps it and closes its stderr pipe
        if process.returncode != -signal.SIGKILL:  # it finished before the kill
            break
        killed += 1
    if not os.path.exists(os.path.join(workdir, "result.json")):
        run_to_completion(workdir, backend, backup)
    return killed


def _without_clocks(sidecar):
    """A stage sidecar without its path and its logs' wall-clock seconds
    (`epoch_time`, `hessian_time`, ...), which differ between any two runs."""
    sidecar = {k: v for k, v in sidecar.items() if k != "path"}
    if isinstance(sidecar.get("logs"), dict):
        sidecar["logs"] = {k: v for k, v in sidecar["logs"].items()
                           if not k.endswith("_time")}
    return sidecar


def compare(reference, interrupted):
    """Asserts that the interrupted run ended exactly as the reference."""
    from pathlib import Path

    reference, interrupted = Path(reference), Path(interrupted)
    want = json.loads((reference / "result.json").read_text())
    got = json.loads((interrupted / "result.json").read_text())
    assert got["controller"] == want["controller"]
    assert got["learning_rate"] == want["learning_rate"]
    assert got["weights"] == want["weights"]
    assert got["optimizer"] == want["optimizer"]
    assert journal(interrupted) == journal(reference)
    assert want["controller"]["state"]["decay_epochs"]  # decisions happened
    # No temporary file is left behind, and the stage models are the same.
    assert sorted(os.listdir(interrupted / "state")) == ["two_phase.json"]
    assert not (interrupted / "backup").exists()
    assert sorted(os.listdir(interrupted / "stages")) == sorted(
        os.listdir(reference / "stages"))
    for name in os.listdir(reference / "stages"):
        if name.endswith(".json"):
            a = json.loads((reference / "stages" / name).read_text())
            b = json.loads((interrupted / "stages" / name).read_text())
            assert _without_clocks(a) == _without_clocks(b)


def check_resumes_exactly(tmp_path, backend, kills, seed):
    """Kills runs at random instants until `kills` kills; each must resume."""
    reference = tmp_path / "reference"
    reference.mkdir()
    duration = run_to_completion(reference, backend)
    done, attempt = 0, 0
    while done < kills:
        interrupted = tmp_path / f"interrupted{attempt}"
        interrupted.mkdir()
        # Each restart resumes from the last checkpoint, so kills within
        # half a run land all over it.
        done += killed_run(interrupted, backend, kills - done, duration / 2,
                           seed + attempt)
        compare(reference, interrupted)
        attempt += 1


@pytest.mark.jax
@pytest.mark.parametrize(
    "backend",
    # JAX's run compiles anew in each of the four processes (about 70 s
    # here): slow; the forty-kill test below covers both backends too.
    ["tensorflow", pytest.param("jax", marks=pytest.mark.slow)],
)
def test_killed_three_times_resumes_exactly(tmp_path, backend):
    pytest.importorskip(backend)
    check_resumes_exactly(tmp_path, backend, kills=3, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_killed_forty_times_resumes_exactly(tmp_path, backend):
    pytest.importorskip(backend)
    check_resumes_exactly(tmp_path, backend, kills=40, seed=2)
