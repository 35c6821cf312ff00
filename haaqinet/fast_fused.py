"""One numba kernel for the whole learned part of a small ``auditory`` HAAQI-Net (:mod:`haaqinet.fast`).

:func:`pointwise_net` runs a network without transformer layers and with the per-frame head
(``rnn="none"``, the distilled student) from the fixed maps to the scores: stem convolutions, clip
statistics, positional convolution, layer norms, the folded head and the folded attention. Its matrix
products are ``np.dot`` (BLAS) calls; everything between them stays in the same compiled loop, so a clip
costs no per-operation overhead. The GELU and the softmax's exponential are written as plain float32
arithmetic below so that LLVM vectorises their loops (numba would call the scalar libm routines); they are
as accurate as float32 library functions (a few ulp).

Larger networks do better with torch between the numba kernels (MKL's matrix products and torch's
float32 activations are faster at their sizes; :class:`haaqinet.fast.FastHAAQINet` decides).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from haaqinet.fast_kernels import OPTS, attention_scores, conv_taps, position_and_norms

# erfc(y) exp(y^2) for 0 <= y <= 10 as a polynomial in u = 2.4 / (1 + y / 2) - 1.4 (t = 1 / (1 + y / 2) mapped
# from [1/6, 1] to [-1, 1]), lowest power first: a least-squares Chebyshev fit of degree 14 at 4001 Chebyshev
# nodes against math.erfc, in monomial form. Relative error below 5e-11.
_E0, _E1, _E2, _E3, _E4, _E5, _E6, _E7, _E8, _E9, _E10, _E11, _E12, _E13, _E14 = (np.float32(c) for c in (
    0.33367365254134873, 0.4286347937203689, 0.19544342262383552, 0.04599047081162162, -0.0011055683944645395,
    -0.002924207175671242, 9.055456518512258e-05, 0.00024751128522562687, -3.9052251347330466e-05,
    -1.9693463736236324e-05, 8.597894548185613e-06, 5.039101981532773e-07, -1.195746590680711e-06,
    1.2454273135875555e-07, 8.51393253785514e-08))
_ZERO, _HALF, _ONE, _TWO, _TEN = (np.float32(c) for c in (0.0, 0.5, 1.0, 2.0, 10.0))
_SQRT1_2, _U_SCALE, _U_SHIFT = np.float32(math.sqrt(0.5)), np.float32(2.4), np.float32(1.4)
_LOG2E, _EXP_MIN, _EXP_MAX = np.float32(1 / math.log(2.0)), np.float32(-87.0), np.float32(88.0)
_LN2_HI, _LN2_LO = np.float32(0.693145751953125), np.float32(1.428606765330187e-06)  # ln 2 = hi + lo, hi exact
_I6, _I24, _I120, _I720, _I5040 = (np.float32(1 / math.factorial(k)) for k in (3, 4, 5, 6, 7))


@njit(**OPTS)
def _exp_inplace(v):
    """exp of a 1-D float32 array, in place, within 2 float32 ulp; arguments are clamped to [-87, 88] (normal
    results: exp(-87) = 1.6e-38). ``e^x = 2^n e^r`` with ``|r| <= ln(2) / 2`` (a degree-7 Taylor polynomial)
    and ``2^n`` built from its bits."""
    n = v.shape[0]
    scale_bits = np.empty(n, np.int32)
    for i in range(n):
        x = min(max(v[i], _EXP_MIN), _EXP_MAX)
        k = np.floor(x * _LOG2E + _HALF)
        r = (x - k * _LN2_HI) - k * _LN2_LO
        r2 = r * r
        v[i] = (_ONE + r + r2 * (_HALF + r * _I6)) + r2 * r2 * (_I24 + r * _I120 + r2 * (_I720 + r * _I5040))
        scale_bits[i] = (np.int32(k) + 127) << 23
    scale = scale_bits.view(np.float32)
    for i in range(n):
        v[i] *= scale[i]


@njit(**OPTS)
def _gelu_inplace(a):
    """The exact GELU ``x Phi(x) = x erfc(-x / sqrt 2) / 2`` of a float32 array, in place, within a few
    float32 ulp: ``erfc(y) = exp(-y^2) erfcx(y)``, erfcx from :data:`_E0`...:data:`_E14`."""
    v = a.ravel()
    n = v.shape[0]
    erfcx = np.empty(n, np.float32)
    arg = np.empty(n, np.float32)
    for i in range(n):
        y = min(abs(v[i]) * _SQRT1_2, _TEN)  # erfc(10) = 2e-45: the tail is 0 in float32
        u = _U_SCALE / (_ONE + _HALF * y) - _U_SHIFT
        u2 = u * u
        u4 = u2 * u2
        low = (_E0 + u * _E1 + u2 * (_E2 + u * _E3)) + u4 * (_E4 + u * _E5 + u2 * (_E6 + u * _E7))
        high = (_E8 + u * _E9 + u2 * (_E10 + u * _E11)) + u4 * (_E12 + u * _E13 + u2 * _E14)
        erfcx[i] = low + u4 * u4 * high
        arg[i] = -y * y
    _exp_inplace(arg)
    for i in range(n):
        tail = arg[i] * erfcx[i]  # erfc(|x| / sqrt 2)
        v[i] = _HALF * v[i] * (_TWO - tail) if v[i] >= _ZERO else _HALF * v[i] * tail


@njit(**OPTS)
def _matmul(x, w):
    """``x @ w`` over the last axis of a C-ordered (B, T, n) array: (B, T, m)."""
    n_clips, n = x.shape[0], x.shape[1]
    return np.dot(x.reshape((n_clips * n, x.shape[2])), w).reshape((n_clips, n, w.shape[1]))


@njit(**OPTS)
def pointwise_net(feats, stats, audiogram, spl_db, taps, more_taps, biases, strides, stats_w, stats_b, pos_w, pos_b,
                  norm_w, norm_b, eps, eps2, enc_w, enc_b, cond_w, cond_scale, cond_shift, project_w, project_b, qkz_w,
                  qkz_b, heads):
    """Clip scores (B,) and frame scores (B, T') of the fixed maps ``feats`` (B, T, 4 K) and clip ``stats``.

    taps (4 K, 3 dim), more_taps (L, dim, 3 dim), biases (L + 1, dim), strides (L + 1,): the stem's
    convolutions (:func:`conv_taps`), the first and the L others; the head: ``gelu(z @ enc_w + enc_b +
    cond @ cond_w)`` with ``cond = [audiogram, spl_db] * cond_scale + cond_shift``, then
    ``relu(. @ project_w + project_b) @ qkz_w + qkz_b`` gives per frame each head's query, key (scaled)
    and folded value; the frame score is ``sigmoid(sum_h softmax(q_h k_h^T) @ value_h)``.
    """
    x = conv_taps(_matmul(feats, taps), biases[0], strides[0])
    _gelu_inplace(x)
    for i in range(more_taps.shape[0]):
        x = conv_taps(_matmul(x, more_taps[i]), biases[i + 1], strides[i + 1])
        _gelu_inplace(x)
    z = position_and_norms(x, stats, stats_w, stats_b, pos_w, pos_b, norm_w, norm_b, eps, eps2)[1]
    n_clips, n = z.shape[0], z.shape[1]
    n_cond = cond_w.shape[0]
    cond = np.empty((n_clips, n_cond), np.float32)
    for b in range(n_clips):
        for j in range(n_cond):
            v = spl_db[b] if j == audiogram.shape[1] else audiogram[b, j]
            cond[b, j] = v * cond_scale[j] + cond_shift[j]
    clip_bias = np.dot(cond, cond_w) + enc_b
    y = _matmul(z, enc_w)
    for b in range(n_clips):
        y[b] += clip_bias[b]
    _gelu_inplace(y)
    qkz = _matmul(np.maximum(_matmul(y, project_w) + project_b, np.float32(0.0)), qkz_w) + qkz_b
    e = (qkz.shape[2] - heads) // 2
    hd = e // heads
    weights = np.empty((n_clips, heads, n, n), np.float32)  # the softmax of the query-key products
    for b in range(n_clips):
        for h in range(heads):
            q = np.ascontiguousarray(qkz[b, :, h * hd:(h + 1) * hd])
            k = np.ascontiguousarray(qkz[b, :, e + h * hd:e + (h + 1) * hd].T)
            w = np.dot(q, k)
            for t in range(n):
                top = w[t, 0]
                for j in range(1, n):
                    top = max(top, w[t, j])
                for j in range(n):
                    w[t, j] -= top
            _exp_inplace(w.ravel())
            for t in range(n):
                total = w[t].sum()
                for j in range(n):
                    weights[b, h, t, j] = w[t, j] / total
    return attention_scores(weights, qkz[:, :, 2 * e:])
