"""Records the largest Hessian eigenvalue of one layer at epoch ends."""

import keras

from keras_lrphase._validation import check_integer
from keras_lrphase.hessian.batch import first_batch
from keras_lrphase.hessian.batch import validate_batch
from keras_lrphase.hessian.estimator import HessianEigenvalueEstimator


class HessianMonitor(keras.callbacks.Callback):
    """Logs the largest Hessian eigenvalue of one layer every few epochs.

    At the end of every `frequency`-th epoch it estimates the largest
    eigenvalue of the loss Hessian restricted to `layer` (by default the
    output layer) on one fixed batch, warm-starting from the previous
    epoch's eigenvector, and writes `logs["hessian_max_eigenvalue"]` and
    `logs["hessian_iterations"]`, so `History`, `CSVLogger` and
    `TensorBoard` placed after it in the callback list record them. Nothing
    runs per batch.

    Args:
        data: `(x, y)` arrays, or a `tf.data.Dataset` of which the first
            batch is used. One large batch (the paper uses 8192 samples).
        frequency: Int >= 1. Estimate every `frequency` epochs. Defaults
            to `1`.
        layer: A layer, layer name, `None` (the last layer with trainable
            weights) or `"all"`. Defaults to `None`.
        estimator: Optional callable `estimator(model, x, y,
            initial_vector=None)` returning an object with `.value`,
            `.vector` and `.iterations`; it replaces the built-in estimator
            (a hook for tests and custom curvature measures). Defaults to
            `None`.
        **eigen_kwargs: Arguments of `HessianEigenvalueEstimator`
            (`method`, `max_iterations`, `tolerance`, `hvp`, `training`,
            `loss`, `seed`).

    Example:

    >>> import numpy as np, keras
    >>> from keras_lrphase import HessianMonitor
    >>> x = np.random.rand(64, 4).astype("float32")
    >>> y = np.random.randint(0, 3, 64)
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True))
    >>> history = model.fit(x, y, epochs=2, verbose=0,
    ...                     callbacks=[HessianMonitor((x, y), seed=0)])
    >>> len(history.history["hessian_max_eigenvalue"])
    2

    References:
        "Achieving Small-Batch Accuracy with Large-Batch Scalability via
        Adaptive Learning Rate Adjustment" (ICLR 2022 submission),
        Section 3.2.
    """

    def __init__(self, data, *, frequency=1, layer=None, estimator=None, **eigen_kwargs):
        super().__init__()
        frequency = check_integer("frequency", frequency, 1)
        if estimator is not None and eigen_kwargs:
            raise ValueError(
                "Pass either `estimator` or eigenvalue arguments, not both. "
                f"Received: eigen_kwargs={sorted(eigen_kwargs)}"
            )
        self.x, self.y = first_batch(data)
        validate_batch(self.x, self.y)
        self.frequency = frequency
        self.estimator = estimator or HessianEigenvalueEstimator(
            layer=layer, **eigen_kwargs
        )
        self.last_result = None

    def on_train_begin(self, logs=None):
        self.last_result = None

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.frequency:
            return
        previous = self.last_result.vector if self.last_result else None
        self.last_result = self.estimator(
            self.model, self.x, self.y, initial_vector=previous
        )
        if logs is not None:
            logs["hessian_max_eigenvalue"] = float(self.last_result.value)
            logs["hessian_iterations"] = int(self.last_result.iterations)
