"""Ctrl-C on `compare --jobs`: the runs stop quietly and keep their state.

A terminal's Ctrl-C (and `scripts/accelerator_table2.sh`'s timer) sends
SIGINT to the whole process group: the parent and every worker process,
busy or idle. A worker that has finished its run and waits for the next
must not print a traceback.
"""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

# One short run and one long run in two worker processes: once the short
# run has finished its worker is idle, waiting for work that never comes.
SCRIPT = textwrap.dedent("""
    import sys
    from keras_lrphase.training import compare
    from keras_lrphase.presets import PresetRun
    from keras_lrphase.training.run_config import RunConfig

    def task(label, epochs, i):
        config = RunConfig(dataset="digits", epochs=epochs, batch_size=64,
                           train_size=256, test_size=100, pipeline="numpy",
                           hessian_every=0).resolved()
        return (PresetRun(label, {}), config, f"{sys.argv[1]}/{label}",
                f"[{i}/2]", label)

    try:
        compare._run_parallel([task("short", 1, 1), task("long", 400, 2)], 2)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
""")


def test_ctrl_c_stops_the_jobs_without_tracebacks(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    # A child that hung without exiting would block `readline` for good:
    # past the deadline the watchdog kills it, which ends its output.
    watchdog = threading.Timer(
        560, lambda: process.poll() is None and os.killpg(process.pid,
                                                         signal.SIGKILL))
    watchdog.start()
    try:
        lines = []
        deadline = time.monotonic() + 500
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if line.startswith("[1/2] short: best val accuracy") or not line:
                break
        assert lines[-1].startswith("[1/2] short: best val accuracy"), lines
        # The long run trains (an epoch done), the short run's worker idles.
        history = tmp_path / "long" / "history.csv"
        while not history.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert history.exists()
        # The workers first, as the terminal does, and the parent a moment
        # later, so that a worker's report is not cut short by the parent
        # terminating it.
        workers = subprocess.run(["pgrep", "-P", str(process.pid)],
                                 capture_output=True, text=True).stdout.split()
        for pid in workers:
            os.kill(int(pid), signal.SIGINT)
        time.sleep(2)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert "interrupted" in out
    # multiprocessing reports a worker's uncaught KeyboardInterrupt as
    # "Process SpawnProcess-N:" and its traceback (cut short, at times, by
    # the parent terminating the worker).
    for noise in ("Process SpawnProcess", "Traceback", "KeyboardInterrupt"):
        assert noise not in err, err
    # The long run kept its checkpoint: `compare` continues it.
    assert (tmp_path / "long" / "backup").is_dir()
