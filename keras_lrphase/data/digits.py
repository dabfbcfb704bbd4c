"""scikit-learn's bundled 8x8 digits: the offline demo's dataset."""

import numpy as np

from keras_lrphase.data.image_data import ImageData


def load_digits_data(test_fraction=0.2, seed=0):
    """Loads scikit-learn's 1,797 8x8 handwritten digits, split in two.

    The digits ship inside scikit-learn, so this needs no download: the
    `demo` preset uses it to run anywhere in a couple of minutes. Pixels
    (integers 0..16) are scaled to `uint8` 0..255 (times 16, capped at
    255) so that the data looks like any other image dataset; the split is
    stratified by class.

    Args:
        test_fraction: Float in (0, 1). Fraction held out for validation.
            Defaults to `0.2` (1,438 train / 359 test).
        seed: Int. Seed of the split. Defaults to `0`.

    Returns:
        An `ImageData` of shape `(8, 8, 1)` images, 10 classes, calling for
        random 1-pixel shifts (`augment="crop"`: crops of the image padded
        by one pixel; no flips, which would turn digits into other shapes).

    Example:

    >>> data = load_digits_data()
    >>> data.x_train.shape, data.x_test.shape
    ((1438, 8, 8, 1), (359, 8, 8, 1))

    References:
        Alpaydin & Kaynak, UCI "Optical Recognition of Handwritten Digits";
        `sklearn.datasets.load_digits`.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(
            "Argument `test_fraction` must be in (0, 1). "
            f"Received: test_fraction={test_fraction}"
        )
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "The digits dataset needs scikit-learn: pip install scikit-learn"
        ) from None
    digits = load_digits()
    images = np.minimum(digits.images * 16, 255).astype("uint8")[..., None]
    labels = digits.target.astype("int32")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = int(round(len(idx) * test_fraction))
        test.extend(idx[:n_test])
        train.extend(idx[n_test:])
    train, test = rng.permutation(train), rng.permutation(test)
    return ImageData(
        name="digits", x_train=images[train], y_train=labels[train],
        x_test=images[test], y_test=labels[test],
        class_names=tuple(str(c) for c in range(10)), augment="crop",
        source="sklearn.datasets.load_digits",
    )
