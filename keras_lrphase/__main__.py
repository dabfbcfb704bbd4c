"""`python -m keras_lrphase`: the `keras-lrphase` command line."""

import sys

from keras_lrphase.cli_entry import main

if __name__ == "__main__":
    sys.exit(main())
