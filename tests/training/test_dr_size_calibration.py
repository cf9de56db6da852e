"""Diameter calibration of the DR model: a line in log space, fitted and bounded."""

from __future__ import annotations

import numpy as np
import pytest

from training.dr.size_calibration import B_RANGE, fit


def test_fit_recovers_a_shrinking_regression() -> None:
    rng = np.random.default_rng(0)
    true = rng.uniform(4.0, 20.0, 200)
    predicted = np.exp((np.log(true) - 0.3) / 1.25) * rng.lognormal(0, 0.03, 200)
    cal = fit(list(zip(predicted, true, strict=True)))
    assert cal.b == pytest.approx(1.25, abs=0.05) and cal.a == pytest.approx(0.3, abs=0.1)
    assert cal.apply(float(predicted[0])) == pytest.approx(true[0], rel=0.1)
    assert cal.n_pairs == 200


def test_too_few_pairs_give_the_identity() -> None:
    cal = fit([(10.0, 14.0)] * 19)
    assert (cal.a, cal.b) == (0.0, 1.0) and cal.apply(7.0) == pytest.approx(7.0)


def test_slope_is_bounded() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(5.0, 6.0, 50)
    cal = fit(list(zip(p, p**3, strict=True)))
    assert cal.b == B_RANGE[1]
