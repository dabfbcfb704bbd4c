"""Warnings that point at the caller's code, not at the package's or Keras'."""

import os
import sys
import warnings

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _skipped_dirs():
    """The package's folder, and Keras' once imported: a callback's warning
    is raised inside Keras' callback list, under the user's `fit` call."""
    dirs = [_PACKAGE_DIR + os.sep]
    keras = sys.modules.get("keras")
    if getattr(keras, "__file__", None):
        dirs.append(os.path.dirname(os.path.abspath(keras.__file__)) + os.sep)
    return tuple(dirs)


def warn(message, category=UserWarning):
    """`warnings.warn` attributed to the first frame outside the package and
    Keras (the line of a program that called `fit` or a package function)."""
    skipped = _skipped_dirs()
    frame, level = sys._getframe(1), 2
    while frame is not None and os.path.abspath(
        frame.f_code.co_filename
    ).startswith(skipped):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
