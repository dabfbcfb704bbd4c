"""Running and recording training configurations (what the CLI runs)."""

from keras_lrphase.training.epoch_recorder import COLUMNS
from keras_lrphase.training.epoch_recorder import EpochRecorder
from keras_lrphase.training.plots import plot_compare
from keras_lrphase.training.plots import plot_curves
from keras_lrphase.training.run_config import RunConfig
from keras_lrphase.training.runner import run_training

__all__ = ["COLUMNS", "EpochRecorder", "RunConfig", "plot_compare",
           "plot_curves", "run_training"]
