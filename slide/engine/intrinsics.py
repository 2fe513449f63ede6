"""LLVM operations Numba does not expose: cache prefetch, float32 bit casts and fixed-width float32 vectors.

The vector type ``f32v`` holds :data:`slide.settings.SIMD_LANES` float32 lanes (one register:
16 with AVX-512, 8 with AVX). Kernels keep such vectors in local variables, which LLVM keeps in
registers; that is what lets :mod:`slide.engine.scoring` run a register-blocked product, the row
pass (:mod:`slide.engine.grouped`) keep a row's weights and gradient in registers, and the WTA / DWTA
hashes (:mod:`slide.engine.hashing`) keep their running maxima there, which Numba's loop vectoriser
does not find on its own. On a CPU with narrower registers LLVM splits each vector, so the code stays
correct everywhere.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from ..settings import SIMD_LANES


class F32Vec(types.Type):
    """Numba type of a vector of ``lanes`` float32 values (an LLVM ``<lanes x float>``)."""

    def __init__(self, lanes: int):
        self.lanes = lanes
        super().__init__(name=f"f32x{lanes}")


@register_model(F32Vec)
class _F32VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(ir.FloatType(), fe_type.lanes))


f32v = F32Vec(SIMD_LANES)
_VEC = ir.VectorType(ir.FloatType(), SIMD_LANES)


def _element_pointer(context, builder, aryty, ary, index):
    data = context.make_array(aryty)(context, builder, ary).data
    return builder.gep(data, [context.cast(builder, index, types.intp, types.intp)])


def _is_f32_c_array(arr) -> bool:
    return isinstance(arr, types.Array) and arr.dtype == types.float32 and arr.layout == "C"


@intrinsic
def vload(typingctx, arr, offset):
    """Lanes ``offset, offset + 1, ...`` of a C-contiguous float32 array (flat index, unchecked)."""
    if not (_is_f32_c_array(arr) and isinstance(offset, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        offset = context.cast(builder, args[1], sig.args[1], types.intp)
        return builder.load(_element_pointer(context, builder, sig.args[0], args[0], offset), typ=_VEC, align=4)

    return f32v(arr, offset), codegen


@intrinsic
def vstore(typingctx, arr, offset, v):
    """Store the lanes of ``v`` at ``offset, offset + 1, ...`` of a C-contiguous float32 array (flat index,
    unchecked)."""
    if not (_is_f32_c_array(arr) and isinstance(offset, types.Integer) and v == f32v):
        return None

    def codegen(context, builder, sig, args):
        offset = context.cast(builder, args[1], sig.args[1], types.intp)
        ptr = _element_pointer(context, builder, sig.args[0], args[0], offset)
        builder.store(args[2], builder.bitcast(ptr, _VEC.as_pointer()), align=4)
        return context.get_dummy_value()

    return types.void(arr, offset, v), codegen


@intrinsic
def vsplat(typingctx, x):
    """A vector with ``x`` (float32) in every lane."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        lane0 = builder.insert_element(ir.Constant(_VEC, ir.Undefined), args[0], ir.IntType(32)(0))
        zeros = ir.Constant(ir.VectorType(ir.IntType(32), SIMD_LANES), [0] * SIMD_LANES)
        return builder.shuffle_vector(lane0, ir.Constant(_VEC, ir.Undefined), zeros)

    return f32v(x), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """``a * b + c`` lane by lane, fused (LLVM ``fma``: one rounding)."""
    if not (a == b == c == f32v):
        return None

    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(_VEC, [_VEC] * 3)
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.fma.v{SIMD_LANES}f32")
        return builder.call(fn, args)

    return f32v(a, b, c), codegen


@intrinsic
def vgather(typingctx, x, idx, offset):
    """Lanes ``x[idx.flat[offset]], x[idx.flat[offset + 1]], ...``: a C-contiguous float32 ``x`` (flat
    index) gathered through a C-contiguous int32 ``idx`` of non-negative entries (unchecked). Scalar
    loads into the lanes: on AMD CPUs they beat the AVX2 gather instruction."""
    if not (_is_f32_c_array(x) and isinstance(idx, types.Array) and idx.dtype == types.int32
            and idx.layout == "C" and isinstance(offset, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        offset = context.cast(builder, args[2], sig.args[2], types.intp)
        lanes = builder.load(_element_pointer(context, builder, sig.args[1], args[1], offset),
                             typ=ir.VectorType(ir.IntType(32), SIMD_LANES), align=4)
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        out = ir.Constant(_VEC, ir.Undefined)
        for i in range(SIMD_LANES):
            j = builder.zext(builder.extract_element(lanes, ir.IntType(32)(i)), ir.IntType(64))
            out = builder.insert_element(out, builder.load(builder.gep(data, [j])), ir.IntType(32)(i))
        return out

    return f32v(x, idx, offset), codegen


@intrinsic
def vselect_gt(typingctx, a, b, x, y):
    """Lane by lane ``x if a > b else y`` (``y`` where either of ``a``, ``b`` is NaN)."""
    if not (a == b == x == y == f32v):
        return None

    def codegen(context, builder, sig, args):
        return builder.select(builder.fcmp_ordered(">", args[0], args[1]), args[2], args[3])

    return f32v(a, b, x, y), codegen


@intrinsic
def vgt_mask(typingctx, a, b):
    """Bit ``i`` set where lane ``i`` of ``a`` is greater than lane ``i`` of ``b`` (False for NaN)."""
    if not (a == b == f32v):
        return None

    def codegen(context, builder, sig, args):
        bits = builder.bitcast(builder.fcmp_ordered(">", args[0], args[1]), ir.IntType(SIMD_LANES))
        return builder.zext(bits, ir.IntType(64))

    return types.int64(a, b), codegen


@intrinsic
def vlane(typingctx, v, i):
    """Lane ``i`` of ``v`` as a float32 scalar (unchecked)."""
    if not (v == f32v and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        return builder.extract_element(args[0], args[1])

    return types.float32(v, i), codegen


def _prefetch_codegen(context, builder, signature, args):
    # llvm.prefetch(address of arr[indices], read, high locality, data cache)
    aryty = signature.args[0]
    ary = context.make_array(aryty)(context, builder, args[0])
    idx = [context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], signature.args[1:])]
    ptr = cgutils.get_item_pointer(context, builder, aryty, ary, idx, wraparound=False)
    i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
    i32 = ir.IntType(32)
    fnty = ir.FunctionType(ir.VoidType(), [i8p.type, i32, i32, i32])
    name = "llvm.prefetch.p0" if str(i8p.type) == "ptr" else "llvm.prefetch.p0i8"  # opaque pointers
    fn = cgutils.get_or_insert_function(builder.module, fnty, name)
    builder.call(fn, [i8p, i32(0), i32(3), i32(1)])
    return context.get_dummy_value()


@intrinsic
def prefetch(typingctx, arr, r, c):
    """Hint the CPU to fetch the cache line holding ``arr[r, c]`` (LLVM ``prefetch``, read, L1)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 2):
        return None
    return types.void(arr, r, c), _prefetch_codegen


@intrinsic
def prefetch1(typingctx, arr, i):
    """:func:`prefetch` of ``arr[i]`` of a 1-d array."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1):
        return None
    return types.void(arr, i), _prefetch_codegen


@intrinsic
def f32_bits(typingctx, x):
    """The IEEE 754 bits of a float (cast to float32 first) as a uint32 (LLVM ``bitcast``)."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, sig, args):
        x32 = context.cast(builder, args[0], sig.args[0], types.float32)
        return builder.bitcast(x32, ir.IntType(32))

    return types.uint32(x), codegen


@intrinsic
def f32_from_bits(typingctx, bits):
    """The float32 whose IEEE 754 bits are the low 32 bits of the integer ``bits`` (LLVM ``bitcast``)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        b32 = context.cast(builder, args[0], sig.args[0], types.uint32)
        return builder.bitcast(b32, ir.FloatType())

    return types.float32(bits), codegen
