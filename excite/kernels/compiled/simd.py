"""Building blocks for micro-kernels written as LLVM IR inside numba intrinsics: explicit SIMD vectors.

NumPy-style loops in numba vectorise only when LLVM can prove enough about them; the hot inner
loops of the convolutions (`gemm`, `depthwise_cl`) are instead emitted directly as vector loads,
fused multiply-adds and stores, with the accumulators as SSA values (registers) across the loop.
One vector is VECTOR_BYTES wide (AVX-512); LLVM splits the vectors on narrower machines.

Memory is reached only through `Pointer`s (from `data_pointer`, moved by `Vectors.at`) and the
`Vectors` loads and stores. Under EXCITE_KERNEL_BOUNDSCHECK=1 (`excite.kernels.bounds`) a pointer
also carries its element offset in its array and the array's length, and every access checks the
elements it touches (a masked one: its active lanes) and raises IndexError outside the array;
otherwise the offsets are not computed and the IR is the same as without the checks.
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils

from ..bounds import enabled as _checking

VECTOR_BYTES = 64


class Pointer:
    """A pointer to one element of an array's data (``ptr``, an LLVM element pointer) and, when
    checking, that element's offset in the array and the array's length (i64 values)."""

    __slots__ = ("ptr", "offset", "length", "name")

    def __init__(self, ptr, offset=None, length=None, name="array"):
        self.ptr, self.offset, self.length, self.name = ptr, offset, length, name


class Vectors:
    """IR helpers for one element type: vector type, loads, splats, fused multiply-adds."""

    def __init__(self, context, builder, dtype, vector_bytes=VECTOR_BYTES):
        self.context = context
        self.builder = builder
        self.bits = dtype.bitwidth
        self.lanes = vector_bytes * 8 // self.bits
        self.elem = context.get_value_type(dtype)
        self.vec = ir.VectorType(self.elem, self.lanes)
        self.i32 = ir.IntType(32)
        self.i64 = ir.IntType(64)
        self.zero = ir.Constant(self.vec, [0.0] * self.lanes)
        suffix = f"v{self.lanes}f{self.bits}"
        module = builder.module
        self._fma = cgutils.get_or_insert_function(module, ir.FunctionType(self.vec, [self.vec] * 3),
                                                   f"llvm.fma.{suffix}")
        mask = ir.VectorType(ir.IntType(1), self.lanes)
        self._masked_load = cgutils.get_or_insert_function(
            module, ir.FunctionType(self.vec, [self.vec.as_pointer(), self.i32, mask, self.vec]),
            f"llvm.masked.load.{suffix}.p0")
        self._masked_store = cgutils.get_or_insert_function(
            module, ir.FunctionType(ir.VoidType(), [self.vec, self.vec.as_pointer(), self.i32, mask]),
            f"llvm.masked.store.{suffix}.p0")

    def const(self, value):
        return ir.Constant(self.i64, value)

    def at(self, base, offset):
        """The `Pointer` ``offset`` elements past ``base``."""
        offset = offset if isinstance(offset, ir.Value) else self.const(offset)
        moved = None if base.length is None else self.builder.add(base.offset, offset)
        return Pointer(self.builder.gep(base.ptr, [offset]), moved, base.length, base.name)

    def load(self, base, offset):
        """One vector: elements offset .. offset + lanes of ``base``."""
        target = self._checked(base, offset, self.lanes, "vector load")
        ptr = self.builder.bitcast(target.ptr, self.vec.as_pointer())
        return self.builder.load(ptr, align=self.bits // 8)

    def load_scalar(self, base, offset):
        """The element at ``offset`` of ``base`` (in the type of ``base``'s array)."""
        return self.builder.load(self._checked(base, offset, 1, "scalar load").ptr)

    def load_first(self, base, offset, mask):
        """The lanes of ``mask`` from memory, zeros elsewhere (nothing outside the mask is touched)."""
        target = self._checked(base, offset, self.lanes, "masked load", mask)
        ptr = self.builder.bitcast(target.ptr, self.vec.as_pointer())
        return self.builder.call(self._masked_load, [ptr, ir.Constant(self.i32, self.bits // 8), mask, self.zero])

    def store_masked(self, value, base, offset, mask):
        target = self._checked(base, offset, self.lanes, "masked store", mask)
        ptr = self.builder.bitcast(target.ptr, self.vec.as_pointer())
        self.builder.call(self._masked_store, [value, ptr, ir.Constant(self.i32, self.bits // 8), mask])

    def lanes_below(self, limit, first=0):
        """The mask of lanes first + t < limit (``limit`` an i64 value)."""
        index = ir.Constant(ir.VectorType(self.i64, self.lanes), list(range(first, first + self.lanes)))
        return self.builder.icmp_signed("<", index, self.splat(limit, ir.VectorType(self.i64, self.lanes)))

    def store(self, value, base, offset):
        """``value`` (a vector of any count of elements) at elements offset .. of ``base``."""
        target = self._checked(base, offset, value.type.count, "vector store")
        ptr = self.builder.bitcast(target.ptr, value.type.as_pointer())
        self.builder.store(value, ptr, align=self.bits // 8)

    def _checked(self, base, offset, count, access, mask=None):
        """The pointer ``offset`` past ``base``; when checking, after code that raises IndexError unless
        the ``count`` elements there (with a mask: its active lanes) lie inside ``base``'s array."""
        target = self.at(base, offset)
        if target.length is None:
            return target
        builder = self.builder
        start = target.offset
        stop = builder.add(start, self.const(count))  # reported as is (a masked access: inactive lanes too)
        if mask is None:
            outside = builder.or_(builder.icmp_signed("<", start, self.const(0)),
                                  builder.icmp_signed(">", stop, target.length))
        else:
            index_type = ir.VectorType(self.i64, self.lanes)
            index = builder.add(self.splat(start, index_type), ir.Constant(index_type, list(range(self.lanes))))
            lanes_outside = builder.or_(builder.icmp_signed("<", index, ir.Constant(index_type, [0] * self.lanes)),
                                        builder.icmp_signed(">=", index, self.splat(target.length, index_type)))
            active = builder.bitcast(builder.and_(lanes_outside, mask), ir.IntType(self.lanes))
            outside = builder.icmp_unsigned("!=", active, ir.Constant(ir.IntType(self.lanes), 0))
        with builder.if_then(outside, likely=False):
            message = (f"EXCITE_KERNEL_BOUNDSCHECK: {access} outside the array '{target.name}' "
                       "(first element, end, array length)")
            self.context.call_conv.return_dynamic_user_exc(
                builder, IndexError, (message, start, stop, target.length), (None, types.int64, types.int64, types.int64))
        return target

    def shuffle(self, a, b, lanes):
        return self.builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(self.i32, len(lanes)), lanes))

    def splat(self, scalar, vec_type=None):
        vec_type = vec_type or self.vec
        undef = ir.Constant(vec_type, ir.Undefined)
        first = self.builder.insert_element(undef, scalar, ir.Constant(self.i32, 0))
        return self.shuffle(first, undef, [0] * self.lanes)

    def fma(self, a, b, c):
        return self.builder.call(self._fma, [a, b, c])


def data_pointer(context, builder, array_type, value, name="array"):
    """A `Pointer` to the first element of the array ``value`` (named ``name`` in bounds errors); the
    kernels index it with flat offsets, which assume a C-contiguous array."""
    array = context.make_array(array_type)(context, builder, value)
    if not _checking():
        return Pointer(array.data, name=name)
    if array_type.layout != "C":
        raise TypeError(f"'{name}' is reached by flat offsets and must be a C-contiguous array, got {array_type}")
    return Pointer(array.data, ir.Constant(ir.IntType(64), 0), array.nitems, name)


def no_unroll(module):
    """Loop metadata that keeps LLVM from unrolling a micro-kernel's loop: its body is already
    wide, and unrolled copies only cost compile time (the first run compiles every kernel)."""
    disable = module.add_metadata([ir.MetaDataString(module, "llvm.loop.unroll.disable")])
    loop_id = module.add_metadata([disable])
    loop_id.operands = (loop_id,) + tuple(loop_id.operands)  # a loop ID refers to itself
    return loop_id


def counted_loop(builder, count, carried, body, name):
    """``for step in range(count)`` carrying the values ``carried``; ``body(step, values)`` returns
    the next values. Returns the values after the loop (``carried`` when count <= 0)."""
    i64 = ir.IntType(64)
    entry = builder.block
    loop = builder.append_basic_block(f"{name}.loop")
    done = builder.append_basic_block(f"{name}.done")
    builder.cbranch(builder.icmp_signed(">", count, ir.Constant(i64, 0)), loop, done)
    builder.position_at_end(loop)
    step = builder.phi(i64)
    step.add_incoming(ir.Constant(i64, 0), entry)
    phis = []
    for value in carried:
        phi = builder.phi(value.type)
        phi.add_incoming(value, entry)
        phis.append(phi)
    updated = body(step, phis)
    next_step = builder.add(step, ir.Constant(i64, 1))
    end = builder.block
    step.add_incoming(next_step, end)
    for phi, value in zip(phis, updated):
        phi.add_incoming(value, end)
    back_edge = builder.cbranch(builder.icmp_signed("<", next_step, count), loop, done)
    back_edge.set_metadata("llvm.loop", no_unroll(builder.module))
    builder.position_at_end(done)
    return merge(builder, carried, entry, updated, end)


def blocked_sums(builder, count, totals, body, name, block, zero):
    """`counted_loop` for sums, in blocks of ``block`` steps: the first block adds to ``totals``
    directly, each later one sums from ``zero`` and is added to them at its end. A float32 sum over K
    terms in one chain is off by ~sqrt(K) roundings, in blocks by ~sqrt(block) + sqrt(K / block): the
    2376-term sums of a RegNet-Y 128GF grouped layer come out as close to float64 as the oneDNN ones
    (4x closer than in one chain), for one vector add per block. The blocks start at multiples of
    ``block``, so the sum does not depend on how the caller tiles the other dimensions."""
    i64 = ir.IntType(64)
    size = ir.Constant(i64, block)
    first_steps = builder.select(builder.icmp_signed("<", count, size), count, size)
    totals = counted_loop(builder, first_steps, totals, body, f"{name}.first")
    later = builder.sdiv(builder.sub(count, ir.Constant(i64, 1)), size)  # blocks after the first

    def one_block(index, carried):
        first = builder.mul(builder.add(index, ir.Constant(i64, 1)), size)
        left = builder.sub(count, first)
        steps = builder.select(builder.icmp_signed("<", left, size), left, size)
        sums = counted_loop(builder, steps, [zero] * len(carried),
                            lambda step, values: body(builder.add(first, step), values), f"{name}.block")
        return [builder.fadd(total, part) for total, part in zip(carried, sums)]

    return counted_loop(builder, later, totals, one_block, name)


def switch_values(builder, selector, values, cases):
    """``cases[code](values)`` where the i64 ``selector`` equals ``code``, ``values`` unchanged for any
    other (phi-merged): one branch per tile, not per element."""
    if not cases:
        return values
    start = builder.block
    done = builder.append_basic_block("switch.done")
    switch = builder.switch(selector, done)
    incoming = [(values, start)]
    for code, body in cases.items():
        block = builder.append_basic_block(f"switch.{code}")
        switch.add_case(ir.Constant(selector.type, code), block)
        builder.position_at_end(block)
        updated = body(values)
        incoming.append((updated, builder.block))
        builder.branch(done)
    builder.position_at_end(done)
    merged = []
    for i, value in enumerate(values):
        phi = builder.phi(value.type)
        for vals, block in incoming:
            phi.add_incoming(vals[i], block)
        merged.append(phi)
    return merged


def merge(builder, firsts, first_block, seconds, second_block):
    """Phi nodes: each value is ``firsts[i]`` coming from ``first_block``, ``seconds[i]`` from ``second_block``."""
    merged = []
    for first, second in zip(firsts, seconds):
        phi = builder.phi(first.type)
        phi.add_incoming(first, first_block)
        phi.add_incoming(second, second_block)
        merged.append(phi)
    return merged


def as_i64(builder, values):
    i64 = ir.IntType(64)
    return [builder.sext(v, i64) if v.type.width < 64 else v for v in values]


# ----- the broadcast micro-kernel ---------------------------------------------------------------


def only_if(builder, condition, values, body):
    """``body(values)`` where ``condition`` holds, ``values`` unchanged elsewhere (phi-merged)."""
    before = builder.block
    with builder.if_then(condition):
        updated = body(values)
        inside = builder.block
    return merge(builder, values, before, updated, inside)


def specialised(builder, condition, emit):
    """``emit(True)`` where ``condition`` holds, ``emit(False)`` elsewhere: two versions of a body, one
    for the common case (plain loads and stores) and one for the edges (masked ones)."""
    with builder.if_else(condition) as (then, otherwise):
        with then:
            emit(True)
        with otherwise:
            emit(False)
