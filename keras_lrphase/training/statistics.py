"""Welch's two-sample t-test, for the seed tables of `keras-lrphase compare`.

NumPy only (SciPy is not a dependency): the two-sided p-value is the
Student t tail, written with the regularised incomplete beta function and
evaluated by its continued fraction (Numerical Recipes, Section 6.4).
"""

import math

import numpy as np


def welch_t_test(a, b):
    """Welch's unequal-variances t-test of the means of `a` and `b`.

    Args:
        a: Sequence of at least 2 floats.
        b: Sequence of at least 2 floats.

    Returns:
        `(t, degrees_of_freedom, p)` with `p` two-sided. When both samples
        have zero variance, as SciPy's `ttest_ind`: `t` infinite and `p`
        0 for different means, all NaN for equal means.

    Example:

    >>> t, df, p = welch_t_test([1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0, 7.0])
    >>> round(t, 4), round(df, 3), round(p, 4)
    (-2.6112, 6.981, 0.0349)

    References:
        Welch (1947), "The generalization of Student's problem when several
        different population variances are involved".
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size < 2 or b.size < 2:
        raise ValueError(
            "Welch's test needs at least 2 values per sample. Received sizes "
            f"{a.size} and {b.size}."
        )
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    if va + vb == 0:  # SciPy's limits: t infinite, or undefined for equal means
        if a.mean() == b.mean():
            return math.nan, math.nan, math.nan
        return math.copysign(math.inf, a.mean() - b.mean()), math.nan, 0.0
    t = (a.mean() - b.mean()) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
    p = _regularized_incomplete_beta(df / 2, 0.5, df / (df + t * t))
    return float(t), float(df), float(min(1.0, p))


def seed_difference(label, values, reference_label, reference_values,
                    alpha=0.05):
    """Says in one sentence whether seeds show a difference between two rows.

    A difference is shown when Welch's test rejects equal means at `alpha`
    and the difference of the means is larger than the larger of the two
    seed standard deviations (so that a single seed would show it too, in
    most cases); otherwise the sentence says the seeds do not show it.

    Args:
        label: String. The row compared.
        values: Sequence of at least 2 accuracies (fractions), one per seed.
        reference_label: String. The row compared with.
        reference_values: Sequence of at least 2 accuracies (fractions).
        alpha: Float in (0, 1). The test's level.

    Returns:
        `(shown, sentence)`: a bool and the sentence (points are
        percentage points).

    Example:

    >>> shown, sentence = seed_difference(
    ...     "two-phase", [0.70, 0.71, 0.72], "large-batch", [0.60, 0.61, 0.62])
    >>> shown
    True
    >>> sentence
    'two-phase vs large-batch: +10.00 points (seed std 1.00 and 1.00 points; Welch p = 0.00026): larger than the seed spread.'
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(
            f"Argument `alpha` must be in (0, 1). Received: alpha={alpha!r}")
    a = np.asarray(values, np.float64)
    b = np.asarray(reference_values, np.float64)
    _, _, p = welch_t_test(a, b)
    difference = 100 * (a.mean() - b.mean())
    spread = 100 * max(a.std(ddof=1), b.std(ddof=1))
    shown = bool(p < alpha and abs(difference) > spread)
    verdict = ("larger than the seed spread." if shown else
               f"not shown by {a.size} and {b.size} seeds (that needs "
               f"p < {alpha:g} and a difference above the larger seed std).")
    p_text = "n/a (no spread)" if math.isnan(p) else f"{p:.2g}"
    sentence = (f"{label} vs {reference_label}: {difference:+.2f} points "
                f"(seed std {100 * a.std(ddof=1):.2f} and "
                f"{100 * b.std(ddof=1):.2f} points; Welch p = {p_text}): "
                f"{verdict}")
    return shown, sentence


def _regularized_incomplete_beta(a, b, x):
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a, b, x, iterations=300, epsilon=1e-15):
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, iterations + 1):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                          -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < epsilon:
            break
    return h
