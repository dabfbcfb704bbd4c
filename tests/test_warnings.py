"""The package's warnings point at the program's line, not into Keras."""

import os
import warnings

import keras
import numpy as np
import pytest

import keras_lrphase as lrp

pytestmark = pytest.mark.backend_neutral


def test_a_warning_during_fit_names_the_fit_call_not_keras(tmp_path):
    # BackupAndRestore before the controller: the controller warns at the
    # first epoch end, called from Keras' callback list.
    keras.utils.set_random_seed(0)
    x = np.ones((8, 2), "float32")
    y = np.zeros((8,), "int32")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.1), "sparse_categorical_crossentropy")
    callbacks = [lrp.BackupAndRestore(str(tmp_path / "backup")),
                 lrp.AutoDecay(window=2)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, epochs=1, verbose=0, callbacks=callbacks); line = _line()
    mine = [w for w in caught if "Place BackupAndRestore after" in str(w.message)]
    assert len(mine) == 1
    assert (os.path.basename(mine[0].filename), mine[0].lineno) == (
        "test_warnings.py", line)


def _line():
    import inspect

    return inspect.currentframe().f_back.f_lineno
