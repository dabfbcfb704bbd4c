"""Running a Keras optimizer over scripted gradients, for golden tests."""

import keras
import numpy as np

RTOL = 1e-5
ATOL = 1e-6


def run(optimizer, w0s, grads_per_step, names=None):
    """Applies `grads_per_step` with `optimizer`; weights after each step."""
    names = names or [f"v{i}" for i in range(len(w0s))]
    variables = [
        keras.Variable(np.asarray(w, np.float32), name=name)
        for w, name in zip(w0s, names)
    ]
    trajectory = []
    for grads in grads_per_step:
        optimizer.apply(
            [keras.ops.convert_to_tensor(np.asarray(g, np.float32))
             for g in grads],
            variables,
        )
        trajectory.append([keras.ops.convert_to_numpy(v) for v in variables])
    return trajectory


def assert_trajectory(actual, expected):
    """Each step's weights equal the reference to float32 tolerance."""
    assert len(actual) == len(expected)
    for step, (a, e) in enumerate(zip(actual, expected)):
        np.testing.assert_allclose(
            a, e, rtol=RTOL, atol=ATOL, err_msg=f"step {step}"
        )
