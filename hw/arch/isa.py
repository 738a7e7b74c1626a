"""The two-level instruction set, defined once.

The layouts below are :mod:`amaranth.lib.data` structures with :mod:`amaranth.lib.enum`
opcodes. The same definitions encode instructions in the compiler
(:func:`encode_global`, :func:`encode_uop`), decode them in the instruction-level simulator
(:func:`decode_global`, :func:`decode_uop`) and, as ``Signal(GlobalInsn)`` / ``Signal(MicroOp)``,
type the decoders of the RTL. docs/isa.md gives every field and each instruction's semantics.

Level 1, global instructions (256 bits), run by the global controller in program order.
Level 2, micro-ops (128 bits), run by a group's micro-sequencer: access micro-ops (LOOP, ACT,
WGT) configure the group's address generators once per RUN; execute micro-ops (CLEAR, MAC, POST,
WRITE) run once per output pixel of the RUN. :func:`parse_micro_program` decodes a whole
micro-program into what those configure: its tap loop nest, ACT/WGT registers and execute body.
"""

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from amaranth.hdl import signed, unsigned
from amaranth.lib import data, enum

__all__ = [
    "GlobalOp", "Space", "CounterAction", "UopOp", "NormStep", "GlobalInsn", "MicroOp",
    "GLOBAL_BYTES", "UOP_BYTES", "GLOBAL_ARGS", "UOP_ARGS", "PARAM_BYTES", "LUT_BYTES",
    "LOOP_LEVELS", "GROUP_MASK_BITS", "MAX_GROUPS", "PARAM_LAYOUT", "PARAM_DTYPE", "COUNTER_NAMES",
    "unit_bytes", "encode_global", "decode_global", "encode_uop", "decode_uop", "fields_of",
    "Loop", "ActRegisters", "WgtRegisters", "ExecuteOp", "MicroProgram", "parse_micro_program",
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
    NORM = 8


class NormStep(enum.Enum, shape=1):
    """What a NORM micro-op does with its lanes' sums (docs/isa.md, InstanceNorm)."""

    SAVE = 0    #: ``PARAM[param_offset + l].bias = acc[l]``
    FINISH = 1  #: the normalization's PARAM entry from the saved sums and the constants


class DmaArgs(data.Struct):
    space: Space
    group_mask: unsigned(GROUP_MASK_BITS)
    ext_addr: unsigned(32)
    local_addr: unsigned(24)
    length: unsigned(24)
    chunk: unsigned(24)


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


class MacArgs(data.Struct):
    square: unsigned(1)


class PostArgs(data.Struct):
    use_lut: unsigned(1)
    lut: unsigned(8)
    per_lane: unsigned(1)


class WriteArgs(data.Struct):
    base: unsigned(24)
    row_stride: unsigned(24)
    col_stride: unsigned(24)
    lane_stride: unsigned(16)


class NormArgs(data.Struct):
    step: NormStep
    count: unsigned(24)
    eps: unsigned(48)


UOP_ARGS = {
    UopOp.NOP: None, UopOp.LOOP: LoopArgs, UopOp.ACT: ActArgs, UopOp.WGT: WgtArgs,
    UopOp.CLEAR: ClearArgs, UopOp.MAC: MacArgs, UopOp.POST: PostArgs, UopOp.WRITE: WriteArgs,
    UopOp.NORM: NormArgs,
}


class MicroOp(data.Struct):
    """A 128-bit micro-op: opcode and a union of the operand layouts."""

    op: UopOp
    args: data.UnionLayout({"loop": LoopArgs, "act": ActArgs, "wgt": WgtArgs,
                            "clear": ClearArgs, "mac": MacArgs, "post": PostArgs,
                            "write": WriteArgs, "norm": NormArgs})
    pad: unsigned(UOP_BITS - 4 - max(data.Layout.cast(a).size for a in
                                     (LoopArgs, ActArgs, WgtArgs, ClearArgs, MacArgs, PostArgs,
                                      WriteArgs, NormArgs)))


_GLOBAL_LAYOUT = data.Layout.cast(GlobalInsn)
_UOP_LAYOUT = data.Layout.cast(MicroOp)
assert _GLOBAL_LAYOUT.size == GLOBAL_BITS and _UOP_LAYOUT.size == UOP_BITS

_UNION_KEY = {DmaArgs: "dma", RouteArgs: "route", RunArgs: "run", BarrierArgs: "barrier",
              CountersArgs: "counters", LoopArgs: "loop", ActArgs: "act", WgtArgs: "wgt",
              ClearArgs: "clear", MacArgs: "mac", PostArgs: "post", WriteArgs: "write",
              NormArgs: "norm"}


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


# --- micro-programs --------------------------------------------------------------------------


class Loop(NamedTuple):
    """One level of a micro-program's tap loop nest, as a LOOP micro-op sets it."""

    count: int
    act_stride: int
    wgt_stride: int


class ActRegisters(NamedTuple):
    """The access engine's activation address registers, as an ACT micro-op sets them."""

    base: int
    row_stride: int
    col_stride: int


class WgtRegisters(NamedTuple):
    """The access engine's weight address registers, as a WGT micro-op sets them."""

    base: int
    lane_stride: int


class ExecuteOp(NamedTuple):
    """One execute micro-op of a micro-program's per-pixel body (CLEAR, MAC, POST, WRITE or
    NORM)."""

    op: UopOp
    fields: dict


#: A loop level no LOOP micro-op configures: one iteration, no stride.
_UNSET_LOOP = Loop(1, 0, 0)


@dataclass(frozen=True, eq=False)
class MicroProgram:
    """A decoded micro-program (see :func:`parse_micro_program`).

    Attributes
    ----------
    loops : tuple of Loop
        The :data:`LOOP_LEVELS` levels of the tap loop nest, 0 outermost.
    act : ActRegisters
    wgt : WgtRegisters
    act_taps, wgt_taps : read-only int64 array
        Every tap's ACT and WGT address offset, ``sum(i_k * stride_k)`` over the levels, in
        docs/isa.md's row-major tap order (level 2 fastest).
    body : tuple of ExecuteOp
        The execute micro-ops, in program order.
    """

    loops: tuple
    act: ActRegisters
    wgt: WgtRegisters
    act_taps: np.ndarray
    wgt_taps: np.ndarray
    body: tuple

    @property
    def mac_passes(self):
        """How many MAC micro-ops the body holds: each runs the whole tap loop nest."""
        return sum(op == UopOp.MAC for op, _ in self.body)

    @property
    def norm(self):
        """The body's NORM micro-op's operands, or None."""
        return next((fields for op, fields in self.body if op == UopOp.NORM), None)

    @property
    def writes(self):
        """Whether the body writes its pixels to ACT (holds a WRITE)."""
        return any(op == UopOp.WRITE for op, _ in self.body)


def parse_micro_program(words):
    """Decode the micro-op words of one RUN, as its group's micro-sequencer sees them.

    The access micro-ops (LOOP, ACT, WGT) set registers; the last one of each kind (and of each
    LOOP level) wins, wherever it stands; a loop level not set counts 1 with strides 0. The
    execute micro-ops (CLEAR, MAC, POST, WRITE) form the body; NOPs are dropped.

    Parameters
    ----------
    words : iterable of int
        Encoded micro-ops (:func:`encode_uop`), in program order.

    Returns
    -------
    MicroProgram

    Raises
    ------
    ValueError
        On a word that is no micro-op, or a LOOP level of :data:`LOOP_LEVELS` or more.
    """
    loops = [_UNSET_LOOP] * LOOP_LEVELS
    act, wgt, body = ActRegisters(0, 0, 0), WgtRegisters(0, 0), []
    for word in words:
        op, fields = decode_uop(word)
        if op == UopOp.LOOP:
            if fields["level"] >= LOOP_LEVELS:
                raise ValueError(f"LOOP level {fields['level']} (levels are "
                                 f"0..{LOOP_LEVELS - 1})")
            loops[fields["level"]] = Loop(fields["count"], fields["act_stride"],
                                          fields["wgt_stride"])
        elif op == UopOp.ACT:
            act = ActRegisters(fields["base"], fields["row_stride"], fields["col_stride"])
        elif op == UopOp.WGT:
            wgt = WgtRegisters(fields["base"], fields["lane_stride"])
        elif op != UopOp.NOP:
            body.append(ExecuteOp(op, fields))
    grids = np.meshgrid(*(np.arange(loop.count) for loop in loops), indexing="ij")
    act_taps = np.asarray(sum(g * loop.act_stride for g, loop in zip(grids, loops)).ravel(),
                          np.int64)
    wgt_taps = np.asarray(sum(g * loop.wgt_stride for g, loop in zip(grids, loops)).ravel(),
                          np.int64)
    act_taps.flags.writeable = wgt_taps.flags.writeable = False
    return MicroProgram(tuple(loops), act, wgt, act_taps, wgt_taps, tuple(body))
