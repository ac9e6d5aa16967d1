"""common.stats: mean ± sd over seeds and the standard error of a difference, against numpy and scipy's Welch test."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from common.stats import difference, summarize


def test_summarize_is_mean_and_sample_sd_skipping_missing_values():
    values = [1.5, None, 2.0, 4.0]
    mean, sd, n = summarize(values)
    assert n == 3 and mean == pytest.approx(np.mean([1.5, 2.0, 4.0]))
    assert sd == pytest.approx(np.std([1.5, 2.0, 4.0], ddof=1))
    assert math.isnan(summarize([3.0])[1]) and summarize([None])[2] == 0


@pytest.mark.parametrize(
    "a, b", [([1.0, 2.0, 4.5], [0.2, 0.1, 0.9, 0.4]), ([-133.5, -133.6], [-133.3, -133.0, -133.4])]
)
def test_difference_over_its_standard_error_is_welchs_t(a, b):
    value, error, _ = difference(summarize(a), summarize(b))
    assert value == pytest.approx(np.mean(a) - np.mean(b))
    assert value / error == pytest.approx(scipy_stats.ttest_ind(a, b, equal_var=False).statistic)


def test_verdict_counts_standard_errors():
    # sd 1 on both sides, n = 2: SE = 1
    assert difference((3.5, 1.0, 2), (1.0, 1.0, 2))[2] == "yes (> 2 SE)"
    assert difference((2.5, 1.0, 2), (1.0, 1.0, 2))[2] == "yes"
    assert difference((1.5, 1.0, 2), (1.0, 1.0, 2))[2] == "no"
    with pytest.raises(ValueError, match="two values"):
        difference((1.0, math.nan, 1), (1.0, 1.0, 2))
