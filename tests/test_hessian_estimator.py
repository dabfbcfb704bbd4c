import json
import os
import subprocess
import sys
import textwrap
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from hessian_references import mse_dense_hessian
from hessian_references import softmax
from hessian_references import softmax_cross_entropy_dense_hessian
from hessian_references import top_eigenvalue
from keras_lrphase.backend import autodiff
from keras_lrphase.hessian.estimator import HessianEigenvalueEstimator
from keras_lrphase.hessian.estimator import top_hessian_eigenvalue
from keras_lrphase.hessian.restriction import RestrictedLoss

N, D, C = 48, 6, 4


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D)).astype("float32")
    labels = rng.integers(0, C, size=N)
    return x, labels


def logits_model(activation=None, seed=1):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((D,))
    outputs = keras.layers.Dense(
        C, activation=activation, name="head",
        kernel_initializer=keras.initializers.RandomNormal(stddev=0.5),
        bias_initializer=keras.initializers.RandomNormal(stddev=0.5),
    )(inputs)
    return keras.Model(inputs, outputs)


def relative_error(value, exact):
    return abs(value - exact) / abs(exact)


# -- exact answers on heads with a closed-form Hessian ----------------------

def head_cases():
    x, labels = data()
    one_hot = np.eye(C, dtype="float32")[labels]

    regression = keras.Sequential(
        [keras.Input((D,)), keras.layers.Dense(2, name="head")]
    )
    y_reg = np.random.default_rng(3).normal(size=(N, 2)).astype("float32")
    yield "mse", regression, x, y_reg, "mse", mse_dense_hessian(x, 2)

    model = logits_model()
    logits = model.predict(x, verbose=0)
    yield (
        "softmax_cross_entropy_from_logits", model, x, labels,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        softmax_cross_entropy_dense_hessian(x, softmax(logits)),
    )

    inner = logits_model(activation="softmax")
    probabilities = inner.predict(x, verbose=0)
    yield (
        "softmax_inside_dense", inner, x, one_hot,
        keras.losses.CategoricalCrossentropy(),
        softmax_cross_entropy_dense_hessian(x, probabilities),
    )

    keras.utils.set_random_seed(2)
    inputs = keras.Input((D,))
    hidden = keras.layers.Dense(5, activation="tanh")(inputs)
    hidden = keras.layers.BatchNormalization(name="bn")(hidden)
    outputs = keras.layers.Dense(C, name="head")(hidden)
    bn_model = keras.Model(inputs, outputs)
    bn_model.get_layer("bn").moving_mean.assign(np.full(5, 0.1, "float32"))
    bn_model.get_layer("bn").moving_variance.assign(np.full(5, 0.5, "float32"))
    features = keras.Model(inputs, hidden).predict(x, verbose=0)
    yield (
        "batchnorm_before_head", bn_model, x, labels,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        softmax_cross_entropy_dense_hessian(
            features, softmax(bn_model.predict(x, verbose=0))
        ),
    )


CASES = list(head_cases())
IDS = [case[0] for case in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_lanczos_reaches_1e_3_within_20_products(case):
    _, model, x, y, loss, hessian = case
    result = top_hessian_eigenvalue(
        model, x, y, loss=loss, method="lanczos", seed=0
    )
    assert result.restricted
    assert result.converged
    assert result.iterations <= 20
    assert relative_error(result.value, top_eigenvalue(hessian)) <= 1e-3


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_power_iteration_matches_exact_eigenvalue(case):
    _, model, x, y, loss, hessian = case
    exact = top_eigenvalue(hessian)
    tight = top_hessian_eigenvalue(
        model, x, y, loss=loss, tolerance=1e-7, max_iterations=500, seed=0
    )
    assert tight.converged
    assert relative_error(tight.value, exact) <= 1e-4
    default = top_hessian_eigenvalue(model, x, y, loss=loss, seed=0)
    # Rayleigh quotients approach the top eigenvalue from below.
    assert default.value <= exact * (1 + 1e-6)
    assert relative_error(default.value, exact) <= 2e-2


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_eigenvector_satisfies_eigen_equation(case):
    _, model, x, y, loss, hessian = case
    result = top_hessian_eigenvalue(
        model, x, y, loss=loss, method="lanczos", seed=0, tolerance=1e-6,
        max_iterations=60,
    )
    # Rebuild the flat vector in the closed form's ordering (class, input).
    kernel, bias = result.vector
    blocks = np.concatenate([kernel, bias[None, :]], axis=0)  # (D+1, units)
    flat = blocks.T.reshape(-1)
    residual = hessian @ flat - result.value * flat
    assert np.linalg.norm(flat) == pytest.approx(1.0, rel=1e-5)
    assert np.linalg.norm(residual) <= 1e-3 * result.value


def test_warm_start_converges_at_once():
    _, model, x, y, loss, hessian = CASES[1]
    first = top_hessian_eigenvalue(model, x, y, loss=loss, seed=0, tolerance=1e-8, max_iterations=500)
    again = top_hessian_eigenvalue(
        model, x, y, loss=loss, initial_vector=first.vector, tolerance=1e-4
    )
    assert again.iterations == 2
    assert relative_error(again.value, top_eigenvalue(hessian)) <= 1e-5


@pytest.mark.parametrize("method", ["power", "lanczos"])
@pytest.mark.parametrize("overflow_at", [1, 2])
def test_a_product_that_overflows_gives_nan_without_a_numpy_warning(
        method, overflow_at):
    # A batch whose Hessian-vector products overflow (inputs scaled by
    # 1e20): the solver stops with NaN, which top_hessian_eigenvalue turns
    # into its ValueError and the callbacks into "no decision", instead of
    # dividing infinity by infinity.
    from keras_lrphase.hessian.eigensolvers import SOLVERS

    hessian = np.diag([3.0, 2.0, 1.0])
    calls = []

    def matvec(v):
        calls.append(1)
        w = hessian @ v
        return np.full_like(w, np.inf) if len(calls) >= overflow_at else w

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = SOLVERS[method](matvec, np.ones(3), 10, 1e-12)
    assert np.isnan(result.value)
    assert (result.iterations, result.converged) == (overflow_at, False)
    assert len(calls) == overflow_at


def test_training_flag_uses_batch_statistics_and_leaves_model_untouched():
    _, model, x, labels, loss, _ = CASES[3]
    bn = model.get_layer("bn")
    before = [v.numpy().copy() for v in model.variables]
    hidden = keras.Model(model.input, bn.input).predict(x, verbose=0)
    mean, var = hidden.mean(0), hidden.var(0)
    features = (hidden - mean) / np.sqrt(var + bn.epsilon) * bn.gamma.numpy() + bn.beta.numpy()
    head = model.get_layer("head")
    logits = features @ head.kernel.numpy() + head.bias.numpy()
    exact = top_eigenvalue(softmax_cross_entropy_dense_hessian(features, softmax(logits)))
    result = top_hessian_eigenvalue(
        model, x, labels, loss=loss, method="lanczos", training=True, seed=0
    )
    assert relative_error(result.value, exact) <= 1e-3
    for old, variable in zip(before, model.variables):
        np.testing.assert_array_equal(old, variable.numpy())


def test_compiled_loss_is_used_when_loss_is_none():
    _, model, x, y, loss, hessian = CASES[1]
    model.compile(optimizer="sgd", loss=loss)
    result = top_hessian_eigenvalue(model, x, y, method="lanczos", seed=0)
    assert relative_error(result.value, top_eigenvalue(hessian)) <= 1e-3


# -- restriction equals the diagonal block of the full Hessian --------------

def mlp(seed=4):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((D,))
    hidden = keras.layers.Dense(5, activation="tanh", name="hidden")(inputs)
    outputs = keras.layers.Dense(C, name="head")(hidden)
    return keras.Model(inputs, outputs)


def dense_full_hessian(model, x, labels):
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    variables = model.trainable_variables
    sizes = [int(np.prod(v.shape)) for v in variables]
    flat = tf.Variable(tf.concat([tf.reshape(v, [-1]) for v in variables], 0))

    def loss_of(flat_params):
        parts = tf.split(flat_params, sizes)
        values = [tf.reshape(p, v.shape) for p, v in zip(parts, variables)]
        out, _ = model.stateless_call(values, [], x)
        return loss_fn(labels, out)

    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            loss = loss_of(flat)
        grad = inner.gradient(loss, flat)
    hessian = outer.jacobian(grad, flat).numpy().astype(np.float64)
    return (hessian + hessian.T) / 2, sizes


def test_restricted_eigenvalue_equals_diagonal_block_of_full_hessian():
    model = mlp()
    x, labels = data()
    hessian, sizes = dense_full_hessian(model, x, labels)
    head_size = sizes[-1] + sizes[-2]
    block = hessian[-head_size:, -head_size:]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    result = top_hessian_eigenvalue(
        model, x, labels, loss=loss, method="lanczos", seed=0
    )
    assert result.restricted and result.layer == "head"
    assert relative_error(result.value, top_eigenvalue(block)) <= 1e-3

    hidden_size = sizes[0] + sizes[1]
    hidden_block = hessian[:hidden_size, :hidden_size]
    hidden = top_hessian_eigenvalue(
        model, x, labels, loss=loss, layer="hidden", method="lanczos", seed=0
    )
    assert relative_error(hidden.value, top_eigenvalue(hidden_block)) <= 1e-3

    full = top_hessian_eigenvalue(
        model, x, labels, loss=loss, layer="all", method="lanczos",
        max_iterations=40, tolerance=1e-5, seed=0,
    )
    assert not full.restricted
    assert relative_error(full.value, top_eigenvalue(hessian)) <= 1e-3


def test_subclassed_model_falls_back_with_warning_and_same_answer():
    class TwoLayer(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(5, activation="tanh")
            self.head = keras.layers.Dense(C)

        def call(self, x):
            return self.head(self.hidden(x))

    graph = mlp()
    sub = TwoLayer()
    x, labels = data()
    sub(x[:1])
    sub.set_weights(graph.get_weights())
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    expected = top_hessian_eigenvalue(graph, x, labels, loss=loss, method="lanczos", seed=0)
    with pytest.warns(UserWarning, match="not a graph"):
        got = top_hessian_eigenvalue(sub, x, labels, loss=loss, method="lanczos", seed=0)
    assert not got.restricted
    assert got.value == pytest.approx(expected.value, rel=1e-5)


def test_branch_bypassing_the_layer_falls_back():
    inputs = keras.Input((D,))
    hidden = keras.layers.Dense(5, name="hidden")(inputs)
    head = keras.layers.Dense(C, name="head")(hidden)
    skip = keras.layers.Dense(C, name="skip")(inputs)
    model = keras.Model(inputs, keras.layers.Add()([head, skip]))
    x, labels = data()
    with pytest.warns(UserWarning, match="whole model"):
        result = top_hessian_eigenvalue(
            model, x, labels, layer="head",
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    assert not result.restricted


# -- the three Hessian-vector product modes ----------------------------------

def test_hvp_modes_match_dense_hessian_vector_product():
    model = mlp()
    x, labels = data()
    hessian, sizes = dense_full_hessian(model, x, labels)
    restricted = RestrictedLoss(
        model, layer="all",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    params = restricted.target_values()
    others, non_trainable = restricted.fixed_values()
    batch = (tf.constant(x), tf.constant(labels), others, non_trainable)
    v = np.random.default_rng(7).normal(size=sum(sizes))
    vector = [
        tf.constant(p.reshape(var.shape), tf.float32)
        for p, var in zip(np.split(v, np.cumsum(sizes)[:-1]), restricted.targets)
    ]
    expected = hessian @ v
    for mode in ("forward_over_back", "reverse_over_reverse"):
        product = autodiff().hessian_vector_product(restricted.loss_fn, mode)
        got = np.concatenate([np.ravel(t) for t in product(params, vector, batch)])
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["power", "lanczos"])
def test_three_hvp_modes_agree(method):
    model = mlp()
    x, labels = data()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    values = {
        mode: top_hessian_eigenvalue(
            model, x, labels, loss=loss, layer="all", method=method,
            hvp=mode, seed=0, tolerance=1e-6, max_iterations=100,
        ).value
        for mode in ("forward_over_back", "reverse_over_reverse", "finite_difference")
    }
    assert values["reverse_over_reverse"] == pytest.approx(
        values["forward_over_back"], rel=1e-5
    )
    assert values["finite_difference"] == pytest.approx(
        values["forward_over_back"], rel=1e-2
    )


# -- estimator reuse ------------------------------------------------------------

def test_estimator_follows_weight_changes_between_calls():
    _, model, x, y, loss, _ = CASES[1]
    estimator = HessianEigenvalueEstimator(loss=loss, method="lanczos", seed=0)
    first = estimator(model, x, y)
    head = model.get_layer("head")
    head.kernel.assign(head.kernel.numpy() * 2.0)
    logits = model.predict(x, verbose=0)
    exact = top_eigenvalue(softmax_cross_entropy_dense_hessian(x, softmax(logits)))
    second = estimator(model, x, y, initial_vector=first.vector)
    assert relative_error(second.value, exact) <= 1e-3
    assert second.value != pytest.approx(first.value, rel=1e-2)


# -- bad input -----------------------------------------------------------------

def test_errors_name_the_problem():
    x, labels = data()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model = logits_model()

    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="not built"):
        top_hessian_eigenvalue(unbuilt, x, labels, loss=loss)

    frozen = logits_model()
    frozen.trainable = False
    with pytest.raises(ValueError, match="no trainable weights"):
        top_hessian_eigenvalue(frozen, x, labels, loss=loss)

    with pytest.raises(ValueError, match="layer='nope'"):
        top_hessian_eigenvalue(model, x, labels, loss=loss, layer="nope")

    inputs = keras.Input((D,))
    out = keras.layers.Activation("linear", name="act")(keras.layers.Dense(C)(inputs))
    with pytest.raises(ValueError, match="no trainable weights. Received: layer='act'"):
        top_hessian_eigenvalue(keras.Model(inputs, out), x, labels, loss=loss, layer="act")

    with pytest.raises(ValueError, match="same batch size"):
        top_hessian_eigenvalue(model, x, labels[:-1], loss=loss)

    with pytest.raises(ValueError, match="empty batch"):
        top_hessian_eigenvalue(model, x[:0], labels[:0], loss=loss)

    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        top_hessian_eigenvalue(model, bad, labels, loss=loss)

    for value in (0, -3):
        with pytest.raises(ValueError, match=f"max_iterations={value}"):
            top_hessian_eigenvalue(model, x, labels, loss=loss, max_iterations=value)

    with pytest.raises(ValueError, match="method='qr'"):
        top_hessian_eigenvalue(model, x, labels, loss=loss, method="qr")

    with pytest.raises(ValueError, match="hvp='exact'"):
        top_hessian_eigenvalue(model, x, labels, loss=loss, hvp="exact")

    with pytest.raises(ValueError, match="no compiled loss"):
        top_hessian_eigenvalue(logits_model(), x, labels)

    with pytest.raises(ValueError, match="initial_vector"):
        top_hessian_eigenvalue(
            model, x, labels, loss=loss, initial_vector=[np.ones((2, 2))]
        )


# -- the JAX backend gives the same numbers ------------------------------------

JAX_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, keras
    from keras_lrphase import top_hessian_eigenvalue
    weights = np.load(sys.argv[1], allow_pickle=True)
    x, labels = weights["x"], weights["labels"]
    inputs = keras.Input((x.shape[1],))
    hidden = keras.layers.Dense(5, activation="tanh", name="hidden")(inputs)
    outputs = keras.layers.Dense(4, name="head")(hidden)
    model = keras.Model(inputs, outputs)
    model.set_weights([weights[f"w{i}"] for i in range(4)])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    out = {}
    for hvp in ("forward_over_back", "reverse_over_reverse", "finite_difference"):
        out[hvp] = top_hessian_eigenvalue(
            model, x, labels, loss=loss, method="lanczos", hvp=hvp, seed=0).value
    out["all"] = top_hessian_eigenvalue(
        model, x, labels, loss=loss, layer="all", method="lanczos",
        max_iterations=40, tolerance=1e-5, seed=0).value
    print(json.dumps({"backend": keras.backend.backend(), **out}))
    """
)


@pytest.mark.jax
def test_jax_backend_matches_tensorflow(tmp_path):
    pytest.importorskip("jax")
    model = mlp()
    x, labels = data()
    arrays = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    np.savez(tmp_path / "weights.npz", x=x, labels=labels, **arrays)
    script = tmp_path / "run.py"
    script.write_text(JAX_SCRIPT)
    results = {}
    for backend in ("tensorflow", "jax"):
        env = dict(os.environ, KERAS_BACKEND=backend)
        out = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "weights.npz")],
            env=env, capture_output=True, text=True, timeout=300,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        results[backend] = json.loads(out.stdout.strip().splitlines()[-1])
    assert results["jax"]["backend"] == "jax"
    for key in ("forward_over_back", "reverse_over_reverse", "all"):
        assert results["jax"][key] == pytest.approx(results["tensorflow"][key], rel=1e-5)
    assert results["jax"]["finite_difference"] == pytest.approx(
        results["tensorflow"]["forward_over_back"], rel=1e-2
    )


def test_a_model_built_on_an_intermediate_tensor_is_restricted():
    """Found in a FeatureSpace program: keras.Model(inputs=encoded, ...)."""
    raw = keras.Input((D,))
    encoded = keras.layers.Dense(5, name="encode")(raw)  # not a keras.Input
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(encoded)
    out = keras.layers.Dense(C, name="head")(hidden)
    model = keras.Model(inputs=encoded, outputs=out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        restricted = RestrictedLoss(model, loss=keras.losses.MeanSquaredError())
    assert restricted.restricted and restricted.prefix is not None
    x = np.random.default_rng(0).normal(size=(N, 5)).astype("float32")
    y = np.zeros((N, C), "float32")
    kernel, bias = model.get_layer("hidden").get_weights()
    features = np.maximum(x @ kernel + bias, 0.0)
    result = top_hessian_eigenvalue(model, x, y, loss="mse", method="lanczos",
                                    tolerance=1e-8, seed=0)
    assert result.restricted
    assert result.value == pytest.approx(
        top_eigenvalue(mse_dense_hessian(features, C)), rel=1e-5)


def _two_layer_classifier():
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((D,)),
        keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(C, activation="softmax"),
    ])
    model.compile("sgd", "sparse_categorical_crossentropy")
    return model


def test_repeated_calls_reuse_the_compiled_products():
    # A user calling the function in a loop (after each epoch, on several
    # batch sizes) got one new tf.function per call, and TensorFlow's
    # retracing warnings: the compiled products are kept per model and
    # configuration, traced once, and once more for a new batch size
    # (`reduce_retracing` then generalises the shape).
    x, labels = data()
    model = _two_layer_classifier()
    values = [
        top_hessian_eigenvalue(model, x[:size], labels[:size], seed=0,
                               method="lanczos").value
        for size in (48, 48, 48, 48, 48, 48, 48, 32, 40, 48)
    ]
    ((_, by_batch),) = model.__dict__["_keras_lrphase_hessian_products"].values()
    (entry,) = by_batch.values()  # one kind of batch: one set of products
    compiled = [f for f in entry if hasattr(f, "experimental_get_tracing_count")]
    assert len(compiled) == 2  # the prefix pass and the product
    assert [f.experimental_get_tracing_count() for f in compiled] == [2, 2]
    fresh = HessianEigenvalueEstimator(seed=0, method="lanczos")(model, x, labels)
    assert values[0] == values[6] == values[9] == fresh.value


def test_the_compiled_products_follow_a_recompiled_loss():
    x, labels = data()
    model = _two_layer_classifier()
    first = top_hessian_eigenvalue(model, x, labels, method="lanczos", seed=0)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
        reduction="sum"))
    summed = top_hessian_eigenvalue(model, x, labels, method="lanczos", seed=0)
    np.testing.assert_allclose(summed.value, N * first.value, rtol=1e-4)


def test_the_cache_does_not_keep_a_deleted_model_alive():
    import gc
    import weakref

    x, labels = data()
    model = _two_layer_classifier()
    top_hessian_eigenvalue(model, x, labels, seed=0)
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None
