"""Records the margin distribution of a fixed set of samples at epoch ends."""

import math

import keras
import numpy as np

from keras_lrphase._validation import check_integer
from keras_lrphase._validation import fail
from keras_lrphase.analysis.margins import MarginFunction
from keras_lrphase.analysis.margins import quartile_statistics
from keras_lrphase.hessian.batch import first_batch
from keras_lrphase.hessian.batch import validate_batch

KEYS = ("margin_q1", "margin_median", "margin_q3", "margin_mean_iqr")


def _check_data(data):
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = np.asarray(data[0]), np.asarray(data[1])
    elif isinstance(data, (tuple, list)) or hasattr(data, "shape"):
        size = (f"{len(data)} items" if isinstance(data, (tuple, list))
                else f"shape {np.shape(data)}")
        fail("data", f"<{type(data).__name__} of {size}>",
             "must be a tuple `(x, y)` of inputs and labels (or a "
             "tf.data.Dataset of `(x, y)` batches)")
    else:
        x, y = first_batch(data, "data")
    if y.dtype == object or y.size == 0:
        fail("data", f"<labels of shape {y.shape}>", "must hold labels")
    validate_batch(x, y)
    if len(x) < 2:
        fail("data", f"<{len(x)} sample>", "must hold at least 2 samples")
    return x, y


class MarginMonitor(keras.callbacks.Callback):
    """Logs quartiles of the normalized margin distribution every few epochs.

    The two-phase paper follows the margin distribution of the training
    set (Jiang et al., 2018) to see that it keeps widening after the
    training loss has flattened (Figure 1). At the end of every `every`-th
    epoch this callback computes the normalized margins of the samples in
    `data` (`keras_lrphase.analysis.normalized_margins`, at the input of
    `layer`) and writes to `logs`:

    * `margin_q1`, `margin_median`, `margin_q3`: the quartiles
      (`np.percentile`, linear interpolation) of the finite margins;
    * `margin_mean_iqr`: the mean of the margins `m` with
      `margin_q1 <= m <= margin_q3`, both ends included (the statistic of
      the paper's figure: margins outside the quartiles are ignored).

    In the other epochs the four keys are NaN, so every key is in every
    epoch's logs and `CSVLogger`, which fixes its columns at the first
    epoch, `History` and `TensorBoard` placed after it record them.

    Cost: one forward pass of the model and one forward and one backward
    pass of the part after `h`, in inference mode, over `data`, once per
    monitored epoch; nothing runs per batch. The computation is compiled
    once, in `on_train_begin`. Keep `data` to a fixed sample of the
    training set (e.g. 1,000 images) and raise `every` for long runs
    (`benchmarks/margin_monitor_cost.py` measures the share of an epoch).

    Args:
        data: Tuple `(x, y)` of arrays, or a `tf.data.Dataset` of which the
            first `(x, y)` batch is used. Labels are class indices or
            one-hot rows.
        every: Int >= 1. Compute at the end of epochs `every`, `2 * every`,
            ... (1-based). Defaults to `1`.
        layer: A layer of the model, its name, or None. Margins are taken
            at this layer's input. Defaults to `None` (the model input).
        batch_size: Int >= 1. Samples per pass. Defaults to `256`.

    Example:

    >>> import numpy as np, keras
    >>> from keras_lrphase.callbacks.margin_monitor import MarginMonitor
    >>> x = np.random.rand(32, 4).astype("float32")
    >>> y = np.random.randint(0, 3, 32)
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True))
    >>> history = model.fit(x, y, epochs=2, verbose=0,
    ...                     callbacks=[MarginMonitor((x, y), every=2)])
    >>> [bool(np.isnan(v)) for v in history.history["margin_median"]]
    [True, False]

    References:
        "Achieving Small-Batch Accuracy with Large-Batch Scalability via
        Adaptive Learning Rate Adjustment" (ICLR 2022 submission),
        Appendix A.1 and Figure 1. Jiang et al., "Predicting the
        Generalization Gap in Deep Networks with Margin Distributions",
        ICLR 2019.
    """

    def __init__(self, data, every=1, layer=None, batch_size=256):
        super().__init__()
        self.every = check_integer("every", every, 1)
        self.batch_size = check_integer("batch_size", batch_size, 1)
        if layer is not None and not isinstance(
            layer, (str, keras.layers.Layer)
        ):
            fail("layer", layer, "must be a layer, a layer name or None")
        self.layer = layer
        self.x, self.y = _check_data(data)
        self._function = None
        self.last_margins = None

    def on_train_begin(self, logs=None):
        self._function = MarginFunction(self.model, self.layer,
                                        self.batch_size)
        self._labels = self._function.check_labels(self.y)
        self.last_margins = None

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if (epoch + 1) % self.every != 0:
            logs.update({key: math.nan for key in KEYS})
            return
        if self._function is None:
            self.on_train_begin()
        self.last_margins = self._function(self.x, self._labels)
        logs.update(quartile_statistics(self.last_margins))

    def get_config(self):
        return {"every": self.every, "batch_size": self.batch_size,
                "layer": self.layer if isinstance(self.layer, str) or
                self.layer is None else self.layer.name}
