"""Runs `keras-lrphase` as in an environment without TensorFlow installed.

`python tests/without_tensorflow.py ARGS...` blocks the imports of
TensorFlow and TFDS (as if they were not installed), then runs the CLI.
Importing this module (pytest's doctest collection does) blocks nothing.
"""

import sys


def main(argv):
    for name in ("tensorflow", "tensorflow_datasets", "tf_keras"):
        sys.modules[name] = None
    from keras_lrphase.cli import main as cli_main

    status = cli_main(argv)
    loaded = [m for m, module in sys.modules.items() if module is not None]
    assert "tensorflow" not in loaded
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
