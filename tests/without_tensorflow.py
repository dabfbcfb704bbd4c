"""Runs `keras-lrphase` as in an environment without TensorFlow installed.

`python tests/without_tensorflow.py ARGS...` blocks the imports of
TensorFlow and TFDS (as if they were not installed), then runs the CLI.
"""

import sys

for name in ("tensorflow", "tensorflow_datasets", "tf_keras"):
    sys.modules[name] = None

from keras_lrphase.cli import main  # noqa: E402

if __name__ == "__main__":
    status = main(sys.argv[1:])
    assert "tensorflow" not in [m for m, v in sys.modules.items() if v is not None]
    sys.exit(status)
