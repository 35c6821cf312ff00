"""Vectorisable natural log and exp for the numba kernels (AVX2 without SVML).

numba turns ``math.log``/``math.exp`` into scalar libm calls, which keeps the
loops around them from being vectorised. :func:`vlog` and :func:`vexp` are
fdlibm's algorithms (the same reductions and minimax polynomials as glibc's
and musl's reference implementations, error below 1 ulp) written branch-free
with bit casts, so that LLVM vectorises loops that call them.

Domains: :func:`vlog` needs a positive normal finite argument; :func:`vexp`
an argument in about [-708, 709]. The kernels clamp their inputs to these.
"""

from __future__ import annotations

from numba import njit, types
from numba.extending import intrinsic


@intrinsic
def _f64_bits(typingctx, x):
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int64))
    return sig, codegen


@intrinsic
def _bits_f64(typingctx, x):
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))
    return sig, codegen


_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e+00
_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01
_P1 = 1.66666666666666019037e-01
_P2 = -2.77777777770155933842e-03
_P3 = 6.61375632143793436117e-05
_P4 = -1.65339022054652515390e-06
_P5 = 4.13813679705723846039e-08


_TWO52 = 4503599627370496.0          # 2**52
_SHIFTER = 6755399441055744.0        # 1.5 * 2**52: adding it rounds to an integer


@njit(cache=True, inline="always", error_model="numpy")
def vlog(x):
    """ln(x) for a positive normal finite x (fdlibm ``__ieee754_log``).

    Integer work is kept to 64-bit and/or/add/logical shifts and the
    int-to-float conversion uses the 2**52 trick, so AVX2 can vectorise it.
    """
    ix = _f64_bits(x)
    hx = ((ix >> 32) & 0xFFFFFFFF) + (0x3FF00000 - 0x3FE6A09E)
    e = (hx >> 20) & 0xFFF
    hx = (hx & 0x000FFFFF) + 0x3FE6A09E
    m = _bits_f64((hx << 32) | (ix & 0xFFFFFFFF))
    dk = (_bits_f64(0x4330000000000000 | e) - _TWO52) - 1023.0
    f = m - 1.0
    hfsq = 0.5 * f * f
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG2 + w * (_LG4 + w * _LG6))
    t2 = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
    return s * (hfsq + t1 + t2) + dk * _LN2_LO - hfsq + f + dk * _LN2_HI


@njit(cache=True, inline="always", error_model="numpy")
def vexp(x):
    """e**x for x in about [-708, 709] (fdlibm ``__ieee754_exp``; k rounded half to even)."""
    t = x * _INV_LN2 + _SHIFTER
    dk = t - _SHIFTER
    k = _f64_bits(t) - _f64_bits(_SHIFTER)
    hi = x - dk * _LN2_HI
    lo = dk * _LN2_LO
    r = hi - lo
    rr = r * r
    c = r - rr * (_P1 + rr * (_P2 + rr * (_P3 + rr * (_P4 + rr * _P5))))
    y = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi)
    return _bits_f64(_f64_bits(y) + (k << 52))
