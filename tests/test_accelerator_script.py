"""`scripts/accelerator_table2.sh` end to end on the CPU, tiny (the demo
preset, 2 epochs): a call stopped by its time limit, its archive carried
to a fresh folder (a fresh GPU machine), and a second call that finishes.
The script runs on JAX, as on the GPU machine, which has no TensorFlow.
"""

import os
import shutil
import signal
import subprocess
import time

import pytest

pytestmark = pytest.mark.backend_neutral

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "scripts", "accelerator_table2.sh")


def _call(out, minutes, timeout=600, **variables):
    env = dict(os.environ, KERAS_BACKEND="jax", **variables)
    return subprocess.run(["bash", SCRIPT, str(out), str(minutes)], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("variables, message", [
    (dict(PRESET="demo,bogus"), "PRESET: 'bogus' is not one of demo, "),
    (dict(PRESET="demo,demo"), "PRESET names a preset twice: 'demo,demo'"),
    (dict(PRESET="demo,stages-cpu", ONLY="small-batch"),
     "ONLY picks runs of one preset; PRESET names 2: 'demo,stages-cpu'"),
])
def test_bad_variables_stop_the_script_before_any_run(tmp_path, variables,
                                                      message):
    pytest.importorskip("jax")
    done = _call(tmp_path / "out", 1, timeout=120, **variables)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"accelerator_table2.sh: {message}" in done.stderr
    assert not any((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_a_stopped_call_continues_on_a_fresh_folder_from_its_archive(tmp_path):
    pytest.importorskip("jax")
    first, second = tmp_path / "first", tmp_path / "second"
    variables = dict(PRESET="demo", EPOCHS="2", JOBS="3",
                     DATA=str(tmp_path / "unused"))

    # The time limit: 0.02 minutes is up before the first run can finish
    # (starting Python and compiling take longer on any machine).
    timed_out = _call(tmp_path / "timed-out", 0.02, **variables)
    assert timed_out.returncode == 0, timed_out.stdout + timed_out.stderr
    assert "demo not finished (status 124)" in timed_out.stdout
    assert (tmp_path / "timed-out" / "demo.tar.gz").exists()

    # Stopped as a machine taken back stops it (SIGINT), once the first of
    # the 9 runs has finished and before the last can have: the stop does
    # not depend on the machine's speed.
    first.mkdir()
    env = dict(os.environ, KERAS_BACKEND="jax", **dict(variables, JOBS="1"))
    call = subprocess.Popen(["bash", SCRIPT, str(first), "8"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    marker = first / "demo" / "small-batch" / "seed0" / "summary.json"
    deadline = time.monotonic() + 300
    while not marker.exists() and call.poll() is None:
        assert time.monotonic() < deadline, "the first run did not finish"
        time.sleep(0.2)
    call.send_signal(signal.SIGINT)
    stdout, stderr = call.communicate(timeout=120)
    assert call.returncode == 0, stdout + stderr
    assert "demo not finished (status 130)" in stdout, stdout + stderr
    assert not (first / "demo" / "table.md").exists()
    progress = (first / "progress.md").read_text()
    assert progress.startswith("## demo\n")
    finished_first = [line.split(" | ")[0].lstrip("| ").replace("/seed", " (seed ")
                      + ")" for line in progress.splitlines() if "(done)" in line]
    assert "small-batch (seed 0)" in finished_first and len(finished_first) < 9

    second.mkdir()
    shutil.copy(first / "demo.tar.gz", second / "demo.tar.gz")
    finished = _call(second, 8, **variables)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    for run in finished_first:  # carried in the archive: not trained again
        assert f"{run}: done before" in finished.stdout
    table = (second / "demo" / "table.md").read_text()
    assert table in finished.stdout
    for label in ("small-batch", "large-batch", "two-phase"):
        assert f"| {label} | " in table
    progress = (second / "progress.md").read_text()
    # The table's rows (the "Finished:" line below it names them too).
    rows = [line for line in progress.splitlines()
            if line.startswith("| ") and "/seed" in line]
    assert len(rows) == 9 and all("| 2/2 (done) |" in row for row in rows), progress
    # The new archive holds the finished runs.
    listing = subprocess.run(["tar", "-tzf", str(second / "demo.tar.gz")],
                             capture_output=True, text=True, check=True).stdout
    assert "demo/table.md" in listing.splitlines()
