"""What a `RunConfig` builds: its learning rate, optimizer and callbacks.

`run_training` trains with these; they are functions of the configuration
alone, so a program that trains its own way (its own model, data or loop)
can build the same optimizer and callbacks as `keras-lrphase train`.

Example:

>>> from keras_lrphase.training.run_config import RunConfig
>>> config = RunConfig(dataset="digits", epochs=10, schedule="step",
...                    decay_epochs=(5,), warmup_epochs=1,
...                    hessian_every=0).resolved()
>>> learning_rate = build_learning_rate(config, micro_steps_per_epoch=4)
>>> [round(float(learning_rate(step)), 4) for step in (19, 20)]
[0.1, 0.01]
>>> callbacks, controller = build_callbacks(config, 4, hessian_data=None)
>>> [type(c).__name__ for c in callbacks], controller
(['GradualWarmup'], None)
"""

import os

import keras

from keras_lrphase.callbacks.auto_decay import AutoDecay
from keras_lrphase.callbacks.freeze_layers import FreezeLayers
from keras_lrphase.callbacks.gradual_warmup import GradualWarmup
from keras_lrphase.callbacks.hessian_monitor import HessianMonitor
from keras_lrphase.callbacks.momentum_correction import MomentumCorrection
from keras_lrphase.callbacks.stage_checkpoint import StageCheckpoint
from keras_lrphase.callbacks.two_phase_lr import TwoPhaseLR
from keras_lrphase.optimizers.lars import LARS
from keras_lrphase.training.epoch_recorder import CONVERGENCE
from keras_lrphase.training.epoch_recorder import EXPLORATION
from keras_lrphase.training.epoch_recorder import NO_PHASE
from keras_lrphase.training.epoch_recorder import WARMUP


def build_learning_rate(config, micro_steps_per_epoch):
    """The optimizer's learning rate (float or schedule) for `config`.

    Args:
        config: A resolved `RunConfig`.
        micro_steps_per_epoch: Int. Batches per epoch as the optimizer's raw
            step counter sees them (optimizer steps times `accumulate`).
    """
    if config.schedule == "step" and config.decay_epochs:
        # PiecewiseConstantDecay gives the earlier value while
        # `step <= boundary`: the first step of epoch `e` (raw step
        # e * micro_steps_per_epoch) must already see the decayed value.
        boundaries = [int(e * micro_steps_per_epoch) - 1
                      for e in config.decay_epochs]
        values = [config.lr * config.decay_factor ** i
                  for i in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(
            boundaries, values)
    if config.schedule == "cosine":
        # Keras' own warmup: from lr / warmup_steps to lr, linearly, the
        # ramp of GradualWarmup (which is not added for this schedule).
        warmup_steps = config.warmup_epochs * micro_steps_per_epoch
        decay_steps = (config.epochs - config.warmup_epochs) * micro_steps_per_epoch
        if warmup_steps == 0:
            return keras.optimizers.schedules.CosineDecay(config.lr, decay_steps)
        return keras.optimizers.schedules.CosineDecay(
            config.lr / warmup_steps, decay_steps, warmup_target=config.lr,
            warmup_steps=warmup_steps)
    if config.schedule == "cosine-restarts":
        return keras.optimizers.schedules.CosineDecayRestarts(
            config.lr, config.restart_epochs * micro_steps_per_epoch,
            t_mul=config.restart_mult, m_mul=1.0, alpha=0.0)
    return float(config.lr)


def _two_phase_rules(config):
    """The rule arguments of `TwoPhaseLR` that `config` sets."""
    names = ("plateau_rule", "excursion_threshold", "decay_rule",
             "decay_threshold", "min_factor")
    return {name: getattr(config, name) for name in names
            if getattr(config, name) is not None}


def build_optimizer(config, learning_rate):
    """Momentum SGD, or LARS with trust coefficient `config.lars`."""
    accumulation = config.accumulate if config.accumulate > 1 else None
    if config.lars is not None:
        return LARS(learning_rate=learning_rate, momentum=config.momentum,
                    weight_decay=0.0, trust_coefficient=config.lars,
                    gradient_accumulation_steps=accumulation)
    return keras.optimizers.SGD(learning_rate=learning_rate,
                                momentum=config.momentum,
                                gradient_accumulation_steps=accumulation)


def build_callbacks(config, micro_steps_per_epoch, hessian_data, verbose=0):
    """The package callbacks of a run, in the order they must run.

    The LR controllers come before the checkpointing callbacks, so a
    checkpoint written at an epoch end includes their decisions there.

    Args:
        config: A resolved `RunConfig`.
        micro_steps_per_epoch: Int. Raw optimizer steps per epoch.
        hessian_data: `(x, y)` of the Hessian batch, or None when no
            callback needs it.
        verbose: 0 or 1. The controllers' decision lines.

    Returns:
        `(callbacks, controller)`: the list, and the `TwoPhaseLR` or
        `AutoDecay` in it (None for the fixed schedules).
    """
    callbacks, controller = [], None
    if config.warmup_epochs > 0 and config.schedule != "cosine":
        callbacks.append(GradualWarmup(config.warmup_epochs,
                                       steps_per_epoch=micro_steps_per_epoch))
    eigen_kwargs = {"seed": config.seed}
    if config.schedule == "two-phase":
        controller = TwoPhaseLR(
            hessian_data, config.epochs,
            warmup_epochs=config.warmup_epochs,
            plateau_patience=config.plateau_patience,
            extra_epochs_fraction=config.extra_epochs_fraction,
            min_delta=config.min_delta,
            decay_factor=config.decay_factor, eigen_kwargs=eigen_kwargs,
            verbose=verbose, **_two_phase_rules(config))
    elif config.schedule == "autodecay":
        options = {k: v for k, v in (
            ("window", config.autodecay_window),
            ("tolerance", config.autodecay_tolerance),
            ("drop_threshold", config.autodecay_drop_threshold)) if v is not None}
        controller = AutoDecay(decay_factor=config.decay_factor,
                               warmup_epochs=config.warmup_epochs,
                               verbose=verbose, **options)
    if controller is not None:
        callbacks.append(controller)
    if config.hessian_every > 0:
        # The same batch and arguments as TwoPhaseLR's: one estimate per
        # epoch, shared.
        callbacks.append(HessianMonitor(hessian_data,
                                        frequency=config.hessian_every,
                                        **eigen_kwargs))
    if config.freeze_epochs > 0:
        callbacks.append(FreezeLayers(config.freeze_epochs))
    if config.momentum_correction:
        callbacks.append(MomentumCorrection())
    if config.stage_checkpoints:
        callbacks.append(StageCheckpoint(
            os.path.join(config.stage_checkpoints, "stage{stage}.keras")))
    return callbacks, controller


def phase_function(config):
    """The `phase_fn` of `EpochRecorder` for `config`: the phase column.

    Warmup epochs are `"warmup"`; after them, two-phase runs are
    `"exploration"` or `"convergence"` (the controller's `lrphase_phase`),
    AutoDecay runs `"stage N"`, step decay `"convergence"` from its first
    decay on, and the other schedules `"n/a"`.

    Args:
        config: A resolved `RunConfig`.
    """
    warmup = config.warmup_epochs

    def phase(epoch, logs):
        if epoch < warmup:
            return WARMUP
        if config.schedule == "two-phase":
            return CONVERGENCE if logs.get("lrphase_phase") == 1 else EXPLORATION
        if config.schedule == "autodecay":
            return f"stage {int(logs.get('autodecay_stage', 0)) + 1}"
        if config.schedule == "step":
            first = config.decay_epochs[0] if config.decay_epochs else None
            return CONVERGENCE if first is not None and epoch >= first else EXPLORATION
        return NO_PHASE

    return phase
