"""Records the Hessian spectrum (top eigenvalues, trace, density) every few epochs."""

import math
import os
import time
import warnings

import keras

from keras_lrphase._validation import check_bool
from keras_lrphase._validation import check_choice
from keras_lrphase._validation import check_integer
from keras_lrphase._validation import check_optional_integer
from keras_lrphase._validation import check_path
from keras_lrphase._validation import check_positive
from keras_lrphase._validation import check_seed
from keras_lrphase._validation import check_verbose
from keras_lrphase._validation import fail
from keras_lrphase.backend import keras_compat
from keras_lrphase.hessian.operator import CURVATURES
from keras_lrphase.hessian.operator import HessianOperator
from keras_lrphase.hessian.operator import batches_of
from keras_lrphase.hessian.spectrum import hessian_spectrum
from keras_lrphase.hessian.spectrum_records import epoch_record_path
from keras_lrphase.hessian.spectrum_records import record_epochs
from keras_lrphase.hessian.spectrum_records import spectrum_record
from keras_lrphase.hessian.spectrum_records import write_spectrum_record


def spectrum_log_keys(layer, k, trace=True):
    """The `logs` keys of one measured layer: eigenvalues, trace, its error.

    `"all"` gives `hessian_eigenvalue_1`, ..., `hessian_trace`,
    `hessian_trace_error`; a layer `name` gives `name/hessian_eigenvalue_1`,
    and so on (TensorBoard groups them by layer).

    >>> spectrum_log_keys("logits", 2)
    ['logits/hessian_eigenvalue_1', 'logits/hessian_eigenvalue_2', 'logits/hessian_trace', 'logits/hessian_trace_error']
    """
    prefix = "" if layer == "all" else f"{layer}/"
    names = [f"hessian_eigenvalue_{i}" for i in range(1, k + 1)]
    if trace:
        names += ["hessian_trace", "hessian_trace_error"]
    return [prefix + name for name in names]


class HessianSpectrumMonitor(keras.callbacks.Callback):
    """Logs and saves the Hessian spectrum every few epochs.

    At the end of every `frequency`-th epoch, for each entry of `layers`
    (every weight, a layer, or a group of layers), it computes on `data`:
    the `k` largest eigenvalues of the loss Hessian (Lanczos), its trace
    (Hutch++) and its spectral density (stochastic Lanczos quadrature),
    with `hessian_spectrum`. The eigenvalues and the trace go to `logs`
    under stable keys (`spectrum_log_keys`: `hessian_eigenvalue_1`, ...,
    `hessian_trace`, `hessian_trace_error`, prefixed by `name/` for a
    layer), NaN in the other epochs so that `CSVLogger`, which fixes its
    columns at the first epoch, `History` and `TensorBoard` placed after it
    record them. With `directory`, the whole result of each computed epoch
    (eigenvalues, residuals, trace, density with its nodes and weights) is
    written to `directory/epoch_0005.json` (`load_spectrum_records` reads
    them back; `plot_eigenvalue_trajectories` and `plot_hessian_density`
    draw them).

    Use it to follow sharpness and the shape of the spectrum through
    training (the two-phase paper's Figure 3, across learning-rate phases),
    at a cost of about `k + trace_probes + density_steps` Hessian-vector
    products (each ~2-3 gradients of `data`) per layer and computed epoch.

    Resuming: every epoch's random vectors come from `seed` and the epoch,
    so the records depend on the weights only. A `fit` that starts at
    epoch `e` (resumed by `BackupAndRestore`, or `initial_epoch=e`) deletes
    the records of epochs after `e` from `directory`, which a killed run may
    have written past its last checkpoint, and computes them again.

    Args:
        data: The sample the spectrum is measured on: `(x, y)` arrays, a
            `tf.data.Dataset`, a `keras.utils.PyDataset` or an iterable of
            `(x, y)` batches, read once here (see `HessianOperator`).
        directory: Path or None. Folder of the JSON records (written by the
            chief worker only). Defaults to `None`: logs only.
        frequency: Int >= 1. Compute at the end of epochs `frequency`,
            `2 * frequency`, ... Defaults to `1`.
        layers: A list of what to measure, each `"all"`, a layer, a layer
            name, or a list of them (measured together). Defaults to
            `("all",)`.
        k: Int >= 0. Top eigenvalues. Defaults to `5`.
        trace_probes: Int, 0 or >= 6. Hutch++ products. Defaults to `30`.
        density_steps: Int >= 0. Lanczos steps of the density. Defaults to
            `40`.
        density_probes: Int >= 1. Probes of the density. Defaults to `1`.
        loss: A Keras loss, or None for the compiled loss. Defaults to
            `None`.
        curvature: `"hessian"` or `"gauss_newton"`. Defaults to
            `"hessian"`.
        training: Bool. BatchNorm/Dropout in training mode (see
            `HessianOperator`). Defaults to `False`.
        batch_size: Int. Batch size for array data. Defaults to `128`.
        steps: Int or None. Batches read from a dataset. Defaults to `None`.
        tolerance: Float. Relative residual of the eigenvalues. Defaults to
            `1e-3`.
        max_iterations: Int. Most products of the eigenvalues. Defaults to
            `100`.
        seed: Int >= 0. Seed of the random vectors (with the epoch).
            Defaults to `0`.
        reducer: `MetricReducer` or None: sums the products over workers,
            each passing its own shard as `data`. Defaults to `None`:
            `keras_lrphase.distributed.default_reducer()`.
        verbose: 0 or 1. With 1, prints one line per computed epoch.
            Defaults to `0`.

    Example:

    >>> import numpy as np, keras
    >>> from keras_lrphase.callbacks.hessian_spectrum_monitor import (
    ...     HessianSpectrumMonitor)
    >>> x = np.random.rand(64, 4).astype("float32")
    >>> y = np.random.randint(0, 3, 64)
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True))
    >>> monitor = HessianSpectrumMonitor((x, y), frequency=2, k=2,
    ...                                  trace_probes=6, density_steps=5)
    >>> history = model.fit(x, y, epochs=2, verbose=0, callbacks=[monitor])
    >>> [bool(np.isnan(v)) for v in history.history["hessian_eigenvalue_1"]]
    [True, False]

    References:
        Ghorbani, Krishnan, Xiao, "An Investigation into Neural Net
        Optimization via Hessian Eigenvalue Density", ICML 2019. Yao,
        Gholami, Keutzer, Mahoney, "PyHessian: Neural Networks Through the
        Lens of the Hessian", 2020. "Achieving Small-Batch Accuracy with
        Large-Batch Scalability via Adaptive Learning Rate Adjustment"
        (ICLR 2022 submission), Figure 3.
    """

    def __init__(
        self, data, directory=None, *, frequency=1, layers=("all",), k=5,
        trace_probes=30, density_steps=40, density_probes=1, loss=None,
        curvature="hessian", training=False, batch_size=128, steps=None,
        tolerance=1e-3, max_iterations=100, seed=0, reducer=None, verbose=0,
    ):
        super().__init__()
        self.directory = check_path("directory", directory)
        self.frequency = check_integer("frequency", frequency, 1)
        self.k = check_integer("k", k, 0)
        self.trace_probes = check_integer("trace_probes", trace_probes, 0)
        if 0 < self.trace_probes < 6:
            fail("trace_probes", trace_probes, "must be 0 or an integer >= 6")
        self.density_steps = check_integer("density_steps", density_steps, 0)
        self.density_probes = check_integer("density_probes", density_probes, 1)
        self.curvature = check_choice("curvature", curvature, CURVATURES)
        self.training = check_bool("training", training)
        self.batch_size = check_integer("batch_size", batch_size, 1)
        self.steps = check_optional_integer("steps", steps, 1)
        self.max_iterations = check_integer("max_iterations", max_iterations, 1)
        self.tolerance = check_positive("tolerance", tolerance)
        self.seed = check_seed("seed", seed)
        if self.seed is None:
            fail("seed", seed, "must be an integer >= 0 (the records must "
                 "not depend on the run's history)")
        self.verbose = check_verbose(verbose)
        if isinstance(layers, (str, keras.layers.Layer)):
            layers = [layers]
        if not isinstance(layers, (list, tuple)) or not layers:
            fail("layers", layers, "must be a non-empty list of 'all', "
                 "layers, layer names or lists of them")
        self.layers = list(layers)
        self.loss = loss
        if reducer is None:
            from keras_lrphase.distributed.reducer_selection import default_reducer

            reducer = default_reducer()
        self.reducer = reducer
        self._batches = batches_of(data, self.batch_size, self.steps)
        self._operators = None
        self._started = False
        self.last_results = {}

    # -- Keras hooks -----------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._started = False
        if self._operators is None or self._operators[0].model is not self.model:
            self._operators = [
                HessianOperator(
                    self.model, self._batches, layer=layer, loss=self.loss,
                    curvature=self.curvature, training=self.training,
                    reducer=self.reducer)
                for layer in self.layers
            ]
            names = [operator.layer for operator in self._operators]
            if len(set(names)) != len(names):
                fail("layers", self.layers, "must measure each set of "
                     "weights once")
            for operator in self._operators:
                if self.k > operator.size:
                    fail("k", self.k, f"must be at most the {operator.size} "
                         f"weights of {operator.layer!r}")
        self.keys = [key for operator in self._operators
                     for key in spectrum_log_keys(operator.layer, self.k,
                                                  bool(self.trace_probes))]

    def on_epoch_begin(self, epoch, logs=None):
        if self._started:
            return
        self._started = True
        if self.directory is None or not self.reducer.is_chief:
            return
        # Records after the epoch this `fit` starts at belong to a run that
        # went further (killed before its checkpoint): computed again.
        later = [e for e in record_epochs(self.directory) if e > epoch]
        if later and epoch == 0:
            warnings.warn(
                f"HessianSpectrumMonitor: training starts at epoch 0; the "
                f"{len(later)} records in directory={self.directory!r} are "
                "replaced.", stacklevel=2)
        for e in later:
            os.remove(epoch_record_path(self.directory, e))

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            logs = {}
        if (epoch + 1) % self.frequency != 0:
            logs.update({key: math.nan for key in self.keys})
            return
        if self._operators is None:
            self.on_train_begin()
        started = time.perf_counter()
        results = {}
        for index, operator in enumerate(self._operators):
            operator.refresh()
            results[operator.layer] = hessian_spectrum(
                operator, k=self.k, trace_probes=self.trace_probes,
                density_steps=self.density_steps,
                density_probes=self.density_probes,
                max_iterations=self.max_iterations, tolerance=self.tolerance,
                seed=self.seed + 1009 * (epoch + 1) + index)
        seconds = time.perf_counter() - started
        self.last_results = results
        for name, result in results.items():
            logs.update(self._log_values(name, result))
        if self.directory is not None and self.reducer.is_chief:
            write_spectrum_record(
                epoch_record_path(self.directory, epoch + 1),
                spectrum_record(results, epoch=epoch + 1, seconds=seconds))
        if self.verbose:
            parts = []
            for name, result in results.items():
                if result.eigenvalues is not None:
                    parts.append(f"{name}: lambda_1 = "
                                 f"{result.eigenvalues.values[0]:.4g}")
                if result.trace is not None:
                    parts.append(f"trace = {result.trace.value:.4g} +- "
                                 f"{result.trace.standard_error:.2g}")
            keras_compat.print_msg(
                f"Epoch {epoch + 1}: HessianSpectrumMonitor {'; '.join(parts)} "
                f"({seconds:.1f} s)")

    def _log_values(self, name, result):
        keys = spectrum_log_keys(name, self.k)
        values = {}
        if self.k:
            values.update(zip(keys[:self.k],
                              map(float, result.eigenvalues.values)))
        if self.trace_probes:
            values[keys[self.k]] = result.trace.value
            values[keys[self.k + 1]] = result.trace.standard_error
        return values

    def get_config(self):
        return {
            "directory": self.directory, "frequency": self.frequency,
            "layers": [_layer_config(layer) for layer in self.layers],
            "k": self.k, "trace_probes": self.trace_probes,
            "density_steps": self.density_steps,
            "density_probes": self.density_probes,
            "curvature": self.curvature, "training": self.training,
            "batch_size": self.batch_size, "steps": self.steps,
            "tolerance": self.tolerance, "max_iterations": self.max_iterations,
            "seed": self.seed, "verbose": self.verbose,
        }


def _layer_config(layer):
    if isinstance(layer, (list, tuple)):
        return [_layer_config(one) for one in layer]
    return layer.name if isinstance(layer, keras.layers.Layer) else layer
