"""``scipy.signal.lfilter`` from rest, with scipy's arithmetic, as a numba kernel: the same bits, faster.

Direct form II transposed: each output is ``z0 + b0*x`` and each delay is
updated as ``z[k+1] + x*b[k+1] - y*a[k+1]``, in that order and without fused
multiply-adds, as scipy's C loop computes it (``a[0]`` must be 1; scipy
divides by it first). Written out for order 8, which runs about 2.4 times
faster than scipy's general loop; a lower order is padded with zeros
(:func:`pad_to_order8`), which changes no value. Shared by the processors'
crossover filters (:mod:`processors.compressors`) and the fast HAAQI's
resampling level match (:mod:`benchmark.haaqi.fast.ear_model`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

ORDER = 8


def pad_to_order8(b: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``b`` and ``a`` zero-padded to 9 coefficients (an order of at most 8, ``a[0] == 1``)."""
    if b.size > ORDER + 1 or a.size > ORDER + 1 or a[0] != 1.0:
        raise ValueError(f"need an order of at most {ORDER} with a[0] == 1, got {b.size}/{a.size} coefficients")
    pb, pa = np.zeros(ORDER + 1), np.zeros(ORDER + 1)
    pb[:b.size], pa[:a.size] = b, a
    return pb, pa


@njit(cache=True)
def lfilter_order8(b, a, x, out):
    """``out = lfilter(b, a, x)`` for 9 coefficients each (order 8); ``out`` may be ``x`` (in place)."""
    b0, b1, b2, b3, b4, b5, b6, b7, b8 = b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8]
    a1, a2, a3, a4, a5, a6, a7, a8 = a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]
    z0 = z1 = z2 = z3 = z4 = z5 = z6 = z7 = 0.0
    for i in range(x.size):
        xi = x[i]
        y = z0 + b0 * xi
        z0 = z1 + xi * b1 - y * a1
        z1 = z2 + xi * b2 - y * a2
        z2 = z3 + xi * b3 - y * a3
        z3 = z4 + xi * b4 - y * a4
        z4 = z5 + xi * b5 - y * a5
        z5 = z6 + xi * b6 - y * a6
        z6 = z7 + xi * b7 - y * a7
        z7 = xi * b8 - y * a8
        out[i] = y
