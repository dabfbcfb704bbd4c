"""Backend-specific automatic differentiation, one small module per backend.

Everything else in the package is written with `keras.ops` and NumPy; only
gradients and Hessian-vector products need the backend's own autodiff. Each
backend module exposes the same three functions:

* `compile(fn, jit_compile=False)`: compile a pure function (`tf.function`,
  with XLA when asked / `jax.jit` / eager torch with autograd off).
* `gradient(loss_fn)`: `(params, data) -> list of gradients`.
* `hessian_vector_product(loss_fn, mode)`: `(params, vector, data) -> H v`,
  for `mode` in `"forward_over_back"` and `"reverse_over_reverse"`.

`loss_fn(params, data)` is a pure function of a list of tensors `params` and
an arbitrary nest `data`, returning a scalar.
"""

import importlib
import importlib.util

_MODULES = {
    "tensorflow": "keras_lrphase.backend.tensorflow_autodiff",
    "jax": "keras_lrphase.backend.jax_autodiff",
    "torch": "keras_lrphase.backend.torch_autodiff",
}


def tensorflow_installed():
    """Whether TensorFlow can be imported, checked without importing it."""
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):
        # ValueError: `sys.modules["tensorflow"]` is None (import blocked).
        return False


def configured_backend():
    """The name of the backend Keras runs on, found without importing Keras.

    Once Keras is imported, its own answer; before, what Keras will read:
    `KERAS_BACKEND`, else the `"backend"` of `$KERAS_HOME/keras.json`
    (`~/.keras/keras.json`), else `"tensorflow"`.
    """
    import json
    import os
    import sys

    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(
        os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as f:
            return json.load(f).get("backend", "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def autodiff():
    """The autodiff module of the active Keras backend."""
    import keras

    name = keras.backend.backend()
    if name not in _MODULES:
        raise ValueError(
            "keras_lrphase computes Hessian-vector products on the "
            f"{sorted(_MODULES)} backends. Received: KERAS_BACKEND={name}"
        )
    return importlib.import_module(_MODULES[name])
