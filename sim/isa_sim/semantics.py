"""What every instruction does to the machine: one function per opcode, as docs/isa.md's
pseudo-code, on a :class:`~.state.MachineState`.

Global instructions: :func:`dma_load`, :func:`dma_store`, :func:`uop_load`, :func:`route`,
:func:`run` (one group's part of a RUN), :func:`barrier`, :func:`counters`, :func:`end`; NOP does
nothing. The execute micro-ops of a RUN's body: :func:`clear`, :func:`mac`, :func:`post`,
:func:`write`, :func:`norm`; the access micro-ops (LOOP, ACT, WGT) only set registers, decoded by
:func:`flexigan.hw.arch.isa.parse_micro_program`.

Each function raises :class:`~.state.ProgramError` where the program does something the ISA does
not define, and returns what the cycle model (:mod:`.cycle_model`) needs to time it: a
:class:`Transfer` for a DMA, a :class:`RunRecord` for a group's RUN, the groups a wait is for.
Time never changes what an instruction computes.

A RUN executes vectorised: the loop nest of its micro-program becomes an array of (pixel x tap)
activation addresses, gathered and multiplied with the (tap x lane) weights in float64 (exact:
every partial sum of int8 products stays far below 2**53), then POST and WRITE apply to all
pixels at once. A RUN must not write what it reads (the compiler never does).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from ...hw.arch import isa, numerics
from .state import MachineState, ProgramError, check_run_addresses

__all__ = ["Transfer", "MacPass", "Footprint", "RunRecord", "micro_program", "dma_load",
           "dma_store", "uop_load", "route", "run", "clear", "mac", "post", "write", "norm",
           "barrier", "counters", "end"]


# --- level 1: global instructions ---------------------------------------------------------------

@dataclass(frozen=True)
class Transfer:
    """What one DMA instruction moved.

    Attributes
    ----------
    store : bool
        ACT to external memory (DMA_STORE), else external memory to ``space``.
    space : Space
    groups : tuple of int
        The groups whose ``space`` it wrote (none for ACT).
    start, stop : int
        The units of ``space`` it touched, ``[start, stop)``.
    length : int
        Bytes.
    """

    store: bool
    space: isa.Space
    groups: tuple
    start: int
    stop: int
    length: int


def _count_dma(state, space, length):
    state.dma_bytes += length
    state.dma_bytes_by_space[space] += length


def _scatter_chunk(state, space, args, groups):
    """Bytes each group receives of a DMA_LOAD with ``chunk`` (a :class:`ProgramError` unless
    it is a whole number of bus words, the local address is word-aligned, and ``length`` is a
    chunk per group of the mask)."""
    chunk, word = args["chunk"], state.config.axi_bytes
    local_bytes = args["local_addr"] * isa.unit_bytes(space)
    if space == isa.Space.ACT or chunk % word or local_bytes % word \
            or args["length"] != chunk * len(groups):
        raise ProgramError(f"DMA_LOAD of {space.name} with chunk={chunk}: needs a group space, "
                           f"a multiple of the {word}-byte bus word, a word-aligned local "
                           f"address and length = chunk x groups ({args['length']} bytes for "
                           f"{len(groups)} groups)")
    return chunk


def _write_group(state, space, g, units, source):
    if space == isa.Space.WGT:
        state.wgt[g, units] = source.view(np.int8)
    elif space == isa.Space.PARAM:
        state.param[g, units] = source.view(isa.PARAM_DTYPE)
    elif space == isa.Space.LUT:
        state.lut[g, units] = source.view(np.int8).reshape(-1, isa.LUT_BYTES)
    else:
        words = source.reshape(-1, isa.UOP_BYTES)
        state.uop[g, units] = [int.from_bytes(w.tobytes(), "little") for w in words]


def dma_load(state, args):
    """DMA_LOAD: ``ACT[local : local+n] = mem[ext : ext+n]``, or for every group ``g`` in the
    mask ``SPACE[g][local...] = mem[ext : ext+n]`` (``local`` counts units of the space); with
    ``chunk`` ``c`` (scatter), the ``k``-th group of the mask (lowest first) receives
    ``mem[ext + k*c : ext + (k+1)*c]`` instead."""
    space, length = args["space"], args["length"]
    source = state.memory[state.external(args["ext_addr"], length)]
    groups = () if space == isa.Space.ACT else tuple(state.groups(args["group_mask"]))
    scatter = bool(args.get("chunk"))
    chunk = _scatter_chunk(state, space, args, groups) if scatter else length
    units = state.local(space, args["local_addr"], chunk)
    if space == isa.Space.ACT:
        state.act[units] = source.view(np.int8)
    for k, g in enumerate(groups):
        first = k * chunk if scatter else 0
        _write_group(state, space, g, units, source[first:first + chunk])
    _count_dma(state, space, length)
    return Transfer(False, space, groups, units.start, units.stop, length)


def dma_store(state, args):
    """DMA_STORE: ``mem[ext : ext+n] = ACT[local : local+n]`` (ACT is the only space it
    reads)."""
    space, length = args["space"], args["length"]
    target = state.external(args["ext_addr"], length)
    if space != isa.Space.ACT:
        raise ProgramError(f"DMA_STORE reads ACT only, not {space.name}")
    if args.get("chunk"):
        raise ProgramError(f"DMA_STORE has no chunk (a scatter is a load), not "
                           f"chunk={args['chunk']}")
    units = state.local(space, args["local_addr"], length)
    state.memory[target] = state.act[units].view(np.uint8)
    _count_dma(state, space, length)
    return Transfer(True, space, (), units.start, units.stop, length)


def uop_load(state, args):
    """UOP_LOAD: for every group ``g`` in the mask, ``UOP[g][local : local + n/16] =
    mem[ext : ext+n]`` (a DMA_LOAD into UOP, whatever its ``space`` field says)."""
    return dma_load(state, {**args, "space": isa.Space.UOP})


def route(state, args):
    """ROUTE: crossbar port ``g`` of every group in the mask reads banks ``first ..
    first + count - 1``."""
    first, count = args["bank_first"], args["bank_count"]
    if count < 1 or first + count > state.config.act_banks:
        raise ProgramError(f"ROUTE to banks {first}+{count} of {state.config.act_banks}")
    for g in state.groups(args["group_mask"]):
        state.route[g] = (first, count)


def barrier(state, args):
    """BARRIER: nothing happens but time; the groups in the mask, whose RUNs (and all DMA) the
    controller waits for."""
    return state.groups(args["group_mask"])


def counters(state, args, values):
    """COUNTERS: RESET zeroes the counters of work (the cycle model zeroes its own); STORE
    writes ``values`` (name -> int) as 8 little-endian bytes each, in
    :data:`~flexigan.hw.arch.isa.COUNTER_NAMES` order, at ``ext``, and returns what it moved
    (a :class:`Transfer`: the DMA engine writes the block, as a store of ACT)."""
    if args["action"] == isa.CounterAction.RESET:
        state.reset_counters()
        return None
    block = b"".join(int(values[name]).to_bytes(8, "little") for name in isa.COUNTER_NAMES)
    state.memory[state.external(args["ext_addr"], len(block))] = np.frombuffer(block, np.uint8)
    return Transfer(True, isa.Space.ACT, (), 0, 0, len(block))


def end(state):
    """END: stop, once every group and all DMA is done; the groups to wait for (all)."""
    return state.all_groups


# --- RUN and its execute micro-ops -----------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def micro_program(words):
    """The decoded micro-program of a tuple of encoded micro-ops (cached: a model's RUNs share
    a few)."""
    try:
        return isa.parse_micro_program(words)
    except ValueError as error:
        raise ProgramError(str(error)) from None


@dataclass(frozen=True, eq=False)
class MacPass:
    """What one MAC micro-op read, for the cycle model: ``addresses[pixel, tap]`` in ACT and
    the ``activations`` there."""

    addresses: np.ndarray
    activations: np.ndarray


@dataclass(frozen=True)
class Footprint:
    """The on-chip memory a RUN of one group reads and writes, as ``(start, stop)`` ranges
    (empty when ``start >= stop``); DMA waits for the RUN where it overwrites them.

    Attributes
    ----------
    act_read : (int, int)
        ACT bytes its MACs read.
    act_write : (int, int)
        ACT bytes its last WRITE wrote.
    weights : (int, int)
        WGT bytes its MACs read.
    params : (int, int)
        PARAM entries of its lanes.
    tables : frozenset of int
        LUT tables its POSTs looked up.
    uops : (int, int)
        UOP entries of its micro-program.
    """

    act_read: tuple
    act_write: tuple
    weights: tuple
    params: tuple
    tables: frozenset
    uops: tuple


@dataclass(frozen=True, eq=False)
class RunRecord:
    """What one group's RUN did.

    Attributes
    ----------
    program : MicroProgram
    pixels : int64 array
        Each pixel's ACT address before the taps (``act_offset + ACT.base + r*ACT.row_stride +
        c*ACT.col_stride``), row-major.
    lanes : int
    passes : tuple of MacPass
        One per MAC micro-op, in program order.
    macs_issued, macs_skipped : int
        MACs the lanes did, and those the sparse core dropped.
    footprint : Footprint
    """

    program: isa.MicroProgram
    pixels: np.ndarray
    lanes: int
    passes: tuple
    macs_issued: int
    macs_skipped: int
    footprint: Footprint


@dataclass(eq=False)
class Execution:
    """One group's RUN while its body executes, over all its pixels at once: the run
    registers, the accumulators ``acc[pixel, lane]``, POST's results and what it has read and
    written so far."""

    state: MachineState
    group: int
    args: dict
    program: isa.MicroProgram
    sparse: bool
    params: np.ndarray
    pixels: np.ndarray
    acc: np.ndarray
    kept_taps: np.ndarray       # per pixel, the taps whose MACs the lanes did
    act_read: tuple             # see Footprint
    weights: tuple
    act_write: tuple = (0, 0)
    tables: set = field(default_factory=set)
    result: np.ndarray | None = None
    passes: list = field(default_factory=list)
    params_read: int = 0        # PARAM entries a NORM FINISH reads (0: the lanes')

    @property
    def lane(self):
        """The lane numbers, ``[0, lanes)``."""
        return np.arange(self.args["lanes"])


def run(state, group, args, sparse):
    """One group's part of RUN: run ``UOP[group][uop_addr : uop_addr+uop_count]`` with the run
    registers ``args``, for every pixel ``(r, c)`` of ``rows x cols``, its execute micro-ops in
    program order. The controller calls it for each group in the mask, in order.

    ``sparse``: whether the sparse core drops zero activations (only the MAC counts differ).
    """
    config, lanes = state.config, args["lanes"]
    uop_addr, uop_count = args["uop_addr"], args["uop_count"]
    words = tuple(state.uop[group, uop_addr:uop_addr + uop_count])
    if len(words) != uop_count:
        raise ProgramError(f"RUN reads micro-ops beyond the {config.uop_depth}-entry micro-op "
                           "memory")
    program = micro_program(words)
    rows, cols = np.arange(args["rows"]), np.arange(args["cols"])
    base, row_stride, col_stride = program.act
    pixels = (args["act_offset"] + base + rows[:, None] * row_stride
              + cols[None, :] * col_stride).ravel()
    params = state.param[group, args["param_offset"]:args["param_offset"] + lanes]
    if len(params) != lanes:
        raise ProgramError("RUN reads PARAM entries beyond the PARAM memory")
    execution = Execution(state, group, args, program, sparse, params, pixels,
                          acc=np.zeros((pixels.size, lanes), np.int64),
                          kept_taps=np.zeros(pixels.size, np.int64),
                          act_read=(config.act_bytes, 0), weights=(config.weight_bytes, 0))
    for op, fields in program.body:
        EXECUTE[op](execution, fields)
    kept = int(execution.kept_taps.sum())
    macs = program.mac_passes * program.act_taps.size
    issued, skipped = kept * lanes, (macs * pixels.size - kept) * lanes
    state.macs_issued += issued
    state.macs_skipped += skipped
    footprint = Footprint(execution.act_read, execution.act_write, execution.weights,
                          (args["param_offset"],
                           args["param_offset"] + (execution.params_read or params.size)),
                          frozenset(execution.tables), (uop_addr, uop_addr + uop_count))
    return RunRecord(program, pixels, lanes, tuple(execution.passes), issued, skipped, footprint)


def clear(execution, fields):
    """CLEAR: ``acc[l] = PARAM[param_offset + l].bias if use_bias else 0``."""
    lanes = execution.args["lanes"]
    start = execution.params["bias"].astype(np.int64) if fields["use_bias"] else \
        np.zeros(lanes, np.int64)
    execution.acc = np.broadcast_to(start, (execution.pixels.size, lanes)).copy()


def mac(execution, fields):
    """MAC: for every tap ``(i0, i1, i2)`` of the loop nest, ``acc[l] += a * w`` with ``a``
    the activation at the pixel's address plus the tap's and ``w`` lane ``l``'s weight of the
    tap (``a * a`` with ``square``: the weight is fetched, not used); a zero ``a`` is skipped
    (counted) when the sparse core is on."""
    state, args, program = execution.state, execution.args, execution.program
    addresses = execution.pixels[:, None] + program.act_taps[None, :]
    weight_addresses = args["wgt_offset"] + program.wgt.base \
        + execution.lane[None, :] * program.wgt.lane_stride + program.wgt_taps[:, None]
    check_run_addresses("activation", addresses, state.config.act_bytes)
    check_run_addresses("weight", weight_addresses, state.config.weight_bytes)
    if addresses.size:
        low, high = execution.act_read
        execution.act_read = (min(low, addresses.min()), max(high, addresses.max() + 1))
    if weight_addresses.size:
        low, high = execution.weights
        execution.weights = (min(low, weight_addresses.min()),
                             max(high, weight_addresses.max() + 1))
    activations = state.act[addresses]
    if fields.get("square"):
        products = (activations.astype(np.int64) ** 2).sum(axis=1)
        execution.acc += products[:, None]
    else:
        weights = state.wgt[execution.group][weight_addresses]
        execution.acc += (activations.astype(np.float64) @ weights.astype(np.float64)) \
            .astype(np.int64)
    zeros = np.count_nonzero(activations == 0, axis=1) if execution.sparse else 0
    execution.kept_taps += program.act_taps.size - zeros
    execution.passes.append(MacPass(addresses, activations))


def post(execution, fields):
    """POST: ``y[l] = requantize(acc[l], PARAM[param_offset + l])``, then if ``use_lut``
    ``y[l] = LUT[t][y[l] + 128]`` with ``t = (lut_offset + lut + (l if per_lane else 0)) mod
    tables``."""
    state, params = execution.state, execution.params
    result = numerics.requantize(execution.acc, params["multiplier"], params["shift"]) \
        .astype(np.int64)
    if fields["use_lut"]:
        lane = execution.lane
        table = (execution.args["lut_offset"] + fields["lut"]
                 + (lane if fields["per_lane"] else 0)) % state.config.lut_tables
        table = np.broadcast_to(table, (lane.size,))
        execution.tables.update(int(t) for t in np.unique(table))
        result = state.lut[execution.group][table[None, :], result + 128]
    execution.result = result


def write(execution, fields):
    """WRITE: ``ACT[out_offset + base + r*row_stride + c*col_stride + l*lane_stride] = y[l]``
    (after a POST)."""
    if execution.result is None:
        raise ProgramError("WRITE before POST in a micro-program")
    args = execution.args
    rows, cols = np.arange(args["rows"]), np.arange(args["cols"])
    pixels = (args["out_offset"] + fields["base"] + rows[:, None] * fields["row_stride"]
              + cols[None, :] * fields["col_stride"]).ravel()
    addresses = pixels[:, None] + execution.lane[None, :] * fields["lane_stride"]
    check_run_addresses("output", addresses, execution.state.config.act_bytes)
    execution.state.act[addresses] = execution.result
    if addresses.size:
        execution.act_write = (int(addresses.min()), int(addresses.max()) + 1)


def _int32(values):
    """Integers wrapped to the 32-bit two's complement of an accumulator or a bias word."""
    return (np.asarray(values, np.int64) + (1 << 31)) % (1 << 32) - (1 << 31)


def norm(execution, fields):
    """NORM (a RUN of one pixel): ``SAVE``: ``PARAM[param_offset + l].bias = acc[l]``;
    ``FINISH``: ``PARAM[param_offset + l] = norm_params(S1, S2, count, eps, k.multiplier,
    k.shift, k.bias)`` with ``S1 = PARAM[param_offset + l].bias``, ``S2 = PARAM[param_offset
    + lanes + l].bias`` and the constants ``k = PARAM[param_offset + 2*lanes + l]``."""
    state, args = execution.state, execution.args
    lanes, first = args["lanes"], args["param_offset"]
    if execution.pixels.size != 1:
        raise ProgramError(f"NORM in a RUN of {args['rows']} x {args['cols']} pixels (it "
                           "takes one)")
    param = state.param[execution.group]
    if fields["step"] == isa.NormStep.SAVE:
        param["bias"][first:first + lanes] = _int32(execution.acc[0])
        return
    if first + 3 * lanes > len(param):
        raise ProgramError("NORM FINISH reads PARAM entries beyond the PARAM memory")
    if fields["count"] == 0:
        raise ProgramError("NORM FINISH with count 0 (it divides by the count)")
    execution.params_read = 3 * lanes
    for lane in range(lanes):
        k = param[first + 2 * lanes + lane]
        bias, multiplier, shift = numerics.norm_params(
            int(param["bias"][first + lane]), int(param["bias"][first + lanes + lane]),
            fields["count"], fields["eps"], int(k["multiplier"]), int(k["shift"]),
            int(k["bias"]))
        param[first + lane] = (bias, multiplier, shift, 0)


#: The function of each execute micro-op.
EXECUTE = {isa.UopOp.CLEAR: clear, isa.UopOp.MAC: mac, isa.UopOp.POST: post,
           isa.UopOp.WRITE: write, isa.UopOp.NORM: norm}
