"""The `keras-lrphase` command: checks without Keras, loads it quietly, runs.

The console script `keras-lrphase` and `python -m keras_lrphase` run
`main`. While either imports the package, `keras_lrphase/__init__.py`
leaves Keras unimported (`keras_lrphase._started_by_the_command`), so:

* `--help`, usage errors and every option value that needs no backend
  (a dataset name, an epoch budget, a missing `--data-dir`, a preset, an
  `--out` that cannot be written) answer at once, before a backend is
  loaded (TensorFlow alone takes seconds);
* a command that runs then loads Keras with the backend's start-up logging
  (TensorFlow's banner, CUDA probes on a CPU machine) silenced, unless
  `TF_CPP_MIN_LOG_LEVEL` is set by the user; errors still surface as
  errors, and a backend that is not installed is one line naming what to
  install.
"""

import contextlib
import os
import sys



@contextlib.contextmanager
def _native_stderr_silenced():
    """Sends the C++ libraries' start-up messages (fd 2) to /dev/null."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _load_backend():
    """Imports Keras (and so its backend) and registers the package's
    serializable classes; returns None, or the exit status 1 with a one-line
    message when the backend cannot be loaded."""
    quiet = "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    if quiet:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    try:
        with _native_stderr_silenced() if quiet else contextlib.nullcontext():
            import keras  # noqa: F401
        import keras_lrphase

        keras_lrphase._register_serializables()
    except ImportError as error:
        backend = os.environ.get("KERAS_BACKEND", "tensorflow")
        sys.stderr.write(
            f"keras-lrphase: error: Keras cannot load its backend "
            f"(KERAS_BACKEND={backend}): {error}. Install it with "
            f"`pip install {backend}`, or set KERAS_BACKEND to an installed "
            "backend.\n"
        )
        return 1
    return None


def main(argv=None):
    """Entry point: parses and checks the arguments, loads Keras, runs.

    Args:
        argv: List of strings or None (`sys.argv[1:]`).

    Returns:
        The exit status.
    """
    from keras_lrphase import cli

    args = cli.parse_args(argv)  # --help and usage errors exit here
    status = cli.check_args(args)  # what needs no backend
    if status is not None:
        return status
    status = _load_backend()
    if status is not None:
        return status
    return cli.run_command(args)


if __name__ == "__main__":
    sys.exit(main())
