"""The Hessian spectrum (`keras_lrphase.hessian.spectrum`) against exact answers.

Three layers of checks:

* the estimators on dense symmetric matrices (NumPy): Lanczos top-k with
  repeated eigenvalues, Hutch++ exact once its sketch spans the space and
  within its standard error otherwise, Gauss quadrature exact for moments
  below twice the steps;
* every backend in its own subprocess (this file run as a script, the
  Keras backend fixed at import), on two small models with BatchNorm and
  identical weights, against an independent float64 implementation in
  torch (`spectrum_references`): the dense Hessian and Gauss-Newton
  matrix (`torch.func.hessian`, `torch.func.jacrev`) and SciPy's `eigsh`
  on `torch.func` products; and the backends against each other;
* in this process: the data forms (arrays, tf.data, PyDataset, iterables)
  give the same products, the products sum over batches and over workers
  (two threads with a reducer), and bad arguments fail with the argument's
  name.

Script usage: `KERAS_BACKEND=<name> python test_hessian_spectrum.py
<inputs.npz>`; the last line of stdout is one JSON object.
"""

import json
import os
import sys
import threading

import keras
import numpy as np
import pytest
import scipy.linalg

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import spectrum_references as ref  # noqa: E402
from backend_processes import installed_backends  # noqa: E402
from backend_processes import run_on_backends  # noqa: E402
from keras_lrphase.distributed.reduction import MetricReducer  # noqa: E402
from keras_lrphase.hessian import HessianOperator  # noqa: E402
from keras_lrphase.hessian import hessian_density  # noqa: E402
from keras_lrphase.hessian import hessian_spectrum  # noqa: E402
from keras_lrphase.hessian import hessian_trace  # noqa: E402
from keras_lrphase.hessian import top_hessian_eigenvalues  # noqa: E402
from keras_lrphase.hessian.eigensolvers import lanczos_eigenpairs  # noqa: E402
from keras_lrphase.hessian.spectrum import hutchpp_trace  # noqa: E402
from keras_lrphase.hessian.spectrum import lanczos_quadrature  # noqa: E402
from keras_lrphase.hessian.spectrum import smoothed_density  # noqa: E402

pytestmark = pytest.mark.backend_neutral

K = 4


def _loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# == the estimators on dense matrices ==========================================
def _symmetric(eigenvalues, seed=0):
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(len(eigenvalues),) * 2))
    return (basis * np.asarray(eigenvalues, float)) @ basis.T


def test_lanczos_finds_repeated_eigenvalues_with_their_multiplicity():
    # A Dense layer under MSE has the same block for every unit: each
    # eigenvalue of the block appears once per unit.
    block = [5.0, 3.0, 1.0, 0.5, 0.1]
    matrix = np.kron(np.eye(3), _symmetric(block))
    pairs = lanczos_eigenpairs(lambda v: matrix @ v, np.ones(15) + np.arange(15),
                               k=6, tolerance=1e-10,
                               rng=np.random.default_rng(0))
    np.testing.assert_allclose(pairs.values, [5, 5, 5, 3, 3, 3], rtol=1e-10)
    assert pairs.converged
    # The six vectors span the two eigenspaces.
    exact = np.linalg.eigh(matrix)[1][:, -6:]
    assert np.max(scipy.linalg.subspace_angles(pairs.vectors.T, exact)) < 1e-8


@pytest.mark.parametrize("which, expected", [
    ("largest", [4.0, 2.0]), ("smallest", [-6.0, -1.0]),
    ("magnitude", [-6.0, 4.0]),
])
def test_lanczos_which_end_of_the_spectrum(which, expected):
    matrix = _symmetric([4.0, 2.0, 0.5, 0.0, -1.0, -6.0] + [0.2] * 30, seed=1)
    rng = np.random.default_rng(2)
    pairs = lanczos_eigenpairs(lambda v: matrix @ v, rng.normal(size=36), k=2,
                               which=which, tolerance=1e-10, rng=rng)
    np.testing.assert_allclose(pairs.values, expected, rtol=1e-9)
    for value, vector, residual in zip(pairs.values, pairs.vectors,
                                       pairs.residuals):
        assert np.linalg.norm(matrix @ vector - value * vector) <= residual + 1e-12


def test_hutchpp_is_exact_once_the_sketch_spans_the_space():
    matrix = _symmetric(np.linspace(-1, 3, 10))
    value, error, used = hutchpp_trace(lambda v: matrix @ v, 10, 30,
                                       np.random.default_rng(0))
    assert value == pytest.approx(np.trace(matrix), rel=1e-12)
    assert error == 0.0 and used == 20


def test_trace_standard_error_covers_the_error():
    # A Hessian-like spectrum: a few outliers and a bulk. Over 200 seeds the
    # error is within 2 standard errors about 95% of the time.
    rng = np.random.default_rng(0)
    eigenvalues = np.concatenate([[40.0, 25.0, 10.0], rng.normal(0.0, 0.5, 197)])
    matrix = _symmetric(eigenvalues, seed=3)
    root_mean_square = {}
    for method in ("hutch++", "hutchinson"):
        errors, ratios = [], []
        for seed in range(200):
            value, error, used = hutchpp_trace(
                lambda v: matrix @ v, 200, 30, np.random.default_rng(seed),
                method)
            assert used == 30
            errors.append(value - np.trace(matrix))
            ratios.append(abs(errors[-1]) / error)
        covered = np.mean(np.asarray(ratios) <= 2.0)
        assert 0.88 <= covered <= 0.99, (method, covered)
        root_mean_square[method] = np.sqrt(np.mean(np.square(errors)))
    # The sketch takes the outliers exactly: with the same 30 products,
    # Hutch++'s error is that of the bulk alone (measured: 4x smaller).
    assert root_mean_square["hutch++"] < root_mean_square["hutchinson"] / 3


def test_quadrature_is_exact_for_moments_below_twice_the_steps():
    matrix = _symmetric(np.linspace(-2, 5, 40), seed=4)
    probe = np.random.default_rng(5).normal(size=40)
    unit = probe / np.linalg.norm(probe)
    nodes, weights, products = lanczos_quadrature(lambda v: matrix @ v,
                                                  probe[None], steps=4)
    assert products == 4 and weights[0].sum() == pytest.approx(1.0, rel=1e-12)
    for order in range(8):  # degree < 2 * 4
        exact = unit @ np.linalg.matrix_power(matrix, order) @ unit
        assert np.sum(weights[0] * nodes[0] ** order) == pytest.approx(
            exact, rel=1e-9, abs=1e-12)


def test_smoothed_density_integrates_to_one():
    nodes = (np.array([-1.0, 0.0, 3.0]), np.array([0.5, 2.0]))
    weights = (np.array([0.2, 0.5, 0.3]), np.array([0.6, 0.4]))
    grid = np.linspace(-3, 5, 4001)
    density = smoothed_density(nodes, weights, grid, 0.1)
    assert np.trapezoid(density, grid) == pytest.approx(1.0, rel=1e-6)
    # Mean of the two probes' measures at t = 3: 0.5 * 0.3 * N(0; 0, 0.1^2).
    peak = density[np.argmin(np.abs(grid - 3.0))]
    assert peak == pytest.approx(0.15 / (0.1 * np.sqrt(2 * np.pi)), rel=1e-6)


# == the script, run in a subprocess per backend =============================
def _script(path):
    import time

    started = time.perf_counter()
    arrays = np.load(path)
    out = {"backend": keras.backend.backend()}
    for name in ref.MODELS:
        x, labels = arrays[f"{name}_x"], arrays[f"{name}_labels"]
        weights = [arrays[f"{name}_w{i}"] for i in range(8)]
        model = ref.build(name, weights)
        full = HessianOperator(model, (x, labels), loss=_loss(), batch_size=64)
        record = {"size": full.size}
        top = top_hessian_eigenvalues(full, k=K, tolerance=1e-8, seed=0)
        record["top"] = top.values.tolist()
        record["top_vectors"] = top.flat_vectors.tolist()
        record["top_converged"] = top.converged
        record["smallest"] = top_hessian_eigenvalues(
            full, k=1, which="smallest", tolerance=1e-8,
            max_iterations=full.size, seed=0).values.tolist()
        ggn = HessianOperator(model, (x, labels), loss=_loss(), batch_size=64,
                              curvature="gauss_newton")
        record["ggn_top"] = top_hessian_eigenvalues(
            ggn, k=K, tolerance=1e-8, seed=0).values.tolist()
        probes = np.random.default_rng(7).normal(size=(3, full.size))
        record["ggn_products"] = [ggn.matvec(v).tolist() for v in probes]
        # Streaming: 6 batches of 7 (the last of 5) against one batch.
        streamed = HessianOperator(model, (x, labels), loss=_loss(),
                                   batch_size=7)
        record["streamed_products"] = [streamed.matvec(v).tolist()
                                       for v in probes]
        record["products"] = [full.matvec(v).tolist() for v in probes]
        trained = HessianOperator(model, (x, labels), loss=_loss(),
                                  batch_size=16, training=True)
        record["training_products"] = [trained.matvec(v).tolist()
                                       for v in probes[:2]]
        # Layers: the head alone (restricted), BatchNorm and head together.
        for key, layer in (("head", "head"), ("bn_head", ["bn", "head"])):
            operator = HessianOperator(model, (x, labels), loss=_loss(),
                                       layer=layer, batch_size=64)
            result = top_hessian_eigenvalues(operator, k=2, tolerance=1e-8,
                                             seed=0)
            record[key] = {"top": result.values.tolist(),
                           "restricted": operator.restricted,
                           "layer": operator.layer, "size": operator.size}
        head = HessianOperator(model, (x, labels), loss=_loss(), layer="head",
                               batch_size=64)
        exact = hessian_trace(head, probes=3 * head.size, seed=0)
        record["head_trace"] = [exact.value, exact.standard_error, exact.probes]
        trace = hessian_trace(full, probes=30, seed=1)
        record["trace"] = [trace.value, trace.standard_error, trace.probes]
        density = hessian_density(full, steps=2, probes=np.eye(full.size))
        record["basis_moments"] = [density.moment(k) for k in range(4)]
        density = hessian_density(full, steps=30, probes=2, seed=0)
        record["density"] = {
            "integral": float(np.trapezoid(density.density, density.grid)),
            "largest_node": float(max(n.max() for n in density.nodes)),
            "products": density.products,
        }
        out[name] = record
    wide = ref.build("cnn_wide", [arrays[f"cnn_wide_w{i}"] for i in range(8)])
    result = top_hessian_eigenvalues(
        wide, (arrays["cnn_wide_x"], arrays["cnn_wide_labels"]), k=5,
        loss=_loss(), tolerance=1e-8, seed=0)
    out["cnn_wide"] = {"top": result.values.tolist()}
    out["seconds"] = time.perf_counter() - started
    print(json.dumps(out))


def _inputs():
    inputs = {}
    for name in ("mlp", "cnn", "cnn_wide"):
        x, labels, weights = ref.arrays(name)
        inputs.update({f"{name}_x": x, f"{name}_labels": labels})
        inputs.update({f"{name}_w{i}": w for i, w in enumerate(weights)})
    return inputs


@pytest.fixture(scope="module")
def arrays():
    return _inputs()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, arrays):
    """The script's output per installed backend (run at once)."""
    folder = tmp_path_factory.mktemp("spectrum")
    path = folder / "inputs.npz"
    np.savez(path, **arrays)
    return run_on_backends(__file__, [path], installed_backends(),
                           timeout=600)


def _weights(arrays, name):
    return [arrays[f"{name}_w{i}"] for i in range(8)]


@pytest.fixture(scope="module")
def dense(arrays):
    """The independent float64 references, per model."""
    pytest.importorskip("torch")
    out = {}
    for name in ref.MODELS:
        x, labels = arrays[f"{name}_x"], arrays[f"{name}_labels"]
        weights = _weights(arrays, name)
        out[name] = {
            "hessian": ref.dense_hessian(name, weights, x, labels),
            "ggn": ref.dense_gauss_newton(name, weights, x, labels),
            "training": ref.dense_hessian(name, weights, x, labels,
                                          training=True, batch_size=16),
        }
    return out


BACKENDS = ("tensorflow", "jax", "torch")
CASES = [(b, m) for b in BACKENDS for m in ref.MODELS]


def _case(runs, backend, name):
    if backend not in runs:
        pytest.skip(f"{backend} is not installed")
    return runs[backend][name]


def _descending(matrix):
    values, vectors = np.linalg.eigh(matrix)
    return values[::-1], vectors[:, ::-1]


@pytest.mark.parametrize("backend, name", CASES)
def test_top_eigenpairs_equal_the_dense_hessian(runs, dense, backend, name):
    record = _case(runs, backend, name)
    values, vectors = _descending(dense[name]["hessian"])
    assert record["top_converged"]
    np.testing.assert_allclose(record["top"], values[:K], rtol=1e-5)
    angles = scipy.linalg.subspace_angles(
        np.asarray(record["top_vectors"]).T, vectors[:, :K])
    assert np.max(angles) < 1e-3
    assert record["smallest"][0] == pytest.approx(values[-1], rel=1e-5)
    assert values[-1] < 0  # not positive semi-definite, unlike the GGN


@pytest.mark.parametrize("backend, name", CASES)
def test_gauss_newton_equals_the_dense_ggn(runs, dense, arrays, backend, name):
    record = _case(runs, backend, name)
    ggn = dense[name]["ggn"]
    values, _ = _descending(ggn)
    assert values[-1] > -1e-12 * values[0]  # positive semi-definite
    np.testing.assert_allclose(record["ggn_top"], values[:K], rtol=1e-5)
    probes = np.random.default_rng(7).normal(size=(3, ggn.shape[0]))
    for got, probe in zip(record["ggn_products"], probes):
        expected = ggn @ probe
        assert np.linalg.norm(got - expected) <= 1e-5 * np.linalg.norm(expected)


@pytest.mark.parametrize("backend, name", CASES)
def test_products_sum_exactly_over_batches(runs, dense, backend, name):
    record = _case(runs, backend, name)
    hessian = dense[name]["hessian"]
    probes = np.random.default_rng(7).normal(size=(3, hessian.shape[0]))
    for streamed, full, probe in zip(record["streamed_products"],
                                     record["products"], probes):
        expected = hessian @ probe
        for got in (streamed, full):
            assert np.linalg.norm(got - expected) <= 1e-5 * np.linalg.norm(expected)
    # Training mode: batch statistics, the sample-weighted mean of the
    # Hessians of the batches' losses (batches of 16, 16 and 8).
    training = dense[name]["training"]
    assert np.linalg.norm(training - hessian) > 1e-2 * np.linalg.norm(hessian)
    for got, probe in zip(record["training_products"], probes):
        expected = training @ probe
        assert np.linalg.norm(got - expected) <= 1e-5 * np.linalg.norm(expected)


@pytest.mark.parametrize("backend, name", CASES)
def test_layers_take_the_diagonal_block(runs, dense, backend, name):
    record = _case(runs, backend, name)
    hessian = dense[name]["hessian"]
    size = hessian.shape[0]
    head = np.arange(size - (record["head"]["size"]), size)
    bn_head = np.arange(size - record["bn_head"]["size"], size)
    for key, index in (("head", head), ("bn_head", bn_head)):
        block = hessian[np.ix_(index, index)]
        np.testing.assert_allclose(record[key]["top"],
                                   _descending(block)[0][:2], rtol=1e-5)
        assert record[key]["restricted"]
    assert record["bn_head"]["layer"] == "bn+head"
    filters = 5 if name == "mlp" else 3
    assert record["head"]["size"] == (filters + 1) * ref.C
    assert record["bn_head"]["size"] == (filters + 1) * ref.C + 2 * filters


@pytest.mark.parametrize("backend, name", CASES)
def test_trace_is_within_its_standard_error(runs, dense, backend, name):
    record = _case(runs, backend, name)
    hessian = dense[name]["hessian"]
    value, error, probes = record["trace"]
    assert probes == 30 and error > 0
    assert abs(value - np.trace(hessian)) <= 3 * error
    # The head's 24 or 16 weights: the sketch spans them, the trace is exact.
    size = hessian.shape[0]
    head = np.arange(size - record["head"]["size"], size)
    value, error, probes = record["head_trace"]
    assert error == 0.0
    assert value == pytest.approx(np.trace(hessian[np.ix_(head, head)]), rel=1e-5)


@pytest.mark.parametrize("backend, name", CASES)
def test_density_moments_equal_the_dense_spectrum(runs, dense, backend, name):
    record = _case(runs, backend, name)
    values = np.linalg.eigvalsh(dense[name]["hessian"])
    # The basis vectors as probes, 2 steps: moments of degree < 4 exact.
    for order, got in enumerate(record["basis_moments"]):
        assert got == pytest.approx(np.mean(values ** order), rel=1e-5)
    density = record["density"]
    assert density["integral"] == pytest.approx(1.0, abs=1e-3)
    assert density["largest_node"] == pytest.approx(values[-1], rel=1e-5)
    assert density["products"] == 60


def test_an_independent_implementation_agrees(runs, arrays):
    """SciPy's eigsh on torch.func products, float64, identical weights."""
    pytest.importorskip("torch")
    weights = _weights(arrays, "cnn_wide")
    expected = ref.eigsh_top("cnn", weights, arrays["cnn_wide_x"],
                             arrays["cnn_wide_labels"], k=5)
    for backend, record in runs.items():
        np.testing.assert_allclose(record["cnn_wide"]["top"], expected,
                                   rtol=1e-5, err_msg=backend)


def test_backends_agree(runs):
    base = runs[next(iter(runs))]
    for backend, record in runs.items():
        for name in ref.MODELS:
            np.testing.assert_allclose(record[name]["top"], base[name]["top"],
                                       rtol=1e-5, err_msg=backend)
            np.testing.assert_allclose(record[name]["trace"][0],
                                       base[name]["trace"][0], rtol=1e-4,
                                       err_msg=backend)


# == in this process ===========================================================
@pytest.fixture(scope="module")
def mlp_case():
    x, labels, weights = ref.arrays("mlp")
    return ref.build("mlp", weights), x, labels


def _products(operator, count=2):
    probes = np.random.default_rng(3).normal(size=(count, operator.size))
    return np.stack([operator.matvec(p) for p in probes])


def test_data_forms_give_the_same_products(mlp_case):
    model, x, labels = mlp_case
    expected = _products(HessianOperator(model, (x, labels), loss=_loss(),
                                         batch_size=64))

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            part = slice(10 * index, 10 * index + 10)
            return x[part], labels[part]

    batches = [(x[i:i + 13], labels[i:i + 13]) for i in range(0, len(x), 13)]
    for data in (Batches(), batches, iter(batches)):
        operator = HessianOperator(model, data, loss=_loss())
        assert operator.samples == len(x)
        np.testing.assert_allclose(_products(operator), expected, rtol=1e-5,
                                   atol=1e-7)
    # `steps` reads the first batches only: half of the data.
    half = HessianOperator(model, Batches(), steps=2, loss=_loss())
    assert half.samples == 20


@pytest.mark.tensorflow_backend
def test_a_tf_data_dataset_gives_the_same_products(mlp_case):
    import tensorflow as tf

    model, x, labels = mlp_case
    expected = _products(HessianOperator(model, (x, labels), loss=_loss()))
    dataset = tf.data.Dataset.from_tensor_slices((x, labels)).batch(9)
    operator = HessianOperator(model, dataset, loss=_loss())
    assert operator.samples == len(x)
    np.testing.assert_allclose(_products(operator), expected, rtol=1e-5,
                               atol=1e-7)
    with pytest.raises(ValueError, match="infinite dataset: pass `steps`"):
        HessianOperator(model, dataset.repeat(), loss=_loss())
    # Batches of 9, 9, 9, 9, 4, then the repetition's first 9.
    assert HessianOperator(model, dataset.repeat(), steps=6,
                           loss=_loss()).samples == 49


class _ThreadReducer(MetricReducer):
    """Two workers in two threads: each `reduce_mean_array` meets the other's."""

    def __init__(self, barrier, slots, rank):
        self.barrier, self.slots, self.rank = barrier, slots, rank

    @property
    def world_size(self):
        return 2

    def reduce_mean(self, values):
        raise AssertionError("the operator sends arrays")

    def reduce_mean_array(self, array):
        self.slots[self.rank] = np.asarray(array, np.float64)
        self.barrier.wait()
        mean = (self.slots[0] + self.slots[1]) / 2
        self.barrier.wait()
        return mean


def test_products_sum_over_workers(mlp_case):
    if keras.backend.backend() == "torch":
        pytest.skip("two worker threads on torch leave no result (the worker "
                    "raises); known open defect, run on TensorFlow and JAX")
    model, x, labels = mlp_case
    full = HessianOperator(model, (x, labels), loss=_loss())
    expected = top_hessian_eigenvalues(full, k=2, seed=0, tolerance=1e-6)
    barrier, slots = threading.Barrier(2), [None, None]
    # Unequal shards (30 and 10 samples): a sample-weighted sum.
    shards = [(x[:30], labels[:30]), (x[30:], labels[30:])]
    results = [None, None]

    def worker(rank):
        operator = HessianOperator(
            model, shards[rank], loss=_loss(),
            reducer=_ThreadReducer(barrier, slots, rank))
        results[rank] = top_hessian_eigenvalues(operator, k=2, seed=0,
                                                tolerance=1e-6)

    threads = [threading.Thread(target=worker, args=(r,)) for r in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    for result in results:
        np.testing.assert_allclose(result.values, expected.values, rtol=1e-5)
    with pytest.raises(ValueError, match="Argument `seed` must be an integer "
                                         "in a run of 2 workers"):
        hessian_trace(HessianOperator(
            model, shards[0], loss=_loss(),
            reducer=_ThreadReducer(barrier, slots, 0)))


def test_training_mode_differentiates_the_batch_statistics_twice(mlp_case):
    """BatchNorm on batch statistics: the Hessian through the mean and the
    variance of the batch (found on TensorFlow, whose `tf.nn.moments`
    stops the gradient of the mean inside the variance: exact first
    derivatives, wrong second ones)."""
    pytest.importorskip("torch")
    from keras_lrphase.hessian import top_hessian_eigenvalue

    model, x, labels = mlp_case
    _, _, weights = ref.arrays("mlp")
    expected = ref.dense_hessian("mlp", weights, x, labels, training=True)
    operator = HessianOperator(model, (x, labels), loss=_loss(),
                               batch_size=len(x), training=True)
    probes = np.random.default_rng(0).normal(size=(2, operator.size))
    for probe in probes:
        got, want = operator.matvec(probe), expected @ probe
        assert np.linalg.norm(got - want) <= 1e-5 * np.linalg.norm(want)
    # The engine's eigenvalue of every weight in training mode, too.
    result = top_hessian_eigenvalue(model, x, labels, loss=_loss(), layer="all",
                                    method="lanczos", tolerance=1e-8,
                                    max_iterations=69, training=True, seed=0)
    assert result.value == pytest.approx(np.linalg.eigvalsh(expected)[-1],
                                         rel=1e-5)


def test_hessian_spectrum_equals_the_three_functions(mlp_case):
    model, x, labels = mlp_case
    operator = HessianOperator(model, (x, labels), loss=_loss())
    both = hessian_spectrum(operator, k=2, trace_probes=12, density_steps=5,
                            seed=4)
    np.testing.assert_allclose(
        both.eigenvalues.values,
        top_hessian_eigenvalues(operator, k=2, seed=4).values, rtol=1e-12)
    assert both.trace.value == pytest.approx(
        hessian_trace(operator, probes=12, seed=4).value, rel=1e-12)
    np.testing.assert_allclose(
        both.density.density,
        hessian_density(operator, steps=5, seed=4).density, rtol=1e-10)
    none = hessian_spectrum(operator, k=0, trace_probes=0, density_steps=0)
    assert (none.eigenvalues, none.trace, none.density) == (None, None, None)


def test_mixed_precision_products_are_those_of_float32(mlp_case):
    model, x, labels = mlp_case
    expected = _products(HessianOperator(model, (x, labels), loss=_loss()))
    keras.config.set_dtype_policy("mixed_float16")
    try:
        half = ref.build("mlp", model.get_weights())
    finally:
        keras.config.set_dtype_policy("float32")
    got = _products(HessianOperator(half, (x, labels), loss=_loss()))
    assert np.linalg.norm(got - expected) <= 2e-2 * np.linalg.norm(expected)


@pytest.mark.parametrize("call, message", [
    (lambda m, d: top_hessian_eigenvalues(m, d, k=0),
     "Argument `k` must be an integer in [1, 69]. Received: k=0"),
    (lambda m, d: top_hessian_eigenvalues(m, d, k=2, which="top"),
     "Argument `which` must be one of ['largest', 'smallest', 'magnitude']. "
     "Received: which='top'"),
    (lambda m, d: hessian_trace(m, d, probes=5),
     "Argument `probes` must be an integer >= 6. Received: probes=5"),
    (lambda m, d: hessian_density(m, d, probes=np.ones((2, 3))),
     "Argument `probes` must be an integer >= 1 or a (count, size) array"),
    (lambda m, d: hessian_density(m, d, sigma=-1.0),
     "Argument `sigma` must be"),
    (lambda m, d: hessian_trace(m, d, curvature="fisher"),
     "Argument `curvature` must be one of ['hessian', 'gauss_newton']. "
     "Received: curvature='fisher'"),
    (lambda m, d: hessian_trace(m, d, layer=["head", "nope"]),
     "Argument `layer` names no layer of model 'mlp'. Received: layer='nope'"),
    (lambda m, d: hessian_trace(m, d, layer=[]),
     "Argument `layer` must name at least one layer"),
    (lambda m, d: hessian_trace(m, d, batch_size=0),
     "Argument `batch_size` must be an integer >= 1. Received: batch_size=0"),
    (lambda m, d: hessian_trace(m, None),
     "Argument `data` must be `(x, y)` arrays"),
    (lambda m, d: hessian_trace(m, (d[0], d[1][:5])),
     "Arguments `x` and `y` must have the same batch size"),
    (lambda m, d: hessian_trace(m, [(d[0], d[1], np.ones(len(d[1])))]),
     "sample weights are not part of the Hessian's loss"),
    (lambda m, d: hessian_trace(m, (d[0][:, :3], d[1])),
     "Argument `data` cannot be used with model 'mlp'"),
    (lambda m, d: hessian_trace(HessianOperator(m, d, loss=_loss()), d),
     "is a HessianOperator, which fixes its data and settings: do not pass "
     "['data'] with it"),
])
def test_bad_arguments_name_the_argument(mlp_case, call, message):
    model, x, labels = mlp_case
    model.compile(loss=_loss())
    with pytest.raises(ValueError) as error:
        call(model, (x, labels))
    assert message in str(error.value)


if __name__ == "__main__":
    _script(sys.argv[1])
