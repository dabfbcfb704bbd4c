"""What the command line's commands share: exit statuses and errors.

`cli.py` (`train`, `compare`) and `analyze_command.py` (`analyze`) both
report a problem as one line on stderr with an exit status, and check the
`--out` folder before any work. Importing this module imports no Keras.
"""

import os
import re
import sys
import tempfile

from keras_lrphase.training.run_config import RunConfig

USAGE_ERROR = 2
RUN_ERROR = 1
INTERRUPTED = 130


def fail(parser, message, status=USAGE_ERROR):
    """Writes `PROG: error: MESSAGE` (its first line, flags named) to
    stderr and returns the exit status."""
    first_line = str(message).strip().splitlines()[0] if str(message).strip() else "failed"
    sys.stderr.write(f"{parser.prog}: error: {flags(first_line)}\n")
    return status


def flags(message):
    """Names the command-line flags where a message names `RunConfig` fields."""
    names = set(RunConfig.__dataclass_fields__) | {
        "only", "seeds", "preset", "jobs", "distributed", "coordinator",
        "num_processes", "process_id"}
    for field in sorted(names, key=len, reverse=True):
        flag = "--" + field.replace("_", "-")
        message = re.sub(rf"`{field}`", flag, message)
        message = re.sub(rf"(?<![\w-]){field}=", f"{flag}=", message)
        message = re.sub(rf"schedule='([\w-]+)'", r"--schedule \1", message)
    return message


def matplotlib_installed():
    """Whether matplotlib can be imported, checked without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        return False


def setup_problem(out, needs_matplotlib=False):
    """What stops a run from writing its files, found before any work."""
    if needs_matplotlib and not matplotlib_installed():
        return ("this preset's results are figures, which need matplotlib: "
                "pip install matplotlib")
    path = os.path.abspath(out)
    if os.path.exists(path) and not os.path.isdir(path):
        return f"Argument --out must be a folder; it is a file. Received: --out={out!r}"
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        return (f"Argument --out must be a folder path; {probe!r} is a file. "
                f"Received: --out={out!r}")
    try:
        # Whether a folder can be made there: a read-only file system or a
        # folder such as /proc says so only when one tries.
        os.rmdir(tempfile.mkdtemp(prefix=".keras-lrphase-", dir=probe))
    except OSError as error:
        return (f"Argument --out must be a folder that can be written; a "
                f"folder cannot be created in {probe!r} "
                f"({error.strerror or error}). Received: --out={out!r}")
    return None


def status(error):
    """The exit status of an error raised while a command runs: input
    problems found while loading data are usage errors too."""
    return USAGE_ERROR if isinstance(error, ValueError) else RUN_ERROR
