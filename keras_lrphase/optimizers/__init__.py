"""Layer-wise adaptive optimizers: `LARS` and `LARSWrapper`."""

from keras_lrphase.optimizers.lars import LARS
from keras_lrphase.optimizers.lars_wrapper import LARSWrapper

__all__ = ["LARS", "LARSWrapper"]
