import numpy as np
import pytest

from keras_lrphase.training.statistics import welch_t_test

pytestmark = pytest.mark.backend_neutral

stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("seed", range(6))
def test_welch_matches_scipy(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(0.0, 1.0 + seed, size=3 + seed)
    b = rng.normal(0.5 * seed, 0.5, size=5)
    t, df, p = welch_t_test(a, b)
    reference = stats.ttest_ind(a, b, equal_var=False)
    assert t == pytest.approx(reference.statistic, rel=1e-12)
    assert p == pytest.approx(reference.pvalue, rel=1e-9, abs=1e-14)


def test_constant_samples_give_scipys_limits():
    t, df, p = welch_t_test([1.0, 1.0], [1.0, 1.0])
    assert np.isnan(t) and np.isnan(p)
    # Different constants: no spread at all, so the difference is certain.
    t, df, p = welch_t_test([1.0, 1.0], [2.0, 2.0])
    with pytest.warns(RuntimeWarning):  # SciPy's, dividing by zero
        reference = stats.ttest_ind([1.0, 1.0], [2.0, 2.0], equal_var=False)
    assert (t, p) == (reference.statistic, reference.pvalue) == (-np.inf, 0.0)
    with pytest.raises(ValueError, match="at least 2 values"):
        welch_t_test([1.0], [1.0, 2.0])


def test_seed_difference_against_direct_computation():
    from keras_lrphase.training.statistics import seed_difference

    big = ([0.90, 0.91, 0.92, 0.905, 0.915], [0.80, 0.82, 0.81, 0.79, 0.80])
    shown, sentence = seed_difference("a", big[0], "b", big[1])
    reference = stats.ttest_ind(big[0], big[1], equal_var=False)
    assert shown
    assert sentence.startswith(
        f"a vs b: +{100 * (np.mean(big[0]) - np.mean(big[1])):.2f} points")
    assert f"Welch p = {reference.pvalue:.2g}" in sentence
    # Significant but smaller than one seed's spread: not shown.
    rng = np.random.default_rng(0)
    a = 0.5 + 0.02 * rng.standard_normal(400)
    b = 0.5 + 0.02 * rng.standard_normal(400) - 0.005
    p = stats.ttest_ind(a, b, equal_var=False).pvalue
    assert p < 0.05
    shown, sentence = seed_difference("a", a, "b", b)
    assert not shown and "not shown by 400 and 400 seeds" in sentence
    with pytest.raises(ValueError, match="alpha=1.5"):
        seed_difference("a", a, "b", b, alpha=1.5)
