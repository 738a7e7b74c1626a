"""The two-level instruction set, defined once.

The layouts below are :mod:`amaranth.lib.data` structures with :mod:`amaranth.lib.enum`
opcodes. The same definitions encode instructions in the compiler
(:func:`encode_global`, :func:`encode_uop`), decode them in the instruction-level simulator
(:func:`decode_global`, :func:`decode_uop`) and, as ``Signal(GlobalInsn)`` / ``Signal(MicroOp)``,
type the decoders of the RTL. docs/isa.md gives every field and each instruction's semantics.

Level 1, global instructions (256 bits), run by the global controller in program order.
Level 2, micro-ops (128 bits), run by a group's micro-sequencer: access micro-ops (LOOP, ACT,
WGT) configure the group's address generators once per RUN; execute micro-ops (CLEAR, MAC, POST,
WRITE) run once per output pixel of the RUN.
"""


import numpy as np
from amaranth.hdl import signed, unsigned
from amaranth.lib import data, enum

__all__ = [
    "GlobalOp", "Space", "CounterAction", "UopOp", "GlobalInsn", "MicroOp",
    "GLOBAL_BYTES", "UOP_BYTES", "GLOBAL_ARGS", "UOP_ARGS", "PARAM_BYTES", "LUT_BYTES",
    "LOOP_LEVELS", "GROUP_MASK_BITS", "MAX_GROUPS", "PARAM_LAYOUT", "PARAM_DTYPE", "COUNTER_NAMES",
    "unit_bytes", "encode_global", "decode_global", "encode_uop", "decode_uop", "fields_of",
]

GLOBAL_BITS = 256
UOP_BITS = 128
GLOBAL_BYTES = GLOBAL_BITS // 8
UOP_BYTES = UOP_BITS // 8
#: One post-processing parameter entry: int32 bias, int16 multiplier, uint8 shift, 1 pad byte.
PARAM_BYTES = 8
#: One activation look-up table: 256 int8 entries indexed by ``x + 128``.
LUT_BYTES = 256
LOOP_LEVELS = 3
#: Bits of a group mask (DMA, ROUTE, RUN, BARRIER): one per group, so at most 16 groups.
GROUP_MASK_BITS = 16
MAX_GROUPS = GROUP_MASK_BITS
#: The performance counters, in the order COUNTERS stores them (8 bytes each) and the
#: controller's register file lists them.
COUNTER_NAMES = ("cycles", "macs_issued", "macs_skipped", "dma_bytes", "busy_cycles",
                 "stall_cycles", "runs", "instructions")

#: One PARAM entry as stored (PARAM_BYTES little-endian bytes): see docs/isa.md.
PARAM_LAYOUT = data.StructLayout({
    "bias": signed(32),
    "multiplier": signed(16),
    "shift": unsigned(8),
    "pad": unsigned(8),
})
assert PARAM_LAYOUT.size == 8 * PARAM_BYTES
#: One PARAM entry as numpy reads it (the fields of :data:`PARAM_LAYOUT`, little-endian).
PARAM_DTYPE = np.dtype([(name, f"<{'i' if f.shape.signed else 'u'}{f.shape.width // 8}")
                        for name, f in PARAM_LAYOUT])
assert PARAM_DTYPE.itemsize == PARAM_BYTES


class GlobalOp(enum.Enum, shape=4):
    """Opcodes of the global (level 1) instructions."""

    NOP = 0
    DMA_LOAD = 1
    DMA_STORE = 2
    UOP_LOAD = 3
    ROUTE = 4
    RUN = 5
    BARRIER = 6
    COUNTERS = 7
    END = 8


class Space(enum.Enum, shape=3):
    """On-chip memory a DMA transfer reads or writes."""

    ACT = 0    #: the banked activation scratchpad (shared, behind the crossbar)
    WGT = 1    #: a group's weight buffer
    PARAM = 2  #: a group's post-processing parameters (PARAM_BYTES per entry)
    LUT = 3    #: a group's activation look-up tables (LUT_BYTES per table)
    UOP = 4    #: a group's micro-op memory (UOP_BYTES per micro-op)


def unit_bytes(space):
    """Bytes of one addressable unit of ``space``: DMA ``local_addr`` counts these units
    (``length`` counts bytes, a whole number of units)."""
    return {Space.ACT: 1, Space.WGT: 1, Space.PARAM: PARAM_BYTES, Space.LUT: LUT_BYTES,
            Space.UOP: UOP_BYTES}[Space(space)]


class CounterAction(enum.Enum, shape=2):
    """What COUNTERS does with the performance counters."""

    RESET = 0
    STORE = 1


class UopOp(enum.Enum, shape=4):
    """Opcodes of the per-group (level 2) micro-ops."""

    NOP = 0
    LOOP = 1
    ACT = 2
    WGT = 3
    CLEAR = 4
    MAC = 5
    POST = 6
    WRITE = 7


class DmaArgs(data.Struct):
    space: Space
    group_mask: unsigned(GROUP_MASK_BITS)
    ext_addr: unsigned(32)
    local_addr: unsigned(24)
    length: unsigned(24)


class RouteArgs(data.Struct):
    group_mask: unsigned(GROUP_MASK_BITS)
    bank_first: unsigned(8)
    bank_count: unsigned(8)


class RunArgs(data.Struct):
    group_mask: unsigned(GROUP_MASK_BITS)
    uop_addr: unsigned(12)
    uop_count: unsigned(8)
    rows: unsigned(12)
    cols: unsigned(12)
    lanes: unsigned(8)
    act_offset: unsigned(24)
    wgt_offset: unsigned(24)
    param_offset: unsigned(16)
    out_offset: unsigned(24)
    lut_offset: unsigned(8)


class BarrierArgs(data.Struct):
    group_mask: unsigned(GROUP_MASK_BITS)


class CountersArgs(data.Struct):
    action: CounterAction
    ext_addr: unsigned(32)


#: Payload layout of each global opcode (None: no operands).
GLOBAL_ARGS = {
    GlobalOp.NOP: None, GlobalOp.DMA_LOAD: DmaArgs, GlobalOp.DMA_STORE: DmaArgs,
    GlobalOp.UOP_LOAD: DmaArgs, GlobalOp.ROUTE: RouteArgs, GlobalOp.RUN: RunArgs,
    GlobalOp.BARRIER: BarrierArgs, GlobalOp.COUNTERS: CountersArgs, GlobalOp.END: None,
}


class GlobalInsn(data.Struct):
    """A 256-bit global instruction: opcode and a union of the operand layouts."""

    op: GlobalOp
    args: data.UnionLayout({"dma": DmaArgs, "route": RouteArgs, "run": RunArgs,
                            "barrier": BarrierArgs, "counters": CountersArgs})
    pad: unsigned(GLOBAL_BITS - 4 - max(data.Layout.cast(a).size for a in
                                        (DmaArgs, RouteArgs, RunArgs, BarrierArgs,
                                         CountersArgs)))


class LoopArgs(data.Struct):
    level: unsigned(2)
    count: unsigned(16)
    act_stride: signed(24)
    wgt_stride: signed(24)


class ActArgs(data.Struct):
    base: signed(24)
    row_stride: signed(24)
    col_stride: signed(24)


class WgtArgs(data.Struct):
    base: unsigned(24)
    lane_stride: unsigned(16)


class ClearArgs(data.Struct):
    use_bias: unsigned(1)


class PostArgs(data.Struct):
    use_lut: unsigned(1)
    lut: unsigned(8)
    per_lane: unsigned(1)


class WriteArgs(data.Struct):
    base: unsigned(24)
    row_stride: unsigned(24)
    col_stride: unsigned(24)
    lane_stride: unsigned(16)


UOP_ARGS = {
    UopOp.NOP: None, UopOp.LOOP: LoopArgs, UopOp.ACT: ActArgs, UopOp.WGT: WgtArgs,
    UopOp.CLEAR: ClearArgs, UopOp.MAC: None, UopOp.POST: PostArgs, UopOp.WRITE: WriteArgs,
}


class MicroOp(data.Struct):
    """A 128-bit micro-op: opcode and a union of the operand layouts."""

    op: UopOp
    args: data.UnionLayout({"loop": LoopArgs, "act": ActArgs, "wgt": WgtArgs,
                            "clear": ClearArgs, "post": PostArgs, "write": WriteArgs})
    pad: unsigned(UOP_BITS - 4 - max(data.Layout.cast(a).size for a in
                                     (LoopArgs, ActArgs, WgtArgs, ClearArgs, PostArgs,
                                      WriteArgs)))


_GLOBAL_LAYOUT = data.Layout.cast(GlobalInsn)
_UOP_LAYOUT = data.Layout.cast(MicroOp)
assert _GLOBAL_LAYOUT.size == GLOBAL_BITS and _UOP_LAYOUT.size == UOP_BITS

_UNION_KEY = {DmaArgs: "dma", RouteArgs: "route", RunArgs: "run", BarrierArgs: "barrier",
              CountersArgs: "counters", LoopArgs: "loop", ActArgs: "act", WgtArgs: "wgt",
              ClearArgs: "clear", PostArgs: "post", WriteArgs: "write"}


def fields_of(layout):
    """Names and shapes of a payload layout's fields, in order."""
    return [(name, field.shape) for name, field in data.Layout.cast(layout)]


def _encode(layout, table, op, operands):
    args = table[op]
    given = dict(operands)
    payload = {}
    if args is not None:
        names = [n for n, _ in fields_of(args)]
        unknown = set(given) - set(names)
        if unknown:
            raise ValueError(f"{op.name} has no operand(s) {sorted(unknown)}; it has {names}")
        for name, shape in fields_of(args):
            value = given.get(name, 0)
            if isinstance(shape, type) and issubclass(shape, enum.Enum):
                value = shape(value)
            else:
                s = shape
                lo, hi = (-(1 << (s.width - 1)), (1 << (s.width - 1)) - 1) if s.signed \
                    else (0, (1 << s.width) - 1)
                if not lo <= int(value) <= hi:
                    raise ValueError(f"{op.name}.{name} = {value} does not fit "
                                     f"{'signed' if s.signed else 'unsigned'}({s.width})")
                value = int(value)
            payload[name] = value
        payload = {_UNION_KEY[args]: payload}
    elif given:
        raise ValueError(f"{op.name} takes no operands, got {sorted(given)}")
    return layout.const({"op": op, "args": payload}).as_bits()


def _decode(layout, table, word):
    const = layout.from_bits(word)
    op = const.op
    args = table[op]
    if args is None:
        return op, {}
    view = getattr(const.args, _UNION_KEY[args])
    return op, {name: getattr(view, name) for name, _ in fields_of(args)}


def encode_global(op, **operands):
    """The integer encoding of a global instruction; operands not given are 0."""
    return _encode(_GLOBAL_LAYOUT, GLOBAL_ARGS, GlobalOp(op), operands)


def decode_global(word):
    """``(GlobalOp, {operand: value})`` of an encoded global instruction."""
    return _decode(_GLOBAL_LAYOUT, GLOBAL_ARGS, word)


def encode_uop(op, **operands):
    """The integer encoding of a micro-op; operands not given are 0."""
    return _encode(_UOP_LAYOUT, UOP_ARGS, UopOp(op), operands)


def decode_uop(word):
    """``(UopOp, {operand: value})`` of an encoded micro-op."""
    return _decode(_UOP_LAYOUT, UOP_ARGS, word)
