"""The shared lfilter kernel gives scipy's bits for every order up to 8."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import butter, cheby2, lfilter

from benchmark import iir


@pytest.mark.parametrize("order", range(1, 9))
def test_lfilter_order8_is_scipys_lfilter(order):
    x = np.random.default_rng(order).standard_normal(5000)
    b, a = (cheby2(order, 30, 0.4) if order % 2 else butter(order, 0.1, "high"))
    out = np.empty_like(x)
    iir.lfilter_order8(*iir.pad_to_order8(b, a), x, out)
    assert np.array_equal(out, lfilter(b, a, x))
    inplace = x.copy()
    iir.lfilter_order8(*iir.pad_to_order8(b, a), inplace, inplace)
    assert np.array_equal(inplace, out)


def test_pad_to_order8_refuses_what_the_kernel_cannot_run():
    with pytest.raises(ValueError, match="order of at most 8"):
        iir.pad_to_order8(np.ones(10), np.ones(10))
    with pytest.raises(ValueError, match="a\\[0\\] == 1"):
        iir.pad_to_order8(np.ones(3), np.array([2.0, 0.5, 0.1]))
