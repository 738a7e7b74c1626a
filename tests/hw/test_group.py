# amaranth: UnusedElaboratable=no
"""The engine group behind a real crossbar, bit for bit against the instruction simulator.

Each case is one or more RUNs (a micro-program and its RUN operands) over random memories:
the same bytes go to ``isa_sim.run`` (as a global program of DMA loads, UOP_LOAD, RUNs,
BARRIER, DMA_STORE of all of ACT) and to the RTL (through the crossbar's and the groups' DMA
ports); the ACT bytes afterwards, the MAC counters and the cycles per RUN are compared.
"""

import random
from dataclasses import dataclass, field

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import connect

from flexigan.compiler import asm
from flexigan.compiler.lower import lower
from flexigan.hw.arch import isa, numerics
from flexigan.hw.arch.config import AcceleratorConfig
from flexigan.hw.arch.isa import PARAM_DTYPE
from flexigan.hw.arch.timing import DECODE_CYCLES
from flexigan.hw.crossbar import Crossbar
from flexigan.hw.group import Group, act_tag_layout
from flexigan.hw.group.decoder import Decoder
from flexigan.sim import isa_sim
from tests.helpers import conv_model, convt_model, quantized
from tests.hw.streams import Pauses, put, simulate

CONFIG = AcceleratorConfig(groups=2, lanes=4, act_banks=4, act_bank_bytes=256, weight_bytes=256,
                           param_entries=16, uop_depth=16, axi_data_width=32, mem_latency=4,
                           burst_bytes=64)
WORD = CONFIG.axi_bytes
TABLES = CONFIG.lut_tables


class Fabric(Elaboratable):
    """``groups`` Groups on the read and write ports of one Crossbar."""

    def __init__(self, config):
        self.xbar = Crossbar(config, act_tag_layout(config))
        self.groups = [Group(config) for _ in range(config.groups)]

    def elaborate(self, platform):
        m = Module()
        m.submodules.xbar = self.xbar
        for g, group in enumerate(self.groups):
            m.submodules[f"group{g}"] = group
            connect(m, group.act_rd, self.xbar.rd[g])
            connect(m, group.act_wr, self.xbar.wr[g])
        return m


@dataclass
class Memories:
    """Random contents of ACT and of every group's WGT, PARAM and LUT memories."""

    act: np.ndarray
    wgt: list
    param: list
    lut: list

    @classmethod
    def random(cls, seed, zeros=0.3):
        rng = np.random.default_rng(seed)
        act = rng.integers(-128, 128, CONFIG.act_bytes).astype(np.int8)
        act[rng.random(act.size) < zeros] = 0
        wgt, param, lut = [], [], []
        for _ in range(CONFIG.groups):
            wgt.append(rng.integers(-128, 128, CONFIG.weight_bytes).astype(np.int8))
            p = np.zeros(CONFIG.param_entries, PARAM_DTYPE)
            p["bias"] = rng.integers(-3000, 3000, p.size)
            p["multiplier"] = rng.integers(-2 ** 15, 2 ** 15, p.size)
            p["shift"] = rng.integers(8, 24, p.size)
            param.append(p)
            lut.append(rng.integers(-128, 128, (TABLES, isa.LUT_BYTES)).astype(np.int8))
        return cls(act, wgt, param, lut)


@dataclass
class Run:
    """One RUN on group ``group``: its micro-program (assembly or bytes) and operands."""

    group: int
    uops: object
    args: dict = field(default_factory=dict)

    @property
    def code(self):
        return asm.assemble(self.uops, "uop") if isinstance(self.uops, str) else self.uops

    def operands(self, uop_addr):
        a = {"uop_addr": uop_addr, "uop_count": len(self.code) // isa.UOP_BYTES, "lanes":
             CONFIG.lanes, **self.args}
        return a


def _layout(runs):
    """Micro-op addresses: each group's distinct programs, packed from 0."""
    where, code = {}, [bytearray() for _ in range(CONFIG.groups)]
    for run in runs:
        key = (run.group, run.code)
        if key not in where:
            where[key] = len(code[run.group]) // isa.UOP_BYTES
            code[run.group] += run.code
    assert all(len(c) <= CONFIG.uop_depth * isa.UOP_BYTES for c in code)
    return [where[run.group, run.code] for run in runs], code


def reference(mem, runs, sparse):
    """ACT after the RUNs, the counters and each group's busy cycles, from isa_sim."""
    addrs, code = _layout(runs)
    blobs, lines = bytearray(), []

    def place(data):
        at = 0x1000 + len(blobs)
        blobs.extend(bytes(data) + bytes(-len(data) % 64))
        return at

    lines.append(f"DMA_LOAD space=ACT ext_addr={place(mem.act.tobytes())} length="
                 f"{CONFIG.act_bytes}")
    for g in range(CONFIG.groups):
        mask = 1 << g
        for space, data in (("WGT", mem.wgt[g].tobytes()), ("PARAM", mem.param[g].tobytes()),
                            ("LUT", mem.lut[g].tobytes())):
            lines.append(f"DMA_LOAD space={space} group_mask={mask} ext_addr={place(data)} "
                         f"length={len(data)}")
        if code[g]:
            lines.append(f"UOP_LOAD group_mask={mask} ext_addr={place(code[g])} "
                         f"length={len(code[g])}")
    lines.append(f"BARRIER group_mask={(1 << CONFIG.groups) - 1}")
    lines.append("COUNTERS action=RESET")
    for run, addr in zip(runs, addrs):
        operands = " ".join(f"{k}={v}" for k, v in run.operands(addr).items())
        lines.append(f"RUN group_mask={1 << run.group} {operands}")
    out, counters = place(bytes(CONFIG.act_bytes)), place(bytes(64))
    lines += [f"BARRIER group_mask={(1 << CONFIG.groups) - 1}",
              f"DMA_STORE space=ACT ext_addr={out} length={CONFIG.act_bytes}",
              f"COUNTERS action=STORE ext_addr={counters}", "END"]
    program = asm.assemble("\n".join(lines))
    assert len(program) <= 0x1000
    image = bytearray(0x1000) + blobs
    image[:len(program)] = program
    result = isa_sim.run(bytes(image), CONFIG, sparse=sparse)
    act = result.memory[out:out + CONFIG.act_bytes].view(np.int8).copy()
    return act, result.counters, result.busy


def _chunks(data):
    data = bytes(data)
    for at in range(0, len(data), WORD):
        yield at, int.from_bytes(data[at:at + WORD], "little")


def hardware(mem, runs, sparse, competitor=0.0, seed=0):
    """ACT after the RUNs on the RTL, its counters and each group's cycles from its first RUN
    accepted to its last byte written."""
    dut = Fabric(CONFIG)
    addrs, code = _layout(runs)
    act = {}
    cycles = [0] * CONFIG.groups
    counters = {}
    loaded = []
    finished = []

    async def load_act(ctx):
        for at, word in _chunks(mem.act.view(np.uint8)):
            await put(ctx, dut.xbar.dma_wr.req, {"addr": at // WORD, "data": word,
                                                  "mask": (1 << WORD) - 1})
        loaded.append("act")

    def load_group(g):
        async def tb(ctx):
            port = dut.groups[g].dma
            for space, data in ((isa.Space.WGT, mem.wgt[g]), (isa.Space.PARAM, mem.param[g]),
                                (isa.Space.LUT, mem.lut[g]), (isa.Space.UOP, code[g])):
                for at, word in _chunks(np.asarray(data).tobytes() if len(data) else b""):
                    ctx.set(port.valid, 1)
                    ctx.set(port.payload, {"space": space, "chunk": {
                        "addr": at, "data": word, "mask": (1 << WORD) - 1}})
                    await ctx.tick()
            ctx.set(port.valid, 0)
            loaded.append(g)
        return tb

    def issue(g):
        async def tb(ctx):
            group = dut.groups[g]
            ctx.set(group.bypass, not sparse)
            while len(loaded) < 1 + CONFIG.groups:
                await ctx.tick()
            mine = [run.operands(addr) for run, addr in zip(runs, addrs) if run.group == g]
            if mine:
                n = 0   # cycles since the first RUN was accepted
                for operands in mine:
                    ctx.set(group.run.valid, 1)
                    ctx.set(group.run.payload, {"group_mask": 1 << g, **operands})
                    while True:
                        _, _, ready = await ctx.tick().sample(group.run.ready)
                        n += n != 0 or ready
                        if ready:
                            break
                    ctx.set(group.run.valid, 0)
                while ctx.get(group.busy):
                    await ctx.tick()
                    n += 1
                cycles[g] = n
            counters[g] = (ctx.get(group.macs_issued), ctx.get(group.macs_skipped),
                           ctx.get(group.error))
            finished.append(g)
        return tb

    quiet = []

    async def noise(ctx):
        # A competitor on the DMA read port: random words, so the groups' reads wait for
        # their banks now and then.
        rng = random.Random(seed)
        pauses = Pauses(1 - competitor, seed)
        while len(finished) < CONFIG.groups:
            await put(ctx, dut.xbar.dma_rd.req, {"addr": rng.randrange(CONFIG.act_bytes // WORD),
                                                  }, pauses)
        quiet.append(1)

    async def read_back(ctx):
        while len(finished) < CONFIG.groups or (competitor and not quiet):
            await ctx.tick()
        # The competitor's last answers (queue, grant, bank, the bank's output register) are
        # out.
        await ctx.tick().repeat(4)
        port = dut.xbar.dma_rd
        words = CONFIG.act_bytes // WORD
        ctx.set(port.req.valid, 1)
        issued = 0
        while len(act) < words:
            ctx.set(port.req.payload, {"addr": issued % words})
            _, _, ready, valid, data = await ctx.tick().sample(
                port.req.ready, port.resp.valid, port.resp.payload.data)
            if valid:
                act[len(act)] = data
            if ready:
                issued += 1
            if issued == words:
                ctx.set(port.req.valid, 0)

    benches = [load_act, *(load_group(g) for g in range(CONFIG.groups)),
               *(issue(g) for g in range(CONFIG.groups))]
    if competitor:
        benches.append(noise)
    simulate(dut, *benches, read_back, timeout=50_000)
    data = b"".join(act[k].to_bytes(WORD, "little") for k in range(len(act)))
    return np.frombuffer(data, np.int8), counters, cycles


def compiled_runs(model):
    """The RUNs of ``model``'s single layer compiled for CONFIG, with their micro-programs,
    as many as fit each group's micro-op memory side by side."""
    qgraph, _ = quantized(model)
    program = lower(qgraph, CONFIG)
    image = program.image
    uops = [[bytes(isa.UOP_BYTES)] * CONFIG.uop_depth for _ in range(CONFIG.groups)]
    runs = []
    for at in range(0, len(program.code), isa.GLOBAL_BYTES):
        op, a = isa.decode_global(int.from_bytes(program.code[at:at + isa.GLOBAL_BYTES],
                                                 "little"))
        groups = [g for g in range(CONFIG.groups) if a.get("group_mask", 0) >> g & 1]
        if op == isa.GlobalOp.UOP_LOAD:
            words = image[a["ext_addr"]:a["ext_addr"] + a["length"]]
            for g in groups:
                for k in range(0, len(words), isa.UOP_BYTES):
                    uops[g][a["local_addr"] + k // isa.UOP_BYTES] = words[k:k + isa.UOP_BYTES]
        elif op == isa.GlobalOp.RUN:
            args = {k: v for k, v in a.items() if k not in ("group_mask", "uop_addr",
                                                            "uop_count")}
            for g in groups:
                code = b"".join(uops[g][a["uop_addr"]:a["uop_addr"] + a["uop_count"]])
                runs.append(Run(g, code, args))
    kept, size = [], [set() for _ in range(CONFIG.groups)]
    for run in runs:
        programs = size[run.group] | {run.code}
        if sum(len(c) for c in programs) <= CONFIG.uop_depth * isa.UOP_BYTES:
            size[run.group] = programs
            kept.append(run)
    return kept


def check(runs, seed=0, sparse=True, competitor=0.0, zeros=0.3, within=(0.95, 1.05), mem=None):
    """Run ``runs`` on isa_sim and on the RTL (over ``mem``, by default random memories); the
    same ACT bytes and MAC counters, no error, and each group's RTL cycles over its isa_sim busy
    cycles within ``within`` (returned)."""
    mem = mem or Memories.random(seed, zeros)
    want, counters, busy = reference(mem, runs, sparse)
    got, hw, cycles = hardware(mem, runs, sparse, competitor, seed)
    written = np.count_nonzero(want != mem.act)
    assert written, "the case writes nothing"
    np.testing.assert_array_equal(got, want)
    assert sum(i for i, _, _ in hw.values()) == counters["macs_issued"]
    assert sum(s for _, s, _ in hw.values()) == counters["macs_skipped"]
    assert not any(e for _, _, e in hw.values())
    ratios = [c / b for c, b in zip(cycles, busy) if b]
    assert all(within[0] <= r <= within[1] for r in ratios), (cycles, busy)
    return ratios


# A 3x3 convolution over 2 input channels (HWC, 16-byte rows of 8 pixels) with stride 2 in
# columns, 4 lanes whose outputs are 2 bytes apart.
CONV = """
    LOOP level=0 count=3 act_stride=16 wgt_stride=24
    LOOP level=1 count=3 act_stride=2 wgt_stride=8
    LOOP level=2 count=2 act_stride=1 wgt_stride=4
    ACT row_stride=16 col_stride=4
    WGT lane_stride=1
    CLEAR use_bias={bias}
    MAC
    POST use_lut={lut} lut=1 per_lane={per_lane}
    WRITE row_stride=32 col_stride=8 lane_stride=2
"""


def conv(bias=1, lut=0, per_lane=0, lanes=4, group=0, **args):
    return Run(group, CONV.format(bias=bias, lut=lut, per_lane=per_lane),
               {"rows": 3, "cols": 3, "lanes": lanes, "out_offset": 512, **args})


@pytest.mark.parametrize("bias, lut, per_lane", [(1, 0, 0), (0, 1, 0), (1, 1, 1)])
def test_conv(bias, lut, per_lane):
    check([conv(bias, lut, per_lane, lut_offset=6, param_offset=3, wgt_offset=16)])


def test_conv_dense_and_sparse_agree_with_the_counters():
    for sparse in (False, True):
        check([conv()], sparse=sparse, zeros=0.5)


def test_fewer_lanes_than_the_group_has():
    check([conv(lanes=3, lut=1, per_lane=1), conv(lanes=1, lut=1, per_lane=1, out_offset=700)])


def test_crossbar_backpressure_from_a_competing_reader():
    # The model does not know the competitor, but the group reads a word only when its taps
    # leave the last one (about one tap in three here): 198 RTL cycles for its 196.
    check([conv(lut=1)], competitor=0.7, seed=3, within=(1.0, 1.05))


def test_two_groups_share_the_crossbar():
    check([conv(group=0, lut=1, per_lane=1),
           conv(group=1, bias=0, act_offset=5, out_offset=700)], competitor=0.3, seed=4,
          within=(1.0, 1.1))      # two streams on bank 0 (the model's 2x), and the competitor


def test_compiled_conv():
    runs = compiled_runs(conv_model(3, 4, (6, 6), [3, 3], pads=[1, 1, 1, 1]))
    # Both groups' chains read banks 0 and 1: the model's share of reads per bank is coarse
    # (with the sparse core, 99 RTL cycles for its 100 on group 1).
    check(runs, seed=5, within=(0.98, 1.15))


def test_compiled_convtranspose_phases():
    # k=3, s=2: phases of 4, 2, 2 and 1 taps, border segments with fewer.
    runs = compiled_runs(convt_model(2, 4, (4, 4), [3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                                output_padding=[1, 1]))
    assert len({len(r.code) for r in runs}) > 1
    # Both groups' post-writers write bank 0, a pixel's 4 lanes side by side: one write per
    # word, not per byte (the model charges no write conflicts), so the RTL takes the model's
    # cycles exactly (193 and 146; when each byte was a write, 221 and 194 for the model's
    # 171 and 124 at the time: two groups on one bank halved each other's pace).
    for sparse in (True, False):
        check(runs, seed=6, sparse=sparse, within=(1.0, 1.0))


# Each pixel reads 2 rows of 4 input channels: two words, one read per 4 taps.
WORDS = """
    LOOP level=1 count=2 act_stride=16 wgt_stride=16
    LOOP level=2 count=4 act_stride=1 wgt_stride=4
    ACT row_stride=16 col_stride=4
    WGT lane_stride=1
    CLEAR use_bias=1
    MAC
    POST use_lut=0 lut=0 per_lane=0
    WRITE row_stride=32 col_stride=8 lane_stride=2
"""


def test_groups_on_one_bank_do_not_wait_when_taps_share_words():
    # Both groups read bank 0 (different words): a read per 4 taps each, so no conflicts;
    # without word reuse each would get every other cycle.
    def words(group, **args):
        return Run(group, WORDS, {"rows": 3, "cols": 3, "out_offset": 512, **args})

    pair = [words(0), words(1, act_offset=64, out_offset=768)]
    mem = Memories.random(8)
    _, _, alone = reference(mem, pair[:1], sparse=False)
    _, _, both = reference(mem, pair, sparse=False)
    assert both == [alone[0], alone[0]]
    check(pair, seed=8, sparse=False, within=(1.0, 1.02))


def test_compiled_gemm():
    runs = compiled_runs(convt_model(10, 3, (1, 1), [1, 1], act="Sigmoid"))
    check(runs, seed=7, sparse=False)


def test_bias_only_pixels_without_mac():
    # A segment no tap reaches (ConvTranspose k1 s2): CLEAR with bias, POST, WRITE.
    check([Run(0, """
        CLEAR use_bias=1
        POST use_lut=1 lut=2 per_lane=1
        WRITE row_stride=32 col_stride=8 lane_stride=2
    """, {"rows": 2, "cols": 3, "out_offset": 512})])


@pytest.mark.parametrize("sparse", [False, True])
def test_an_empty_tap_nest_multiplies_nothing(sparse):
    check([Run(0, CONV.format(bias=1, lut=0, per_lane=0).replace("count=3", "count=0", 1),
               {"rows": 2, "cols": 2, "out_offset": 512})], sparse=sparse)


def test_cycles_of_compute_bound_runs_follow_the_cycle_model():
    # A lone RUN: decode (9 micro-ops + 4), 9 pixels x 18 taps, fill, last pixel's 4 lanes,
    # drain: 200 cycles, as isa_sim's. Queued RUNs overlap decode, fill and drain: 164 more
    # each (the access engine's 2-cycle bubble).
    check([conv()], sparse=False, within=(1.0, 1.0))
    check([conv(out_offset=512 + k) for k in range(2)] +
          [conv(out_offset=600 + k) for k in range(2)], sparse=False, within=(1.0, 1.0))


def test_sparse_core_saves_cycles():
    # CONV's innermost level walks 2 channels (act_stride 1): the access engine fetches them
    # as one bundle and the sparse core spends a cycle per non-zero tap, at least one per
    # bundle: 161 cycles with 30% zeros, 144 with 50%, for 210 without zero skipping; the RTL's
    # exactly.
    for zeros, cycles in ((0.3, 161), (0.5, 144)):
        check([conv()], zeros=zeros, within=(1.0, 1.0))
        mem = Memories.random(0, zeros)
        assert [reference(mem, [conv()], sparse)[2][0] for sparse in (False, True)] == \
            [210, cycles]


def test_cycles_of_post_bound_and_decode_bound_chains():
    one_tap = CONV.format(bias=1, lut=0, per_lane=0).replace("count=3", "count=1") \
        .replace("count=2", "count=1")
    # One tap per pixel, 4 lanes: the post-writer's 4 cycles per pixel and its drain set the
    # pace (42 cycles per queued RUN).
    check([Run(0, one_tap, {"rows": 3, "cols": 3, "out_offset": 512 + k}) for k in range(4)],
          within=(1.0, 1.0))
    # One pixel of two taps: the decoder's 9 + 4 cycles per RUN set the pace.
    two_taps = one_tap.replace("level=2 count=1", "level=2 count=2")
    check([Run(0, two_taps, {"rows": 1, "cols": 1, "out_offset": 512 + k}) for k in range(4)],
          within=(1.0, 1.0))


# One tap per pixel, 3 lanes side by side (a 1x1 conv to 3 channels, HWC): post-writer bound.
ONE_TAP = """
    ACT row_stride=16 col_stride=1
    WGT lane_stride=1
    CLEAR use_bias=1
    MAC
    POST use_lut=1 lut=0 per_lane=0
    WRITE row_stride=48 col_stride=3 lane_stride=1
"""


@pytest.mark.parametrize("second_out", [448, 768])
def test_post_bound_groups_writing_one_bank_keep_their_pace(second_out):
    # Both groups write 3 bytes a pixel in 3 cycles, into one bank (out 256 and 448, bank 1)
    # or two (768: bank 3). A pixel's lanes in one word are one write, 1.5 a pixel: the bank
    # serves both groups at their pace, 232 cycles as alone, the model's (296 each, a 4-lane
    # pace, when each byte was a write).
    def one_tap(group, act, out):
        return Run(group, ONE_TAP, {"rows": 4, "cols": 16, "lanes": 3, "act_offset": act,
                                    "out_offset": out})
    check([one_tap(0, 0, 256), one_tap(1, 64, second_out)], within=(1.0, 1.01))


@pytest.mark.xfail(strict=True, reason="write conflicts of one-lane RUNs are not modelled")
def test_post_bound_one_lane_groups_writing_one_word_keep_their_pace():
    # One lane a pixel, the two groups' bytes side by side (a normalizing pass's channels on
    # two groups): a write each a cycle into one bank, 167 cycles for the model's 104 (alone,
    # or on two banks, 104). Merging the groups' writes to one word in the crossbar, or the
    # model charging the bank, would make it pass.
    def one_lane(group, act, out):
        return Run(group, ONE_TAP.replace("col_stride=3", "col_stride=2"),
                   {"rows": 4, "cols": 16, "lanes": 1, "act_offset": act, "out_offset": out})
    check([one_lane(0, 0, 256), one_lane(1, 64, 257)])



# InstanceNorm (docs/isa.md): a channel's sum and sum of squares (MAC square) saved to PARAM,
# NORM FINISH, then the normalizing pass; the channel is every ``channels``-th byte of ACT.
NORM_SUMS = """
    LOOP level=0 count={n} act_stride={channels}
    WGT lane_stride=1
    MAC square={square}
    NORM step=SAVE
"""
NORM_FINISH = "NORM step=FINISH count={n} eps={eps}"
NORM_PASS = """
    ACT row_stride={row} col_stride={channels}
    WGT lane_stride=1
    CLEAR use_bias=1
    MAC
    POST use_lut=1 lut=0 per_lane=1
    WRITE row_stride={out_row} col_stride={lanes} lane_stride=1
"""


def norm_runs(group, channel, param, h=6, w=5, channels=3, lanes=1, eps=7, out_offset=512):
    """The four RUNs that normalize ``channel`` of the ``h x w x channels`` HWC image at ACT 0
    on ``group`` with PARAM entries from ``param`` (sums, then the constants at ``param + 2 x
    lanes``), its weights of 1 at WGT 8 and of NORM_WEIGHT at WGT 0 (see :func:`norm_memories`),
    the output's lanes side by side from ``out_offset``."""
    n = h * w
    common = {"lanes": lanes, "act_offset": channel, "rows": 1, "cols": 1}
    return [
        Run(group, NORM_SUMS.format(n=n, channels=channels, square=0),
            {**common, "wgt_offset": 8, "param_offset": param}),
        Run(group, NORM_SUMS.format(n=n, channels=channels, square=1),
            {**common, "param_offset": param + lanes}),
        Run(group, NORM_FINISH.format(n=n, eps=eps), {**common, "param_offset": param}),
        Run(group, NORM_PASS.format(row=w * channels, channels=channels, out_row=w * lanes,
                                    lanes=lanes),
            {**common, "rows": h, "cols": w, "param_offset": param, "out_offset": out_offset}),
    ]


def norm_memories(seed, constants):
    """Random memories with the weights :func:`norm_runs` reads (WGT 8.. random lanes' weights
    for lane > 0) and each group's constants at ``constants[g]`` (a list of PARAM indices)."""
    mem = Memories.random(seed)
    rng = np.random.default_rng(seed)
    for g in range(CONFIG.groups):
        mem.wgt[g][:CONFIG.lanes] = numerics.NORM_WEIGHT
        mem.wgt[g][8] = 1
        for entry in constants.get(g, ()):
            mem.param[g][entry] = (rng.integers(-3 << 12, 3 << 12),
                                   rng.integers(1 << 14, 1 << 15) * rng.choice([-1, 1]),
                                   rng.integers(8, 14), 0)
    return mem


def test_instance_norm_four_runs_per_channel():
    # Two channels on group 0 (PARAM entries 0-2 and 3-5), one on group 1: the sums, FINISH
    # and the pass of each, bit-exact. Alone, a channel's RUNs take the model's cycles
    # exactly (357: NORM_FINISH_CYCLES, NORM_DRAIN, and the next channel's sums held back by
    # the pass behind FINISH, AHEAD_PIXELS); the two groups share the crossbar: 1.021, 0.995.
    runs = norm_runs(0, 0, 0) + norm_runs(0, 1, 3, out_offset=560) + norm_runs(1, 2, 0)
    check(runs, mem=norm_memories(9, {0: [2, 5], 1: [2]}), within=(0.99, 1.03))


def test_instance_norm_sums_carried_over_row_bands():
    # The sum of a channel in two bands of rows (the compiler's stages through external
    # memory): the second band's CLEAR use_bias=1 starts from the first's saved sum and its
    # SAVE writes bias + acc (four cycles a lane); a RUN without MAC then writes each lane's
    # saved sum requantized (multiplier 1, shift 4), so the sums are compared bit for bit.
    first = norm_runs(0, 0, 0, lanes=2, h=6)[0]
    band = NORM_SUMS.format(n=15, channels=3, square=0)
    carried = band.replace("WGT lane_stride=1", "WGT lane_stride=1\n    CLEAR use_bias=1")
    show = "CLEAR use_bias=1\nPOST use_lut=0 lut=0 per_lane=0\nWRITE lane_stride=1"
    mem = norm_memories(11, {})
    mem.param[0][:2] = [(0, 1, 4, 0)] * 2
    runs = [Run(0, band, first.args), Run(0, carried, {**first.args, "act_offset": 45}),
            Run(0, show, {"lanes": 2, "rows": 1, "cols": 1, "out_offset": 512})]
    check(runs, mem=mem, within=(0.97, 1.03))


@pytest.mark.parametrize("sparse", [False, True])
def test_instance_norm_of_four_lanes_at_once(sparse):
    # Lanes 1-3 of the sums weigh the channel by the WGT's random weights (their sums differ,
    # some channels come out constant): FINISH reads 12 entries and writes 4, lane after lane.
    check(norm_runs(0, 1, 0, lanes=4, eps=0), sparse=sparse,
          mem=norm_memories(10, {0: range(8, 12)}), within=(1.0, 1.0))


class DecoderOnMemory(Elaboratable):
    """The group's Decoder on a micro-op memory that holds ``words``."""

    def __init__(self, words):
        self.decoder = Decoder(CONFIG)
        self._words = words

    def elaborate(self, platform):
        m = Module()
        m.submodules.decoder = decoder = self.decoder
        m.submodules.uops = uops = Memory(shape=8 * isa.UOP_BYTES, depth=CONFIG.uop_depth,
                                          init=self._words)
        port = uops.read_port()
        m.d.comb += [port.en.eq(decoder.uop.en), port.addr.eq(decoder.uop.addr),
                     decoder.uop.data.eq(port.data)]
        return m


def _decode(text, runs=1, **args):
    """Offers ``runs`` RUNs of the micro-program ``text`` (at micro-op 0) to the group's Decoder
    back to back, its commands taken as soon as offered. Returns the cycles the RUNs were taken
    in, ``(cycle, command, body)`` of each offer, and the cycles ``error`` pulsed in."""
    code = asm.assemble(text, "uop")
    count = len(code) // isa.UOP_BYTES
    top = DecoderOnMemory([int.from_bytes(code[k:k + isa.UOP_BYTES], "little")
                           for k in range(0, len(code), isa.UOP_BYTES)])
    dut = top.decoder
    taken, offers, errors = [], [], []

    async def bench(ctx):
        ctx.set(dut.run.payload, {"uop_count": count, "lanes": CONFIG.lanes, **args})
        ctx.set(dut.run.valid, 1)
        ctx.set(dut.agen.ready, 1)
        ctx.set(dut.body.ready, 1)
        cycle = 0
        while len(offers) < runs:
            accepted = ctx.get(dut.run.valid) and ctx.get(dut.run.ready)
            assert ctx.get(dut.agen.valid) == ctx.get(dut.body.valid)
            if ctx.get(dut.agen.valid):
                offers.append((cycle, ctx.get(dut.agen.payload), ctx.get(dut.body.payload)))
            if ctx.get(dut.error):
                errors.append(cycle)
            await ctx.tick()
            if accepted:
                taken.append(cycle)
                if len(taken) == runs:
                    ctx.set(dut.run.valid, 0)
            cycle += 1

    simulate(top, bench, timeout=1000)
    return taken, offers, errors


def test_the_decoder_takes_decode_cycles_and_one_per_micro_op():
    text = CONV.format(bias=1, lut=1, per_lane=0)
    count = len(asm.assemble(text, "uop")) // isa.UOP_BYTES
    taken, offers, errors = _decode(text, runs=3, act_offset=100, wgt_offset=16,
                                    out_offset=512, lut_offset=6, param_offset=3)
    assert [b - a for a, b in zip(taken, taken[1:])] == [DECODE_CYCLES + count] * 2
    assert [cycle for cycle, _, _ in offers] == [t + DECODE_CYCLES + count - 1 for t in taken]
    assert errors == []
    _, command, body = offers[-1]
    assert [command.count[k] for k in range(3)] == [3, 3, 2]
    assert [command.wgt_stride[k] for k in range(3)] == [24, 8, 4]
    assert [command.act_stride[k] for k in range(3)] == [16, 2, 1]
    assert (command.act_base, command.act_row, command.act_col, command.wgt_base,
            command.passes) == (100, 16, 4, 16, 1)
    assert (body.passes, body.use_bias, body.post, body.use_lut, body.per_lane, body.lut,
            body.param_offset, body.out_base, body.out_row, body.out_col, body.lane_stride) == \
        (1, 1, 1, 1, 0, 7, 3, 512, 32, 8, 2)


def test_the_last_loop_of_a_level_wins_and_a_level_without_one_counts_once():
    _, offers, _ = _decode("""
        LOOP level=2 count=5 act_stride=1 wgt_stride=4
        WGT base=9 lane_stride=1
        LOOP level=2 count=2 act_stride=3 wgt_stride=-4
        MAC
        MAC
    """, wgt_offset=1)
    _, command, body = offers[0]
    assert [command.count[k] for k in range(3)] == [1, 1, 2]
    assert (command.act_stride[2], command.wgt_stride[2]) == (3, CONFIG.weight_bytes - 4)
    assert (command.wgt_base, command.passes, body.passes, body.post) == (10, 2, 2, 0)


POST_WRITE = "POST use_lut=0 lut=0 per_lane=0\nWRITE lane_stride=1"


@pytest.mark.parametrize("text, error", [
    (f"NOP\nLOOP level=0 count=2\nCLEAR use_bias=1\nWGT lane_stride=1\nMAC\nACT base=1\n"
     f"MAC\n{POST_WRITE}\nNOP", False),
    (f"WGT lane_stride=2\n{POST_WRITE}", False),        # no MAC: the lane stride is free
    ("WGT lane_stride=1\nMAC\nCLEAR use_bias=1", True),
    (f"WGT lane_stride=1\n{POST_WRITE}\nMAC", True),
    ("WGT lane_stride=1\nMAC\nWRITE lane_stride=1", True),
    (f"WGT lane_stride=1\nMAC\nPOST use_lut=0 lut=0 per_lane=0\n{POST_WRITE}", True),
    ("LOOP level=3 count=2\nWGT lane_stride=1\nMAC", True),
    ("WGT lane_stride=2\nMAC", True),
    ("MAC", True),                                     # WGT.lane_stride 0
    ("WGT lane_stride=1\nCLEAR use_bias=0\nMAC square=1\nMAC square=1\nNORM step=SAVE", False),
    ("NORM step=FINISH count=4 eps=1", False),
    ("WGT lane_stride=1\nMAC\nMAC square=1", True),   # the lanes square all MACs or none
    ("NORM step=FINISH count=0 eps=1", True),
    (f"NORM step=SAVE\n{POST_WRITE}", True),
    ("WGT lane_stride=1\nMAC\nPOST use_lut=0 lut=0 per_lane=0\nNORM step=SAVE", True),
    ("NORM step=SAVE\nNORM step=SAVE", True),
    ("NORM step=SAVE\nCLEAR use_bias=1", True),
    ("CLEAR use_bias=1\nNORM step=SAVE", False),      # a sum carried on: bias + acc
    ("CLEAR use_bias=1\nNORM step=FINISH count=3", False),
])
def test_the_decoder_flags_micro_programs_the_group_cannot_run(text, error):
    taken, offers, errors = _decode(text, runs=2, rows=1, cols=1)
    assert bool(errors) == error
    # The RUN is decoded all the same.
    assert len(offers) == 2


@pytest.mark.parametrize("rows, cols", [(2, 1), (1, 3), (0, 1)])
def test_the_decoder_flags_norm_in_a_run_of_other_than_one_pixel(rows, cols):
    _, _, errors = _decode("NORM step=SAVE", rows=rows, cols=cols)
    assert errors


def test_the_body_of_a_norm_run():
    _, offers, _ = _decode("WGT lane_stride=1\nMAC square=1\nNORM step=FINISH count=77 eps=5",
                           rows=1, cols=1)
    _, _, body = offers[0]
    assert (body.square, body.post, body.norm, body.finish, body.count, body.eps) == \
        (1, 1, 1, 1, 77, 5)
