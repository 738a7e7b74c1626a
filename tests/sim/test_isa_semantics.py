"""The ISA's semantics, one test per instruction class against numpy and docs/isa.md's
pseudo-code (the VTA way): each instruction function of :mod:`flexigan.sim.isa_sim.semantics`
acts on a fresh machine state, and what it leaves is compared with what the ISA says.

Programs as a whole (timing, examples) are tests/sim/test_isa_sim.py's.
"""

import itertools

import numpy as np
import pytest

from flexigan.hw.arch import isa
from flexigan.hw.arch.config import AcceleratorConfig
from flexigan.sim.isa_sim import ProgramError, semantics
from flexigan.sim.isa_sim.state import MachineState
from tests.helpers import requant_oracle

#: Three groups (masks select some), three lanes, a few hundred bytes of everything.
CONFIG = AcceleratorConfig(groups=3, lanes=3, act_banks=2, act_bank_bytes=256, weight_bytes=256,
                           param_entries=8, uop_depth=16, axi_data_width=32, mem_latency=10,
                           burst_bytes=16)
EXT = 0x100          # where the tests put the bytes a DMA reads


def machine(data=b"", size=4096):
    """A machine just powered on, with ``data`` at :data:`EXT` in external memory."""
    image = bytearray(size)
    image[EXT:EXT + len(data)] = data
    return MachineState.power_on(bytes(image), CONFIG)


def dma_args(space=isa.Space.ACT, group_mask=0, ext_addr=EXT, local_addr=0, length=0, chunk=0):
    return {"space": space, "group_mask": group_mask, "ext_addr": ext_addr,
            "local_addr": local_addr, "length": length, "chunk": chunk}


# --- DMA_LOAD, DMA_STORE, UOP_LOAD --------------------------------------------------------------

def memory_of(state, space, group):
    """``space`` of ``group`` (ACT: the shared one), as an array of its units."""
    return {isa.Space.ACT: state.act, isa.Space.WGT: state.wgt[group],
            isa.Space.PARAM: state.param[group], isa.Space.LUT: state.lut[group],
            isa.Space.UOP: state.uop[group]}[space]


def as_units(space, data):
    """``data`` (bytes) as the units of ``space`` that DMA writes."""
    raw = np.frombuffer(data, np.uint8)
    if space == isa.Space.PARAM:
        return raw.view(isa.PARAM_DTYPE)
    if space == isa.Space.LUT:
        return raw.view(np.int8).reshape(-1, isa.LUT_BYTES)
    if space == isa.Space.UOP:
        return [int.from_bytes(w.tobytes(), "little") for w in raw.reshape(-1, isa.UOP_BYTES)]
    return raw.view(np.int8)


@pytest.mark.parametrize("space", list(isa.Space))
def test_dma_load_fills_units_of_the_space_in_the_masked_groups(space):
    unit = isa.unit_bytes(space)
    data = np.random.default_rng(int(space.value)).integers(0, 256, 2 * unit, np.uint8).tobytes()
    state = machine(data)
    transfer = semantics.dma_load(state, dma_args(space, 0b101, local_addr=1, length=2 * unit))
    expected = machine()
    for g in (0, 2):                                  # group 1 is not in the mask
        memory_of(expected, space, g)[1:3] = as_units(space, data)
    for g in range(CONFIG.groups):
        np.testing.assert_array_equal(memory_of(state, space, g), memory_of(expected, space, g))
    assert (transfer.store, transfer.space, transfer.start, transfer.stop, transfer.length) == \
        (False, space, 1, 3, 2 * unit)
    assert transfer.groups == (() if space == isa.Space.ACT else (0, 2))
    assert state.dma_bytes == state.dma_bytes_by_space[space] == 2 * unit


@pytest.mark.parametrize("space", [isa.Space.WGT, isa.Space.PARAM, isa.Space.UOP])
def test_a_scatter_load_gives_each_group_of_the_mask_its_own_chunk(space):
    # chunk = 16 bytes (the bus word of 4 bytes, and a PARAM entry's and a micro-op's
    # multiple): group 0 gets the first 16 bytes, group 2 the next 16, at the same place.
    data = np.random.default_rng(3).integers(0, 256, 32, np.uint8).tobytes()
    state = machine(data)
    local = 16 // isa.unit_bytes(space) if space == isa.Space.WGT else 0
    transfer = semantics.dma_load(state, dma_args(space, 0b101, local_addr=local, length=32,
                                                  chunk=16))
    units = 16 // isa.unit_bytes(space)
    expected = machine()
    memory_of(expected, space, 0)[local:local + units] = as_units(space, data[:16])
    memory_of(expected, space, 2)[local:local + units] = as_units(space, data[16:])
    for g in range(CONFIG.groups):
        np.testing.assert_array_equal(memory_of(state, space, g), memory_of(expected, space, g))
    assert (transfer.groups, transfer.start, transfer.stop, transfer.length) == \
        ((0, 2), local, local + units, 32)
    assert state.dma_bytes == 32


@pytest.mark.parametrize("args", [
    dma_args(isa.Space.WGT, 0b011, length=32, chunk=12),       # not whole bus words
    dma_args(isa.Space.WGT, 0b011, local_addr=2, length=32, chunk=16),   # local off the word
    dma_args(isa.Space.WGT, 0b011, length=48, chunk=16),       # not a chunk per group
    dma_args(isa.Space.ACT, 0, length=16, chunk=16),           # ACT is not a group's
])
def test_a_bad_scatter_load_is_a_program_error(args):
    state = machine(bytes(64))
    with pytest.raises(ProgramError, match=r"^DMA_LOAD of \w+ with chunk=\d+: needs a group "
                                           r"space, a multiple of the 4-byte bus word"):
        semantics.dma_load(state, args)
    assert state.dma_bytes == 0 and not state.wgt.any()


def test_dma_store_copies_act_to_external_memory():
    state = machine()
    state.act[:] = np.arange(CONFIG.act_bytes) % 251 - 125
    transfer = semantics.dma_store(state, dma_args(ext_addr=0x300, local_addr=40, length=24))
    np.testing.assert_array_equal(state.memory[0x300:0x318].view(np.int8), state.act[40:64])
    assert not state.memory[0x318:].any() and not state.memory[:0x300].any()
    assert (transfer.store, transfer.start, transfer.stop) == (True, 40, 64)
    assert state.dma_bytes_by_space[isa.Space.ACT] == 24


def test_uop_load_writes_micro_ops_whatever_its_space_says():
    words = [isa.encode_uop(isa.UopOp.MAC), isa.encode_uop(isa.UopOp.CLEAR, use_bias=1)]
    state = machine(b"".join(w.to_bytes(isa.UOP_BYTES, "little") for w in words))
    transfer = semantics.uop_load(state, dma_args(isa.Space.ACT, 0b010, local_addr=5,
                                                  length=2 * isa.UOP_BYTES))
    assert list(state.uop[1, 5:7]) == words
    assert not state.uop[0].any() and not state.uop[2].any() and not state.act.any()
    assert transfer.space == isa.Space.UOP and transfer.groups == (1,)
    assert state.dma_bytes_by_space[isa.Space.UOP] == 2 * isa.UOP_BYTES


@pytest.mark.parametrize("call, args, message", [
    (semantics.dma_load, dma_args(isa.Space.PARAM, 1, length=12),
     "PARAM access of 12 bytes at 0 does not fit 8 entries of 8 bytes"),
    (semantics.dma_load, dma_args(isa.Space.LUT, 1, local_addr=6, length=256),
     "LUT access of 256 bytes at 6 does not fit 6 entries of 256 bytes"),
    (semantics.dma_load, dma_args(isa.Space.ACT, length=513),
     "ACT access of 513 bytes at 0 does not fit 512 entries of 1 bytes"),
    (semantics.dma_load, dma_args(ext_addr=4090, length=8),
     r"external access \[0xffa, 0x1002\) beyond the 4096-byte image"),
    (semantics.dma_load, dma_args(isa.Space.WGT, 0b1000, length=8),
     "group mask 0x8 names groups beyond 3"),
    (semantics.dma_store, dma_args(isa.Space.WGT, 1, length=8),
     "DMA_STORE reads ACT only, not WGT"),
    (semantics.dma_store, dma_args(length=8, chunk=4),
     r"DMA_STORE has no chunk \(a scatter is a load\), not chunk=4"),
])
def test_dma_out_of_range_is_a_program_error(call, args, message):
    state = machine()
    with pytest.raises(ProgramError, match=f"^{message}$"):
        call(state, args)
    assert state.dma_bytes == 0


# --- ROUTE, BARRIER, COUNTERS, END -----------------------------------------------------------

def test_route_sets_the_banks_of_the_masked_groups():
    state = machine()
    semantics.route(state, {"group_mask": 0b110, "bank_first": 1, "bank_count": 1})
    assert state.route == [(0, 2), (1, 1), (1, 1)]
    with pytest.raises(ProgramError, match=r"^ROUTE to banks 1\+2 of 2$"):
        semantics.route(state, {"group_mask": 1, "bank_first": 1, "bank_count": 2})
    with pytest.raises(ProgramError, match=r"^ROUTE to banks 0\+0 of 2$"):
        semantics.route(state, {"group_mask": 1, "bank_first": 0, "bank_count": 0})


def test_barrier_and_end_wait_for_their_groups():
    state = machine()
    assert semantics.barrier(state, {"group_mask": 0b101}) == [0, 2]
    assert semantics.barrier(state, {"group_mask": 0}) == []
    assert semantics.end(state) == [0, 1, 2]
    with pytest.raises(ProgramError, match="^group mask 0x10 names groups beyond 3$"):
        semantics.barrier(state, {"group_mask": 0x10})


def test_counters_store_eight_little_endian_words_in_counter_order():
    state = machine()
    values = {name: (k + 1) * 0x0102030405 for k, name in enumerate(isa.COUNTER_NAMES)}
    semantics.counters(state, {"action": isa.CounterAction.STORE, "ext_addr": 0x208}, values)
    stored = np.frombuffer(state.memory[0x208:0x208 + 8 * 8].tobytes(), "<u8")
    assert stored.tolist() == [values[name] for name in isa.COUNTER_NAMES]
    assert not state.memory[:0x208].any() and not state.memory[0x248:].any()


def test_counters_reset_zeroes_the_counters_of_work_only():
    state = machine(bytes(64))
    semantics.dma_load(state, dma_args(length=64))
    state.macs_issued, state.macs_skipped, state.runs = 5, 6, 7
    semantics.counters(state, {"action": isa.CounterAction.RESET, "ext_addr": 0}, {})
    assert (state.macs_issued, state.macs_skipped, state.dma_bytes, state.runs) == (0, 0, 0, 0)
    # The split of DMA traffic by memory is the run's, for the roofline: kept.
    assert state.dma_bytes_by_space[isa.Space.ACT] == 64
    assert not state.memory.any()                     # RESET stores nothing


# --- micro-programs -------------------------------------------------------------------------

def encode(ops):
    """Encoded words of ``[(UopOp, {operand: value}), ...]``."""
    return tuple(isa.encode_uop(op, **fields) for op, fields in ops)


def test_parse_micro_program_gives_registers_taps_in_row_major_order_and_body():
    loops = [(2, 100, 7), (3, 10, 1), (4, 1, 30)]
    words = encode([(isa.UopOp.LOOP, {"level": 0, "count": 9})]
                   + [(isa.UopOp.LOOP, dict(zip(("level", "count", "act_stride", "wgt_stride"),
                                                (level, *loop))))
                      for level, loop in enumerate(loops)]
                   + [(isa.UopOp.NOP, {}), (isa.UopOp.ACT, {"base": -3, "row_stride": 5}),
                      (isa.UopOp.CLEAR, {"use_bias": 1}), (isa.UopOp.MAC, {}),
                      (isa.UopOp.WGT, {"base": 8, "lane_stride": 2}),
                      (isa.UopOp.POST, {"use_lut": 1, "lut": 4}), (isa.UopOp.WRITE, {})])
    program = isa.parse_micro_program(words)
    # The last LOOP of a level wins, wherever the access micro-ops stand in the program.
    assert program.loops == tuple(isa.Loop(*loop) for loop in loops)
    assert program.act == (-3, 5, 0) and program.wgt == (8, 2)
    taps = list(itertools.product(*(range(count) for count, _, _ in loops)))
    assert program.act_taps.tolist() == [100 * i + 10 * j + k for i, j, k in taps]
    assert program.wgt_taps.tolist() == [7 * i + j + 30 * k for i, j, k in taps]
    assert [op for op, _ in program.body] == [isa.UopOp.CLEAR, isa.UopOp.MAC, isa.UopOp.POST,
                                              isa.UopOp.WRITE]
    assert program.body[2].fields == {"use_lut": 1, "lut": 4, "per_lane": 0}
    assert program.mac_passes == 1 and program.writes


def test_parse_micro_program_without_loops_has_one_tap():
    program = isa.parse_micro_program(encode([(isa.UopOp.MAC, {}), (isa.UopOp.MAC, {})]))
    assert program.loops == ((1, 0, 0),) * isa.LOOP_LEVELS
    assert program.act_taps.tolist() == program.wgt_taps.tolist() == [0]
    assert program.mac_passes == 2 and not program.writes


@pytest.mark.parametrize("words, message", [
    (encode([(isa.UopOp.LOOP, {"level": 3, "count": 2})]), r"^LOOP level 3 \(levels are 0..2\)$"),
    ((9,), "^9 is not a valid UopOp$"),
])
def test_a_bad_micro_program_is_a_program_error(words, message):
    with pytest.raises(ProgramError, match=message):
        semantics.micro_program(words)


# --- RUN against docs/isa.md's pseudo-code ----------------------------------------------------

#: A RUN of 2 x 3 pixels over a 2 x 2 x 3 tap nest (strides that revisit no address), with
#: lanes 3 and a LUT offset that wraps around the tables.
LOOPS = [(2, 40, 36), (2, 8, 9), (3, 2, 3)]
ACT_REGS = {"base": 3, "row_stride": 90, "col_stride": 1}
WGT_REGS = {"base": 2, "lane_stride": 52}
RUN_ARGS = {"group_mask": 0b010, "uop_addr": 2, "rows": 2, "cols": 3, "lanes": 3,
            "act_offset": 5, "wgt_offset": 10, "param_offset": 4, "out_offset": 400,
            "lut_offset": 4}
WRITE_REGS = {"base": 6, "row_stride": 20, "col_stride": 5, "lane_stride": 1}


def run_program(body):
    """The micro-program: LOOPs, ACT, WGT, then ``body``."""
    return ([(isa.UopOp.LOOP, {"level": level, "count": count, "act_stride": act,
                               "wgt_stride": wgt})
             for level, (count, act, wgt) in enumerate(LOOPS)]
            + [(isa.UopOp.ACT, ACT_REGS), (isa.UopOp.WGT, WGT_REGS)] + body)


def loaded_machine(body, seed=0):
    """A machine whose group 1 holds random ACT (a third zeros), weights, parameters, tables
    and the micro-program of ``body``."""
    rng = np.random.default_rng(seed)
    state = machine()
    state.act[:300] = rng.integers(-128, 128, 300) * (rng.random(300) > 1 / 3)
    state.wgt[1] = rng.integers(-128, 128, CONFIG.weight_bytes)
    state.param[1]["bias"] = rng.integers(-5000, 5000, CONFIG.param_entries)
    state.param[1]["multiplier"] = rng.integers(-2 ** 15, 2 ** 15, CONFIG.param_entries)
    state.param[1]["shift"] = rng.integers(0, 24, CONFIG.param_entries)
    state.lut[1] = rng.integers(-128, 128, state.lut[1].shape)
    words = encode(run_program(body))
    state.uop[1, 2:2 + len(words)] = words
    return state, {**RUN_ARGS, "uop_count": len(words)}


def pseudo_code(state, group, args, body, sparse):
    """docs/isa.md's RUN, literally, pixel by pixel in Python integers: ACT after it, MACs
    issued and skipped."""
    act = [int(v) for v in state.act]
    param, lut, lanes = state.param[group], state.lut[group], args["lanes"]
    taps = list(itertools.product(*(range(count) for count, _, _ in LOOPS)))
    issued = skipped = 0
    for r, c in itertools.product(range(args["rows"]), range(args["cols"])):
        acc, y = [0] * lanes, None
        for op, f in body:
            if op == isa.UopOp.CLEAR:
                acc = [int(param[args["param_offset"] + lane]["bias"]) if f["use_bias"] else 0
                       for lane in range(lanes)]
            elif op == isa.UopOp.MAC:
                for tap in taps:
                    a = act[args["act_offset"] + ACT_REGS["base"] + r * ACT_REGS["row_stride"]
                            + c * ACT_REGS["col_stride"]
                            + sum(i * s for i, (_, s, _) in zip(tap, LOOPS))]
                    if a == 0 and sparse:
                        skipped += lanes
                        continue
                    issued += lanes
                    for lane in range(lanes):
                        w = state.wgt[group][args["wgt_offset"] + WGT_REGS["base"]
                                             + lane * WGT_REGS["lane_stride"]
                                             + sum(i * s for i, (_, _, s) in zip(tap, LOOPS))]
                        acc[lane] += a * int(w)
            elif op == isa.UopOp.POST:
                y = []
                for lane in range(lanes):
                    p = param[args["param_offset"] + lane]
                    value = requant_oracle(acc[lane], int(p["multiplier"]), int(p["shift"]))
                    table = (args["lut_offset"] + f["lut"] + (lane if f["per_lane"] else 0)) \
                        % CONFIG.lut_tables
                    y.append(int(lut[table][value + 128]) if f["use_lut"] else value)
            elif op == isa.UopOp.WRITE:
                for lane in range(lanes):
                    act[args["out_offset"] + f["base"] + r * f["row_stride"]
                        + c * f["col_stride"] + lane * f["lane_stride"]] = y[lane]
    return np.array(act, np.int8), issued, skipped


def conv_body(use_bias=1, use_lut=0, per_lane=0, lut=5):
    return [(isa.UopOp.CLEAR, {"use_bias": use_bias}), (isa.UopOp.MAC, {}),
            (isa.UopOp.POST, {"use_lut": use_lut, "lut": lut, "per_lane": per_lane}),
            (isa.UopOp.WRITE, WRITE_REGS)]


@pytest.mark.parametrize("sparse", [True, False])
def test_run_computes_the_loop_nest_of_every_pixel(sparse):
    body = conv_body()
    state, args = loaded_machine(body)
    expected, issued, skipped = pseudo_code(state, 1, args, body, sparse)
    record = semantics.run(state, 1, args, sparse)
    np.testing.assert_array_equal(state.act, expected)
    assert (record.macs_issued, record.macs_skipped) == (issued, skipped)
    assert (state.macs_issued, state.macs_skipped) == (issued, skipped)
    assert skipped == 0 if not sparse else skipped > 0
    assert issued + skipped == 2 * 3 * 12 * 3        # pixels x taps x lanes
    assert not state.act[300:400].any()               # nothing written but the outputs


@pytest.mark.parametrize("use_bias, use_lut, per_lane", [(0, 0, 0), (1, 1, 0), (1, 1, 1)])
def test_run_clears_requantizes_and_looks_up(use_bias, use_lut, per_lane):
    # lut_offset 4 + lut 5 (+ lane): tables 3, 4, 5 of 6, wrapped around.
    body = conv_body(use_bias, use_lut, per_lane)
    state, args = loaded_machine(body, seed=1)
    expected, _, _ = pseudo_code(state, 1, args, body, sparse=True)
    record = semantics.run(state, 1, args, sparse=True)
    np.testing.assert_array_equal(state.act, expected)
    tables = {3, 4, 5} if per_lane else {3}
    assert record.footprint.tables == (frozenset(tables) if use_lut else frozenset())


def test_run_with_two_mac_passes_accumulates_twice_and_writes_twice():
    body = [(isa.UopOp.CLEAR, {"use_bias": 0}), (isa.UopOp.MAC, {}), (isa.UopOp.MAC, {}),
            (isa.UopOp.POST, {"use_lut": 0, "lut": 0, "per_lane": 0}),
            (isa.UopOp.WRITE, WRITE_REGS),
            (isa.UopOp.WRITE, {**WRITE_REGS, "base": 60})]
    state, args = loaded_machine(body, seed=2)
    expected, issued, skipped = pseudo_code(state, 1, args, body, sparse=True)
    record = semantics.run(state, 1, args, sparse=True)
    np.testing.assert_array_equal(state.act, expected)
    assert len(record.passes) == 2 and record.macs_issued == issued
    # The last WRITE's bytes: pixel (1, 2) lane 2 is the last.
    assert record.footprint.act_write == (400 + 60, 400 + 60 + 20 + 2 * 5 + 2 + 1)


def test_run_records_what_it_read_for_the_cycle_model():
    body = conv_body()
    state, args = loaded_machine(body)
    before = state.act.copy()
    record = semantics.run(state, 1, args, sparse=True)
    # pixel (r, c) at 5 + 3 + 90r + c; taps 40i + 8j + 2k.
    pixels = [8 + 90 * r + c for r in range(2) for c in range(3)]
    assert record.pixels.tolist() == pixels
    (mac_pass,) = record.passes
    np.testing.assert_array_equal(mac_pass.addresses, np.add.outer(pixels, record.program.act_taps))
    np.testing.assert_array_equal(mac_pass.activations, before[mac_pass.addresses])
    footprint = record.footprint
    assert footprint.act_read == (8, 90 + 2 + 40 + 8 + 4 + 8 + 1)
    assert footprint.weights == (12, 12 + 2 * 52 + 36 + 9 + 6 + 1)
    assert footprint.params == (4, 7) and footprint.uops == (2, 2 + args["uop_count"])


def test_run_without_mac_writes_requantized_bias():
    body = conv_body()
    del body[1]
    state, args = loaded_machine(body)
    expected, issued, skipped = pseudo_code(state, 1, args, body, sparse=True)
    record = semantics.run(state, 1, args, sparse=True)
    np.testing.assert_array_equal(state.act, expected)
    assert issued == skipped == record.macs_issued == record.macs_skipped == 0
    assert record.passes == () and record.footprint.act_read == (CONFIG.act_bytes, 0)


@pytest.mark.parametrize("change, message", [
    ({"uop_addr": 8}, "^RUN reads micro-ops beyond the 16-entry micro-op memory$"),
    ({"param_offset": 6}, "^RUN reads PARAM entries beyond the PARAM memory$"),
    ({"act_offset": 400}, r"^RUN activation address 403..547 outside \[0, 512\)$"),
    ({"wgt_offset": 100}, r"^RUN weight address 102..257 outside \[0, 256\)$"),
    ({"out_offset": 480}, r"^RUN output address 486..518 outside \[0, 512\)$"),
])
def test_run_out_of_range_is_a_program_error(change, message):
    state, args = loaded_machine(conv_body())
    with pytest.raises(ProgramError, match=message):
        semantics.run(state, 1, {**args, **change}, sparse=True)


def test_write_before_post_is_a_program_error():
    state, args = loaded_machine([(isa.UopOp.WRITE, WRITE_REGS)])
    with pytest.raises(ProgramError, match="^WRITE before POST in a micro-program$"):
        semantics.run(state, 1, args, sparse=True)
