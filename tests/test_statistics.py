import numpy as np
import pytest

from keras_lrphase.training.statistics import welch_t_test

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


def test_identical_constant_samples_have_no_p_value():
    t, df, p = welch_t_test([1.0, 1.0], [1.0, 1.0])
    assert np.isnan(p)
    with pytest.raises(ValueError, match="at least 2 values"):
        welch_t_test([1.0], [1.0, 2.0])
