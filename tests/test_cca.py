import numpy as np
import pytest

from keras_lrphase.analysis.cca import cca
from keras_lrphase.analysis.cca import svcca
from keras_lrphase.analysis.cca import svcca_correlations
from keras_lrphase.analysis.cca import variance_rank


def _gaussian(seed, n, p):
    return np.random.default_rng(seed).normal(size=(n, p))


def _direct_cca(a, b):
    """Canonical correlations from the eigenvalues of Sxx^-1 Sxy Syy^-1 Syx."""
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    sxx, syy, sxy = a.T @ a, b.T @ b, a.T @ b
    m = np.linalg.solve(sxx, sxy) @ np.linalg.solve(syy, sxy.T)
    eig = np.sort(np.linalg.eigvals(m).real)[::-1]
    return np.sqrt(np.clip(eig[: min(a.shape[1], b.shape[1])], 0.0, None))


def test_identical_activations_give_ones():
    a = _gaussian(0, 200, 6)
    np.testing.assert_allclose(cca(a, a), np.ones(6), atol=1e-12)
    assert svcca(a, a) == pytest.approx(1.0, abs=1e-12)


def test_invertible_linear_map_gives_ones():
    a = _gaussian(1, 300, 5)
    mix = np.random.default_rng(2).normal(size=(5, 5)) + 3 * np.eye(5)
    assert np.linalg.cond(mix) < 100
    b = a @ mix - 7.0  # an offset too: CCA centres
    np.testing.assert_allclose(cca(a, b), np.ones(5), atol=1e-6)
    np.testing.assert_allclose(cca(a.astype(np.float32), b.astype(np.float32)),
                               np.ones(5), atol=1e-6)
    assert svcca(a, b, keep_variance=1.0) == pytest.approx(1.0, abs=1e-6)


def test_agrees_with_the_covariance_eigenvalue_formula():
    rng = np.random.default_rng(3)
    a = rng.normal(size=(400, 4))
    b = np.hstack([a[:, :2] @ rng.normal(size=(2, 3)), rng.normal(size=(400, 4))])
    b += 0.5 * rng.normal(size=b.shape)
    got = cca(a, b)
    want = _direct_cca(a, b)
    assert got.shape == (4,)
    assert np.all(np.diff(got) <= 0)  # descending
    assert np.max(np.abs(got - want)) < 1e-6
    assert got[0] > 0.5 and got[-1] < 0.2  # a real mix of strong and weak


def test_agrees_with_the_qr_svd_form_for_a_wider_b():
    # QR + SVD of Q_a^T Q_b: the textbook (Bjorck-Golub) algorithm.
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(250, 3)), rng.normal(size=(250, 7))
    b[:, 0] += 2 * a[:, 0]
    qa, _ = np.linalg.qr(a - a.mean(axis=0))
    qb, _ = np.linalg.qr(b - b.mean(axis=0))
    want = np.linalg.svd(qa.T @ qb, compute_uv=False)
    assert np.max(np.abs(cca(a, b) - want)) < 1e-6
    assert np.max(np.abs(cca(b, a) - want)) < 1e-6  # symmetric


def test_independent_noise_is_near_zero():
    # For independent Gaussian layers the centred column space of b is a
    # uniformly random q-dimensional subspace of the (n - 1)-dimensional
    # centred space, so E[sum of squared correlations] = E[tr(P_a P_b)]
    # = p * q / (n - 1) exactly. sum rho^2 is close to chi^2_{pq} / n
    # (Bartlett), of standard deviation sqrt(2 p q) / n: the average over
    # 40 draws is within 5 of its standard errors of p q / (n - 1).
    n, p, q = 2000, 5, 5
    sums = [np.sum(cca(_gaussian(10 + s, n, p), _gaussian(100 + s, n, q)) ** 2)
            for s in range(40)]
    expected = p * q / (n - 1)
    standard_error = np.sqrt(2 * p * q) / n / np.sqrt(40)
    assert abs(np.mean(sums) - expected) < 5 * standard_error
    # The largest correlation: Wachter's edge of the spectrum,
    # (sqrt(p/n (1 - q/n)) + sqrt(q/n (1 - p/n)))^2 = 0.00998 for rho^2,
    # i.e. rho_max ~ 0.0999; fixed seeds, with margin for n = 2000.
    largest = max(cca(_gaussian(10 + s, n, p), _gaussian(100 + s, n, q))[0]
                  for s in range(40))
    assert largest < 0.15


def test_sign_scale_and_permutation_invariance():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(300, 6))
    b = a[:, :3] @ rng.normal(size=(3, 4)) + rng.normal(size=(300, 4))
    base = cca(a, b)
    signs = np.array([1, -1, -1, 1, -1, 1.0])
    scales = np.array([1e-3, 2.0, 7.0, 1e3, 0.5, 3.0])
    perm = rng.permutation(6)
    np.testing.assert_allclose(cca(a * signs, b), base, atol=1e-10)
    np.testing.assert_allclose(cca(a * scales, b * 4.0), base, atol=1e-10)
    np.testing.assert_allclose(cca(a[:, perm], b[:, ::-1]), base, atol=1e-10)
    assert svcca(a[:, perm] * signs, b, keep_variance=1.0) == pytest.approx(
        float(np.mean(base)), abs=1e-10)


def test_rank_deficiency_drops_directions():
    rng = np.random.default_rng(6)
    a = rng.normal(size=(100, 3))
    duplicated = np.hstack([a, a[:, :1] + a[:, 1:2], np.full((100, 1), 4.0)])
    got = cca(duplicated, a)
    assert got.shape == (3,)  # rank 3, not 5: no NaN, no spurious direction
    np.testing.assert_allclose(got, np.ones(3), atol=1e-6)
    float32 = duplicated.astype(np.float32)
    assert cca(float32, a).shape == (3,)
    assert cca(np.ones((10, 2)), a[:10, :1]).shape == (0,)
    with pytest.warns(UserWarning, match=r"svcca: `activations_a` has no variance"):
        assert np.isnan(svcca(np.ones((10, 2)), a[:10, :1]))


def test_svcca_of_activations_without_variance_warns_and_says_which():
    # All-zero activations (a dead ReLU layer) gave NaN without a word.
    rng = np.random.default_rng(8)
    live = rng.normal(size=(50, 4))
    dead = np.zeros((50, 4))
    with pytest.warns(UserWarning) as caught:
        assert np.isnan(svcca(live, dead))
        assert np.isnan(svcca(dead, dead))
    assert [str(w.message) for w in caught] == [
        "svcca: `activations_b` has no variance (every neuron is constant "
        "over the samples, such as a dead ReLU layer): the similarity is "
        "undefined and NaN is returned.",
        "svcca: `activations_a` and `activations_b` have no variance (every "
        "neuron is constant over the samples, such as a dead ReLU layer): the "
        "similarity is undefined and NaN is returned."]
    assert caught[0].filename == __file__


def test_complex_activations():
    rng = np.random.default_rng(7)
    a = rng.normal(size=(200, 3)) + 1j * rng.normal(size=(200, 3))
    mix = rng.normal(size=(3, 3)) + 1j * rng.normal(size=(3, 3))
    np.testing.assert_allclose(cca(a, a @ mix), np.ones(3), atol=1e-6)


def test_variance_rank_hand_computed():
    s = np.array([3.0, 2.0, 1.0])  # variances 9, 4, 1 of 14
    assert [variance_rank(s, k) for k in (0.5, 9 / 14, 0.65, 13 / 14, 0.93, 1.0)] \
        == [1, 1, 2, 2, 3, 3]


def test_svcca_keep_variance_selection():
    # Orthonormal centred directions q0, q1, q2; a has them with singular
    # values 3, 2, 1 (variance fractions 9/14, 13/14, 1); b spans q0 and q2.
    rng = np.random.default_rng(8)
    z = rng.normal(size=(500, 3))
    q, _ = np.linalg.qr(z - z.mean(axis=0))
    a = q * [3.0, 2.0, 1.0]
    b = q[:, [0, 2]]
    # 0.6 keeps q0 only: one correlation, 1.
    np.testing.assert_allclose(svcca_correlations(a, b, 0.6), [1.0], atol=1e-10)
    # 0.9 keeps q0, q1 (b keeps both of its equal directions): 1 and 0.
    np.testing.assert_allclose(svcca_correlations(a, b, 0.9), [1.0, 0.0],
                               atol=1e-10)
    assert svcca(a, b, keep_variance=0.9) == pytest.approx(0.5, abs=1e-10)
    # 0.99 keeps all of a: span{q0, q1, q2} contains b.
    assert svcca(a, b, keep_variance=0.99) == pytest.approx(1.0, abs=1e-10)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan"), True, "0.9"])
def test_keep_variance_outside_unit_interval(bad):
    a = _gaussian(0, 20, 2)
    with pytest.raises(ValueError, match="keep_variance"):
        svcca(a, a, keep_variance=bad)


def test_bad_matrices_name_the_argument():
    a = _gaussian(0, 20, 2)
    with pytest.raises(ValueError, match=r"activations_b.*as many samples"):
        cca(a, a[:10])
    with pytest.raises(ValueError, match=r"`activations_a`.*2D.*shape \(20,\)"):
        cca(a[:, 0], a)
    with pytest.raises(ValueError, match=r"`activations_b`.*2D"):
        svcca(a, a[None])
    with pytest.raises(ValueError, match=r"`activations_a`.*more samples"):
        cca(_gaussian(0, 5, 8), _gaussian(1, 5, 2))
    with pytest.raises(ValueError, match=r"`activations_a`.*finite"):
        cca(np.full((20, 2), np.nan), a)
    with pytest.raises(ValueError, match="epsilon"):
        cca(a, a, epsilon=2.0)
