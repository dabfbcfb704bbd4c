"""The `keras-lrphase` command: quiets the backend's start-up, then runs it.

A top-level module, so that it runs before `keras_lrphase` (which imports
Keras, and so its backend, to register its serializable classes) is
imported: the backend's start-up logging (TensorFlow's banner, CUDA probes
on a CPU machine) is silenced unless `TF_CPP_MIN_LOG_LEVEL` is set by the
user; errors still surface as errors. `python -m keras_lrphase` runs the
same command without this.
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


def main(argv=None):
    """Entry point: sets up logging, then runs `keras_lrphase.cli.main`.

    Returns:
        The exit status.
    """
    if "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
        with _native_stderr_silenced():
            try:
                import keras  # noqa: F401  (loads the backend quietly)
            except ImportError:
                pass  # re-raised below, with its message on stderr
    try:
        from keras_lrphase.cli import main as cli_main
    except ImportError as error:
        backend = os.environ.get("KERAS_BACKEND", "tensorflow")
        install = {"jax": 'pip install "keras-lrphase[jax]"'}.get(
            backend, f"pip install {backend}")
        sys.stderr.write(
            f"keras-lrphase: error: Keras cannot load its backend "
            f"(KERAS_BACKEND={backend}): {error}. Install it with "
            f"`{install}`, or set KERAS_BACKEND to an installed backend.\n"
        )
        return 1
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
