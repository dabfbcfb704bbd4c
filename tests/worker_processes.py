"""Launching the processes of a local multi-worker test (one per worker)."""

import socket
import subprocess


def free_ports(count=1):
    """`count` distinct free TCP ports on localhost."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run_together(commands, env, timeout=240, cwd=None):
    """Starts every command at once, waits for all; asserts they succeeded.

    Returns:
        The `(stdout, stderr)` of each command. A command still running at
        `timeout` (or when another fails to finish) is killed.
    """
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=cwd)
             for command in commands]
    try:
        outputs = [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, (out + err)[-4000:]
    return outputs
