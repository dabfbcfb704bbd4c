import pytest

import keras_lrphase

pytestmark = pytest.mark.backend_neutral

CONTRACT = [
    "top_hessian_eigenvalue", "HessianMonitor", "HessianEigenvalueEstimator",
    "HessianEigenvalueResult", "TwoPhaseController", "TwoPhaseLR",
    "GradualWarmup", "ControlledLearningRate", "LARS", "LARSWrapper",
    "MetricReducer", "LocalReducer",
]


def test_public_names_are_exported():
    missing = [name for name in CONTRACT if not hasattr(keras_lrphase, name)]
    assert missing == []


def test_signatures_of_the_contract():
    import inspect

    params = inspect.signature(keras_lrphase.top_hessian_eigenvalue).parameters
    assert list(params) == [
        "model", "x", "y", "layer", "loss", "method", "max_iterations",
        "tolerance", "hvp", "training", "initial_vector", "seed",
    ]
    assert params["method"].default == "power"
    assert params["max_iterations"].default == 20
    assert params["tolerance"].default == 1e-3
    assert params["hvp"].default == "forward_over_back"
    two_phase = inspect.signature(keras_lrphase.TwoPhaseController).parameters
    assert two_phase["extra_epochs_fraction"].default == 1 / 3
    assert two_phase["decay_factor"].default == 0.5
