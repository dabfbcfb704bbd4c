"""Loads a local image folder (`train/` and `test/`, one folder per class).

The layout is the one `keras.utils.image_dataset_from_directory` reads:

    DIR/train/<class>/*.jpg|png|...
    DIR/test/<class>/*.jpg|png|...

Images are decoded once and cached as an uncompressed `.npz` of `uint8`
arrays, keyed by the folder's absolute path and the names, sizes and
modification times of its files, so a changed folder (a file added,
removed or overwritten in place) is decoded again and an unchanged one
loads in about a second.
"""

import hashlib
import os

import numpy as np

from keras_lrphase._validation import check_existing_folder
from keras_lrphase.data.image_data import ImageData

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
SPLITS = ("train", "test")


def default_cache_dir():
    """The cache folder: `$KERAS_LRPHASE_CACHE`, else `~/.cache/keras_lrphase`."""
    return os.environ.get("KERAS_LRPHASE_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "keras_lrphase")


def is_image_folder(data_dir):
    """Whether `data_dir` has `train/` and `test/` subfolders."""
    return all(os.path.isdir(os.path.join(data_dir, s)) for s in SPLITS)


def scan_image_folder(data_dir):
    """Lists the class folders and image files of an image folder.

    Fast (no decoding): the CLI calls it to reject a bad `--data-dir` before
    training.

    Args:
        data_dir: String. Folder with `train/` and `test/` subfolders, each
            holding one folder of images per class, with the same class
            names in both.

    Returns:
        A tuple `(class_names, files)`: the sorted class folder names, and a
        dict mapping `"train"` and `"test"` to a list of `(path, label)`.
    """
    data_dir = os.fspath(data_dir)
    check_existing_folder("data_dir", data_dir)
    missing = [s for s in SPLITS if not os.path.isdir(os.path.join(data_dir, s))]
    if missing:
        raise ValueError(
            "Argument `data_dir` must contain train/ and test/ folders with "
            f"one subfolder per class; {'/ and '.join(missing)}/ is missing. "
            f"Received: data_dir={data_dir!r}"
        )
    classes = {split: class_folder_names(os.path.join(data_dir, split))
               for split in SPLITS}
    if not classes["train"]:
        raise ValueError(
            "Argument `data_dir` must contain one subfolder per class in "
            f"train/; none found. Received: data_dir={data_dir!r}"
        )
    if classes["train"] != classes["test"]:
        raise ValueError(
            "The class folders of train/ and test/ differ: "
            f"train={classes['train']}, test={classes['test']} "
            f"(data_dir={data_dir!r})"
        )
    files = {}
    for split in SPLITS:
        files[split] = []
        for label, name in enumerate(classes["train"]):
            images = class_images(os.path.join(data_dir, split, name))
            files[split].extend((path, label) for path in images)
    return tuple(classes["train"]), files


def class_folder_names(root):
    """The sorted names of the folders in `root`, hidden ones left out."""
    return sorted(e.name for e in os.scandir(root)
                  if e.is_dir() and not e.name.startswith("."))


def class_images(folder):
    """The sorted paths of the images in a class folder; a `ValueError`
    naming the folder if it holds none."""
    images = sorted(
        e.path for e in os.scandir(folder)
        if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS))
    if not images:
        raise ValueError(
            f"The class folder {folder!r} holds no images "
            f"({', '.join(IMAGE_EXTENSIONS)})."
        )
    return images


def cache_key(data_dir):
    """Hex key of the folder's path and of every file's name, size and mtime.

    A file overwritten in place changes its modification time (and usually
    its size), so the cache is decoded again; stat-ing the 60,000 files of
    CIFAR-10 takes a fraction of a second.
    """
    data_dir = os.path.abspath(os.fspath(data_dir))
    digest = hashlib.sha1(data_dir.encode())
    for split in SPLITS:
        root = os.path.join(data_dir, split)
        for entry in sorted(os.scandir(root), key=lambda e: e.name):
            if entry.is_dir() and not entry.name.startswith("."):
                digest.update(f"{split}/{entry.name}/".encode())
                for item in sorted(os.scandir(entry.path), key=lambda e: e.name):
                    stat = item.stat()
                    digest.update(
                        f"{item.name}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:16]


def load_image_folder(data_dir, name=None, augment="none", cache_dir=None,
                      verbose=0):
    """Loads an image folder into an `ImageData`, decoding once and caching.

    Use it for any dataset stored as image files, such as the JPEG copy of
    CIFAR-10 (`load_image_folder("/tmp/cifar10", "cifar10", "crop-flip")`).
    All images must have the same size and number of channels; class
    indices follow the sorted class folder names.

    Args:
        data_dir: String. Folder with `train/<class>/` and `test/<class>/`.
        name: String. Dataset name recorded in the result. Defaults to the
            folder's base name.
        augment: `"none"` or `"crop-flip"`. Training augmentation the
            dataset calls for. Defaults to `"none"`.
        cache_dir: String. Where decoded arrays are cached; `None` means
            `default_cache_dir()`. Defaults to `None`.
        verbose: Int. `1` prints a line when decoding. Defaults to `0`.

    Returns:
        An `ImageData` with `uint8` images.

    Example:

    >>> import os, tempfile
    >>> import numpy as np
    >>> import tensorflow as tf
    >>> root = tempfile.mkdtemp()
    >>> for split in ("train", "test"):
    ...     for c in ("cat", "dog"):
    ...         os.makedirs(os.path.join(root, split, c))
    ...         png = tf.io.encode_png(np.zeros((4, 4, 3), "uint8")).numpy()
    ...         with open(os.path.join(root, split, c, "0.png"), "wb") as f:
    ...             _ = f.write(png)
    >>> data = load_image_folder(root, cache_dir=os.path.join(root, "cache"))
    >>> data.x_train.shape, data.class_names
    ((2, 4, 4, 3), ('cat', 'dog'))

    References:
        Krizhevsky, "Learning Multiple Layers of Features from Tiny Images",
        2009 (the CIFAR-10 layout).
    """
    class_names, files = scan_image_folder(data_dir)
    cache_dir = cache_dir or default_cache_dir()
    base = os.path.basename(os.path.normpath(os.path.abspath(data_dir)))
    path = os.path.join(cache_dir, f"{base}-{cache_key(data_dir)}.npz")
    arrays = None
    if os.path.exists(path):
        try:
            with np.load(path) as cached:
                arrays = {k: cached[k] for k in cached.files}
        except (OSError, ValueError, EOFError):
            arrays = None  # A truncated cache file is decoded again.
    if arrays is None or set(arrays) != {
            "x_train", "y_train", "x_test", "y_test"}:
        if verbose:
            count = sum(len(v) for v in files.values())
            print(f"Decoding {count} images from {data_dir} "
                  f"(cached in {path})", flush=True)
        arrays = {}
        for split in SPLITS:
            arrays[f"x_{split}"] = _decode(files[split])
            arrays[f"y_{split}"] = np.array(
                [label for _, label in files[split]], dtype="int32")
        shapes = {arrays["x_train"].shape[1:], arrays["x_test"].shape[1:]}
        if len(shapes) != 1:
            raise ValueError(
                f"Images of train/ and test/ differ in shape: {sorted(shapes)} "
                f"(data_dir={data_dir!r})"
            )
        os.makedirs(cache_dir, exist_ok=True)
        partial = f"{path}.{os.getpid()}.tmp.npz"
        np.savez(partial, **arrays)
        os.replace(partial, path)
    return ImageData(
        name=name or base,
        x_train=arrays["x_train"], y_train=arrays["y_train"],
        x_test=arrays["x_test"], y_test=arrays["y_test"],
        class_names=class_names, augment=augment,
        source=os.path.abspath(data_dir),
    )


def _decode(files):
    """Decodes every file of `files` into one `uint8` array.

    With TensorFlow's decoders when TensorFlow is installed, else with
    Pillow's (the backend-neutral path); both decode JPEG with libjpeg.
    """
    from keras_lrphase.backend import tensorflow_installed

    if not tensorflow_installed():
        return _decode_with_pillow([p for p, _ in files])
    return _decode_with_tensorflow(files)


def _decode_with_pillow(paths):
    from concurrent.futures import ThreadPoolExecutor

    try:
        from PIL import Image
    except ImportError:
        raise ImportError(
            "Reading an image folder without TensorFlow needs Pillow: "
            "pip install pillow"
        ) from None

    def read(path):
        try:
            with Image.open(path) as image:
                mode = image.mode
                if mode not in ("L", "RGB"):
                    image = image.convert("RGBA" if "A" in mode else "RGB")
                array = np.asarray(image)
        except OSError as error:
            return path, str(error).splitlines()[0]
        return path, array if array.ndim == 3 else array[..., None]

    with ThreadPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        decoded = list(pool.map(read, paths, chunksize=256))
    for path, array in decoded:
        if isinstance(array, str):
            raise ValueError(f"Could not decode the image {path!r}: {array}")
    shapes = {path: array.shape for path, array in decoded}
    if len(set(shapes.values())) > 1:
        raise ValueError(_odd_shape_message(shapes))
    return np.stack([array for _, array in decoded]).astype("uint8")


def _decode_with_tensorflow(files):
    import tensorflow as tf

    paths = [p for p, _ in files]
    try:
        first = tf.io.decode_image(tf.io.read_file(paths[0]),
                                   expand_animations=False)
    except tf.errors.InvalidArgumentError:
        raise ValueError(_decode_failure(paths)) from None
    shape = tuple(int(d) for d in first.shape)

    def decode(path):
        image = tf.io.decode_image(tf.io.read_file(path),
                                   channels=shape[-1], expand_animations=False)
        tf.debugging.assert_equal(tf.shape(image), tf.constant(shape))
        return image

    ds = tf.data.Dataset.from_tensor_slices(paths).map(
        decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    batches = []
    try:
        for batch in ds.batch(2048):
            batches.append(batch.numpy())
    except tf.errors.InvalidArgumentError:
        raise ValueError(_decode_failure(paths)) from None
    return np.concatenate(batches).astype("uint8")


def _decode_failure(paths):
    """Names the file that failed: one that does not decode, or whose shape
    differs from the shape most images have."""
    import tensorflow as tf

    shapes = {}
    for path in paths:
        try:
            image = tf.io.decode_image(tf.io.read_file(path),
                                       expand_animations=False)
        except tf.errors.InvalidArgumentError as error:
            reason = error.message.strip().splitlines()[0]
            return f"Could not decode the image {path!r}: {reason}"
        shapes[path] = tuple(int(d) for d in image.shape)
    return _odd_shape_message(shapes)


def _odd_shape_message(shapes):
    """Names the first image whose shape differs from most images' shape."""
    import collections

    common, _ = collections.Counter(shapes.values()).most_common(1)[0]
    odd = [p for p, shape in shapes.items() if shape != common]
    more = f" (and {len(odd) - 1} more)" if len(odd) > 1 else ""
    return (f"All images must have one shape; most are {common}, but "
            f"{odd[0]!r} is {shapes[odd[0]]}{more}.")
