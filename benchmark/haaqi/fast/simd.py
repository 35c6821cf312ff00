"""Vector lanes for numba kernels: four float64 (four filters at once) and eight float32 (lag products).

numba compiles scalar code; LLVM vectorises loops over samples but not four
independent recursions (IIR filters) stepped side by side. This module gives
numba an explicit vector type, :data:`f64x4` (an LLVM ``<4 x double>``, one
AVX2 register), and the few lane-wise operations the kernels need:
:func:`vsplat`, :func:`vset`, :func:`vget`, :func:`vadd`, :func:`vsub`,
:func:`vmul`, :func:`vneg`, :func:`vfma` (fused, one rounding), :func:`vsqrt`,
:func:`vmax` and :func:`vmax0`.

Every operation is IEEE lane by lane and nothing is contracted or
reassociated behind the code's back (no fastmath here; fusions are explicit
:func:`vfma` calls), so a lane's result depends only on that lane's inputs: a
filter gives the same bits in any lane, next to any other filters, on any x86
CPU (without FMA hardware LLVM calls libm's exactly rounded ``fma``). That is
what makes ``score_many(ref, [p1..pN])[i] == haaqi(ref, pi)`` hold when the
processed signals share registers.

:data:`f32x8` (``<8 x float>``) carries the BM covariance's lag products
(:func:`.filters._lag_sums`): :func:`vzero8`, :func:`vsplat8`, :func:`vload8`
and :func:`vstore8` (unaligned loads and stores of eight contiguous float32
values, unchecked), :func:`vadd8` and :func:`vfma8`.

The functions are numba intrinsics: call them from ``@njit`` code only, and
keep vectors inside a kernel (they are not meant as arguments of compiled
functions that are cached).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

LANES = 4

_F64 = ir.DoubleType()
_VEC = ir.VectorType(_F64, LANES)
_I32 = ir.IntType(32)


class F64x4(types.Type):
    """numba type of four float64 lanes (LLVM ``<4 x double>``)."""

    def __init__(self):
        super().__init__(name="F64x4")


f64x4 = F64x4()


def _register_vector(numba_type: type, vec: ir.VectorType) -> None:
    """Give ``numba_type`` the data model of the LLVM vector ``vec`` (values held in registers)."""
    class _Model(models.PrimitiveModel):
        def __init__(self, dmm, fe_type):
            super().__init__(dmm, fe_type, vec)
    register_model(numba_type)(_Model)


_register_vector(F64x4, _VEC)


def _lanes(builder, values, vec_type=_VEC):
    vec = ir.Constant(vec_type, ir.Undefined)
    for i, v in enumerate(values):
        vec = builder.insert_element(vec, v, ir.Constant(_I32, i))
    return vec


@intrinsic
def vsplat(typingctx, x):
    """All four lanes = ``x`` (a float64)."""
    if x != types.float64:
        return None

    def codegen(context, builder, sig, args):
        return _lanes(builder, [args[0]] * LANES)
    return f64x4(types.float64), codegen


@intrinsic
def vset(typingctx, a, b, c, d):
    """Lanes (a, b, c, d), float64 each."""
    if any(t != types.float64 for t in (a, b, c, d)):
        return None

    def codegen(context, builder, sig, args):
        return _lanes(builder, args)
    return f64x4(types.float64, types.float64, types.float64, types.float64), codegen


@intrinsic
def vget(typingctx, v, i):
    """Lane ``i`` (0..3) of ``v``."""
    if v != f64x4 or not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        idx = args[1]
        if idx.type.width > 32:
            idx = builder.trunc(idx, _I32)
        elif idx.type.width < 32:
            idx = builder.sext(idx, _I32)
        return builder.extract_element(args[0], idx)
    return types.float64(f64x4, i), codegen


def _binary(op, vty=f64x4):
    """The lane-wise IEEE operation ``op`` (an llvmlite builder method) on two vectors of type ``vty``."""
    @intrinsic
    def fn(typingctx, a, b):
        if a != vty or b != vty:
            return None

        def codegen(context, builder, sig, args):
            return getattr(builder, op)(args[0], args[1])
        return vty(vty, vty), codegen
    return fn


vadd = _binary("fadd")
vadd.__doc__ = "a + b, lane-wise."
vsub = _binary("fsub")
vsub.__doc__ = "a - b, lane-wise."
vmul = _binary("fmul")
vmul.__doc__ = "a * b, lane-wise."


def _fused(vty, vec: ir.VectorType, llvm_name: str):
    """a * b + c with one rounding, lane-wise, on vectors of type ``vty`` (LLVM intrinsic ``llvm_name``)."""
    @intrinsic
    def fn(typingctx, a, b, c):
        if a != vty or b != vty or c != vty:
            return None

        def codegen(context, builder, sig, args):
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vec, [vec] * 3), llvm_name)
            return builder.call(fma, args)
        return vty(vty, vty, vty), codegen
    return fn


vfma = _fused(f64x4, _VEC, "llvm.fma.v4f64")
vfma.__doc__ = "a * b + c with one rounding, lane-wise (``llvm.fma``)."


@intrinsic
def vneg(typingctx, a):
    """-a, lane-wise (sign flip, exact)."""
    if a != f64x4:
        return None

    def codegen(context, builder, sig, args):
        return builder.fneg(args[0])
    return f64x4(f64x4), codegen


@intrinsic
def vsqrt(typingctx, a):
    """Correctly rounded square root, lane-wise."""
    if a != f64x4:
        return None

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VEC, [_VEC]), "llvm.sqrt.v4f64")
        return builder.call(fn, args)
    return f64x4(f64x4), codegen


@intrinsic
def vmax(typingctx, a, b):
    """max(a, b) lane-wise (``a`` where a > b, else ``b``)."""
    if a != f64x4 or b != f64x4:
        return None

    def codegen(context, builder, sig, args):
        return builder.select(builder.fcmp_ordered(">", args[0], args[1]), args[0], args[1])
    return f64x4(f64x4, f64x4), codegen


@intrinsic
def vmax0(typingctx, a):
    """max(a, 0.0) lane-wise (``a`` where a > 0, else +0.0)."""
    if a != f64x4:
        return None

    def codegen(context, builder, sig, args):
        zero = ir.Constant(_VEC, [ir.Constant(_F64, 0.0)] * LANES)
        return builder.select(builder.fcmp_ordered(">", args[0], zero), args[0], zero)
    return f64x4(f64x4), codegen


# Eight float32 lanes (one AVX2 register), for dot products that run along a lag axis.

LANES32 = 8
_F32 = ir.FloatType()
_VEC32 = ir.VectorType(_F32, LANES32)


class F32x8(types.Type):
    """numba type of eight float32 lanes (LLVM ``<8 x float>``)."""

    def __init__(self):
        super().__init__(name="F32x8")


f32x8 = F32x8()
_register_vector(F32x8, _VEC32)


def _contiguous_f32(arr) -> bool:
    return isinstance(arr, types.Array) and arr.dtype == types.float32 and arr.ndim == 1 and arr.layout == "C"


def _element_pointer(context, builder, sig, args):
    """Pointer to ``arr[i]`` (args = (arr, i, ...)) as a vector pointer."""
    ary = context.make_array(sig.args[0])(context, builder, args[0])
    idx = context.cast(builder, args[1], sig.args[1], types.intp)
    return builder.bitcast(builder.gep(ary.data, [idx]), _VEC32.as_pointer())


@intrinsic
def vzero8(typingctx):
    """Eight lanes of 0.0."""
    def codegen(context, builder, sig, args):
        return ir.Constant(_VEC32, [ir.Constant(_F32, 0.0)] * LANES32)
    return f32x8(), codegen


@intrinsic
def vsplat8(typingctx, x):
    """All eight lanes = ``x`` (a float32)."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return _lanes(builder, [args[0]] * LANES32, _VEC32)
    return f32x8(types.float32), codegen


@intrinsic
def vload8(typingctx, arr, i):
    """``arr[i:i + 8]`` as a vector (unaligned load, no bounds check: the caller keeps i + 8 <= arr.size).

    ``arr`` is a contiguous 1-D float32 array.
    """
    if not _contiguous_f32(arr) or not isinstance(i, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig, args)
        return builder.load(ptr, align=4)
    return f32x8(arr, i), codegen


@intrinsic
def vstore8(typingctx, arr, i, v):
    """``arr[i:i + 8] = v`` (unaligned store, no bounds check)."""
    if not _contiguous_f32(arr) or not isinstance(i, types.Integer) or v != f32x8:
        return None

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig, args)
        builder.store(args[2], ptr, align=4)
        return context.get_dummy_value()
    return types.none(arr, i, v), codegen


vadd8 = _binary("fadd", f32x8)
vadd8.__doc__ = "a + b, lane-wise (float32)."
vfma8 = _fused(f32x8, _VEC32, "llvm.fma.v8f32")
vfma8.__doc__ = "a * b + c with one rounding, lane-wise (``llvm.fma.v8f32``)."
