import numpy as np
import pytest

from keras_lrphase.distributed.reduction import LocalReducer
from keras_lrphase.distributed.reduction import MetricReducer

pytestmark = pytest.mark.backend_neutral


def test_local_reducer_is_the_identity_as_floats():
    out = LocalReducer().reduce_mean(
        {"loss": np.float32(0.25), "hessian_max_eigenvalue": 3}
    )
    assert out == {"loss": 0.25, "hessian_max_eigenvalue": 3.0}
    assert all(type(v) is float for v in out.values())


def test_base_class_must_be_implemented():
    with pytest.raises(TypeError, match="reduce_mean"):
        MetricReducer()

    class Incomplete(MetricReducer):
        pass

    with pytest.raises(TypeError, match="reduce_mean"):
        Incomplete()
