"""Agreeing on epoch-level decision inputs across the workers of a run."""

from keras_lrphase.distributed.reducer_selection import default_reducer
