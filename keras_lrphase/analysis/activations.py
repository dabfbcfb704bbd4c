"""Layer activations as CCA data points, collected batch by batch.

CCA compares two layers through a matrix of data points by neurons. For a
dense layer a data point is an input; for a convolutional layer of shape
`(height, width, channels)` every spatial position of every input is a data
point with `channels` neurons (Raghu et al., 2017). Two layers of different
spatial sizes are first average-pooled to the smaller size, so that their
data points are the same regions of the same inputs; a dense layer counts as
size 1x1 (a convolutional layer compared with it is globally averaged).

`collect_activations` runs a model once over the inputs, in batches, through
one multi-output `keras.Model`, and keeps for each requested (layer, size)
only the data points of a fixed random sample, so that memory does not grow
with the number of inputs times positions:

* `PositionSample`: at most `max_rows` (input, position) pairs, drawn without
  replacement from a generator seeded by `(seed, height, width)`, so both
  models of a comparison keep the same data points.
* `FourierSample`: the DFT form of Raghu et al. (2017): the 2D discrete
  Fourier transform of each input's pooled map; at each spatial frequency the
  inputs are the data points. At most `max_rows` (input, frequency) pairs are
  kept: `min(inputs, max_rows)` inputs and `max(1, max_rows // inputs)`
  frequencies, both seeded.

Only NumPy does the pooling and the sampling; the model runs on whatever
backend Keras uses.
"""

import numpy as np


def spatial_view(activations):
    """Views a layer output as `(samples, height, width, channels)`.

    2D outputs `(samples, neurons)` become `(samples, 1, 1, neurons)`; 3D
    outputs `(samples, steps, channels)` become `(samples, steps, 1,
    channels)`; 4D outputs are returned as they are.
    """
    if activations.ndim == 2:
        return activations[:, None, None, :]
    if activations.ndim == 3:
        return activations[:, :, None, :]
    if activations.ndim == 4:
        return activations
    raise ValueError(
        "Layer outputs must have 2, 3 or 4 dimensions (samples, [height, "
        f"[width,]] neurons). Received: shape={activations.shape}"
    )


def _bins(size, new_size):
    # Adaptive pooling bins: output i averages [floor(i*n/m), ceil((i+1)*n/m)).
    return [((i * size) // new_size, -((-(i + 1) * size) // new_size))
            for i in range(new_size)]


def average_pool(images, size):
    """Average-pools `(samples, height, width, channels)` to `size = (h, w)`.

    Adaptive pooling: output cell `(i, j)` is the mean of the input rows
    `[floor(i*H/h), ceil((i+1)*H/h))` and the matching columns, so a size
    that divides the input's gives ordinary non-overlapping average pooling.

    Example:

    >>> x = np.arange(16.0).reshape(1, 4, 4, 1)
    >>> average_pool(x, (2, 2))[0, :, :, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    """
    height, width = images.shape[1:3]
    new_height, new_width = size
    if (new_height, new_width) == (height, width):
        return images
    if new_height > height or new_width > width:
        raise ValueError(
            f"Cannot pool a {height}x{width} map up to {new_height}x{new_width}"
        )
    if height % new_height == 0 and width % new_width == 0:
        fh, fw = height // new_height, width // new_width
        shaped = images.reshape(images.shape[0], new_height, fh, new_width, fw,
                                images.shape[3])
        return shaped.mean(axis=(2, 4))
    rows = np.stack([images[:, a:b].mean(axis=1)
                     for a, b in _bins(height, new_height)], axis=1)
    return np.stack([rows[:, :, a:b].mean(axis=2)
                     for a, b in _bins(width, new_width)], axis=2)


class PositionSample:
    """The (input, position) data points kept at one pooled size.

    Args:
        size: Tuple `(height, width)` of the pooled maps.
        num_inputs: Int. Number of inputs.
        max_rows: Int. Most data points kept.
        seed: Int. Seed of the draw (combined with `size`).
    """

    def __init__(self, size, num_inputs, max_rows, seed):
        self.size = tuple(size)
        self.cells = self.size[0] * self.size[1]
        total = num_inputs * self.cells
        if total <= max_rows:
            self.rows = np.arange(total)
        else:
            rng = np.random.default_rng([seed, *self.size, 0])
            self.rows = np.sort(rng.choice(total, max_rows, replace=False))

    @property
    def data_points(self):
        """Number of rows of the matrices handed to CCA."""
        return len(self.rows)

    def take(self, pooled, start):
        """The kept rows of a batch of pooled maps of inputs `start, ...`."""
        low, high = start * self.cells, (start + len(pooled)) * self.cells
        first, last = np.searchsorted(self.rows, [low, high])
        flat = pooled.reshape(-1, pooled.shape[-1])
        return flat[self.rows[first:last] - low].astype(np.float32)

    @staticmethod
    def finish(parts):
        """Joins the batches: a `(data_points, channels)` float32 matrix."""
        return np.concatenate(parts, axis=0)


class FourierSample:
    """The (input, spatial frequency) data points kept at one pooled size.

    Args:
        size: Tuple `(height, width)` of the pooled maps.
        num_inputs: Int. Number of inputs.
        max_rows: Int. Most (input, frequency) pairs kept.
        seed: Int. Seed of the draws (combined with `size`).
    """

    def __init__(self, size, num_inputs, max_rows, seed):
        self.size = tuple(size)
        cells = self.size[0] * self.size[1]
        rng = np.random.default_rng([seed, *self.size, 1])
        if num_inputs <= max_rows:
            self.inputs = np.arange(num_inputs)
        else:
            self.inputs = np.sort(rng.choice(num_inputs, max_rows, replace=False))
        count = min(cells, max(1, max_rows // len(self.inputs)))
        self.frequencies = np.sort(rng.choice(cells, count, replace=False))
        # A few frequencies: a direct DFT (cells x count matrix) costs less
        # than the FFT of whole maps; many: the FFT.
        self._dft = None
        if count <= np.log2(max(cells, 2)):
            u, v = np.divmod(self.frequencies, self.size[1])
            h, w = np.divmod(np.arange(cells), self.size[1])
            phase = (np.outer(h, u) / self.size[0] + np.outer(w, v) / self.size[1])
            self._dft = np.exp(-2j * np.pi * phase).astype(np.complex64)

    @property
    def data_points(self):
        """Number of rows of each per-frequency matrix handed to CCA."""
        return len(self.inputs)

    def take(self, pooled, start):
        """The kept (input, frequency) coefficients of a batch, complex64."""
        first, last = np.searchsorted(self.inputs, [start, start + len(pooled)])
        chosen = pooled[self.inputs[first:last] - start]
        if self._dft is not None:
            flat = chosen.reshape(len(chosen), -1, chosen.shape[-1])
            return np.matmul(self._dft.T, flat.astype(np.complex64))
        spectrum = np.fft.fft2(chosen, axes=(1, 2))
        spectrum = spectrum.reshape(len(chosen), -1, pooled.shape[-1])
        return spectrum[:, self.frequencies].astype(np.complex64)

    @staticmethod
    def finish(parts):
        """Joins the batches: `(data_points, frequencies, channels)`."""
        return np.concatenate(parts, axis=0)


def collect_activations(model, layers, x, samples, batch_size):
    """Runs `model` once over `x` and keeps the sampled data points.

    Args:
        model: A built `keras.Model` with one input.
        layers: List of layers of `model` to read.
        x: Array of inputs, indexed along the first axis.
        samples: Dict `layer name -> list of samples` (`PositionSample` or
            `FourierSample`) to keep for that layer; each sample's `size` is
            the size the layer's maps are pooled to first.
        batch_size: Int. Inputs per forward pass.

    Returns:
        Dict `(layer name, size) -> array` of the kept data points.
    """
    import keras

    extractor = keras.Model(model.inputs, [layer.output for layer in layers])
    parts = {(layer.name, s.size): [] for layer in layers
             for s in samples[layer.name]}
    for start in range(0, len(x), batch_size):
        outputs = extractor.predict_on_batch(x[start:start + batch_size])
        if not isinstance(outputs, (list, tuple)):
            outputs = [outputs]
        for layer, output in zip(layers, outputs):
            maps = spatial_view(np.asarray(keras.ops.convert_to_numpy(output),
                                           dtype=np.float32))
            for sample in samples[layer.name]:
                pooled = average_pool(maps, sample.size)
                parts[(layer.name, sample.size)].append(sample.take(pooled, start))
    return {(name, size): _finish(samples[name], size, chunks)
            for (name, size), chunks in parts.items()}


def _finish(layer_samples, size, chunks):
    sample = next(s for s in layer_samples if s.size == size)
    return sample.finish(chunks)
