"""Agreeing on epoch-level decision inputs across the workers of a run."""

from keras_lrphase.distributed.reduction import default_reducer
