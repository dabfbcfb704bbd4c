"""Scripted losses, eigenvalues and recorders for the LR controller tests.

Decisions of the LR controllers are driven by epoch losses and Hessian
eigenvalues; these helpers replace both with scripted sequences so that a
`model.fit` run has a hand-computed decision trace, while the model still
trains for real (its weights follow the learning rates decided).
"""

import dataclasses

import keras
import numpy as np
import pytest

# Trace A: epochs=12, plateau_patience=2, warmup_epochs=0, fraction 1/3.
# best: 1.0, 0.9, 0.8 (epoch 2); epoch 3 wait 1, epoch 4 wait 2 -> plateau
# at epoch 4, n=5, alpha=round(5/3)=2 -> switch at epoch 6 (n+alpha=7
# completed). Epoch 6: h0=1.0, f0=0.72. Epoch 7: 1.2>1.0, 0.74>0.72 ->
# decay, h0=0. Epoch 8: both rise again (1.5>1.2, 0.76>0.74) but h0=0 ->
# blocked; h0=1.5, f0=0.76. Epoch 9: 1.6>1.5, 0.77>0.76 -> decay. Epoch 10:
# blocked (h0=0); h0=1.0, f0=0.71. Epoch 11: loss rises 0.76>0.71 but
# eigenvalue falls 0.9<1.0 -> no decay.
TRACE_A_LOSSES = [1.0, 0.9, 0.8, 0.85, 0.81, 0.7, 0.72, 0.74, 0.76, 0.77, 0.71, 0.76]
TRACE_A_EIGENVALUES = [1.0, 1.2, 1.5, 1.6, 1.0, 0.9]  # epochs 6..11
TRACE_A = dict(
    epochs=12, plateau_patience=2, plateau_epoch=4, switch_epoch=6,
    decay_epochs=[7, 9],
)
# Multiplier in force during each epoch of trace A (decays act from the
# epoch after the decision).
TRACE_A_FACTORS = [1.0] * 8 + [0.5] * 2 + [0.25] * 2


class ScriptedLoss(keras.callbacks.Callback):
    """Overwrites `logs[key]` with `losses[epoch]`; place it first."""

    def __init__(self, losses, key="loss"):
        super().__init__()
        self.losses = list(losses)
        self.key = key

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.losses[epoch]


@dataclasses.dataclass
class ScriptedResult:
    value: float
    vector: list
    iterations: int


class ScriptedEstimator:
    """Returns `values[k]` on its k-th estimate of a run.

    The call index travels in the eigenvector (`vector[0][0] = k + 1`), so
    it is only right after a resume if the warm-start vector was restored.
    """

    def __init__(self, values):
        self.values = list(values)
        self.initial_vectors = []
        self.batches = []

    def __call__(self, model, x, y, initial_vector=None):
        assert isinstance(model, keras.Model)
        self.initial_vectors.append(initial_vector)
        self.batches.append((x, y))
        k = 0 if initial_vector is None else int(initial_vector[0][0])
        vector = [np.array([k + 1.0], dtype="float32"), np.zeros((2, 2), "float32")]
        return ScriptedResult(value=self.values[k], vector=vector, iterations=k + 3)


class StepLearningRates(keras.callbacks.Callback):
    """Records the learning rate each batch is trained with (tests only)."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_begin(self, batch, logs=None):
        self.rates.append(float(keras.ops.convert_to_numpy(
            self.model.optimizer.learning_rate
        )))


class EpochRecorder(keras.callbacks.Callback):
    """Records selected epoch logs (place it after the controllers)."""

    KEYS = ("learning_rate", "lrphase_phase", "hessian_max_eigenvalue")

    def __init__(self, rows=None):
        super().__init__()
        self.rows = [] if rows is None else rows

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append((epoch,) + tuple(logs.get(k) for k in self.KEYS))


class Crash(keras.callbacks.Callback):
    """Raises at the beginning of epoch `epoch` (simulates a failure)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise Interrupted(epoch)


class Interrupted(RuntimeError):
    pass


def regression_data(samples=8, features=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, features)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0]][:features], "float32") + 0.5).astype("float32")
    return x, y


def tiny_model(optimizer, features=2, seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((features,)), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def warmup_ramp(base, steps, warmup_steps, initial_fraction, scales):
    """Float32 reference of ControlledLearningRate's per-step value."""
    f0 = np.float32(initial_fraction)
    out = []
    for s, scale in zip(range(steps), scales):
        if s < warmup_steps:
            ramp = f0 + (np.float32(1.0) - f0) * (
                np.float32(s) / np.float32(max(warmup_steps, 1))
            )
        else:
            ramp = np.float32(1.0)
        out.append(float(np.float32(base) * np.float32(scale) * ramp))
    return out

# Algorithm 1 exactly as printed (the controller's rules named "paper"): the
# scripted traces of these tests were computed by hand with it.
PAPER_RULES = dict(plateau_rule="paper", decay_rule="paper", min_factor=0.0)


def warns_nothing_learned(epoch=2):
    """A scripted loss flat from its first epoch plateaus at once (the
    earliest switch, to keep a trace short), so TwoPhaseController says that
    nothing was learned: the tests that script one assert it."""
    return pytest.warns(UserWarning, match=(
        f"TwoPhaseController: loss plateau detected at epoch {epoch} while "
        "the loss .* nothing seems to have been learned"))


def warns_no_plateau_by_half_of(epochs):
    """TwoPhaseLR's note when half of an `epochs`-epoch `fit` ran without a
    plateau (a scripted loss that falls, or that warmup keeps from counting)."""
    return pytest.warns(UserWarning, match=(
        f"TwoPhaseLR: half of the {epochs} epochs have run \\(epoch "
        f"{(epochs + 1) // 2}\\) and no loss plateau has been detected"))
