# amaranth: UnusedElaboratable=no
"""The board top in Amaranth's simulator: its on-chip memory alone on both ports, the host's
address decode through the UART, and a compiled program run end to end from the host's pins."""

import random
import struct

import numpy as np
import pytest

from flexigan.boards.top import BoardTop
from flexigan.compiler.lower import lower
from flexigan.compiler.program import tensor_addresses
from flexigan.host import BridgeClient
from flexigan.hw.arch.bridge import MAX_WORDS
from flexigan.hw.arch.config import AcceleratorConfig
from flexigan.hw.arch.memory_map import MEMORY_BASE, register_map
from flexigan.hw.arch.registers import STATUS_BUSY, STATUS_DONE
from flexigan.hw.onchip import READ_LATENCY, OnChipMemory
from flexigan.sim import isa_sim
from tests.helpers import RecordingPort, conv_model, quantized
from tests.hw.streams import Pauses, decode_bytes, drive_byte, simulate

#: A UART bit every 4 cycles: a byte in 40.
DIVISOR = 4
CONFIG = AcceleratorConfig(groups=1, lanes=2, act_banks=2, act_bank_bytes=256, weight_bytes=256,
                           param_entries=16, uop_depth=16, axi_data_width=32,
                           mem_latency=READ_LATENCY, burst_bytes=32)
MEMORY_BYTES = 4096
#: More than the bridge and the address decode take to write a word of a frame to memory (3).
COMMIT_CYCLES_PER_WORD = 8
REGISTERS = register_map()


# The on-chip memory alone ------------------------------------------------------------------

class MemoryTB:
    """An AXI4 master and an AXI4-Lite master on an :class:`OnChipMemory`, with random pauses
    before every beat and response, and a byte model of what the memory must hold."""

    def __init__(self, depth, data_width, pause, seed, single_port=False):
        self.dut = OnChipMemory(depth, data_width, single_port)
        self.nbytes = data_width // 8
        self.model = bytearray(depth)
        self.pauses = Pauses(pause, seed)

    async def write_burst(self, ctx, addr, data, strobes):
        """Write ``data`` (bytes, whole beats) from ``addr``; ``strobes`` one mask per beat."""
        w, n = self.dut.axi.write, self.nbytes
        ctx.set(w.awaddr, addr)
        ctx.set(w.awlen, len(strobes) - 1)
        ctx.set(w.awvalid, 1)
        await ctx.tick().until(w.awready)
        ctx.set(w.awvalid, 0)
        for k, strobe in enumerate(strobes):
            await self.pauses.wait(ctx)
            ctx.set(w.wdata, int.from_bytes(data[k * n:(k + 1) * n], "little"))
            ctx.set(w.wstrb, strobe)
            ctx.set(w.wlast, k == len(strobes) - 1)
            ctx.set(w.wvalid, 1)
            await ctx.tick().until(w.wready)
            ctx.set(w.wvalid, 0)
            for b in range(n):
                if strobe >> b & 1:
                    self.model[addr + k * n + b] = data[k * n + b]
        await self.pauses.wait(ctx)
        ctx.set(w.bready, 1)
        await ctx.tick().until(w.bvalid)
        ctx.set(w.bready, 0)

    async def read_burst(self, ctx, addr, beats):
        r, n = self.dut.axi.read, self.nbytes
        ctx.set(r.araddr, addr)
        ctx.set(r.arlen, beats - 1)
        ctx.set(r.arvalid, 1)
        await ctx.tick().until(r.arready)
        ctx.set(r.arvalid, 0)
        data = bytearray()
        for k in range(beats):
            await self.pauses.wait(ctx)
            ctx.set(r.rready, 1)
            word, last = (await ctx.tick().sample(r.rdata, r.rlast).until(r.rvalid))[-2:]
            ctx.set(r.rready, 0)
            assert last == (k == beats - 1)
            data += word.to_bytes(n, "little")
        return bytes(data)

    async def lite_write(self, ctx, addr, word, strobe=0xF):
        p = self.dut.axil
        await self.pauses.wait(ctx)
        ctx.set(p.awaddr, addr)
        ctx.set(p.wdata, word)
        ctx.set(p.wstrb, strobe)
        ctx.set(p.awvalid, 1)
        ctx.set(p.wvalid, 1)
        await ctx.tick().until(p.awready)
        ctx.set(p.awvalid, 0)
        ctx.set(p.wvalid, 0)
        for b in range(4):
            if strobe >> b & 1:
                self.model[addr + b] = word >> 8 * b & 0xFF
        await self.pauses.wait(ctx)
        ctx.set(p.bready, 1)
        await ctx.tick().until(p.bvalid)
        ctx.set(p.bready, 0)

    async def lite_read(self, ctx, addr):
        p = self.dut.axil
        await self.pauses.wait(ctx)
        ctx.set(p.araddr, addr)
        ctx.set(p.arvalid, 1)
        await ctx.tick().until(p.arready)
        ctx.set(p.arvalid, 0)
        await self.pauses.wait(ctx)
        ctx.set(p.rready, 1)
        word, = await ctx.tick().sample(p.rdata).until(p.rvalid)
        ctx.set(p.rready, 0)
        return word

    def contents(self, ctx):
        """The memory's bytes, read by the backdoor."""
        return b"".join(ctx.get(self.dut.data[k]).to_bytes(self.nbytes, "little")
                        for k in range(len(self.model) // self.nbytes))


@pytest.mark.parametrize("data_width, single_port", [(32, False), (64, False), (32, True)])
@pytest.mark.parametrize("pause", [0.0, 0.4])
def test_memory_bursts_with_strobes_and_lite_words_meet_in_the_same_bytes(data_width, pause,
                                                                          single_port):
    # single_port: one access per cycle (the iCE40's SPRAM), the two sides contending.
    tb = MemoryTB(1024, data_width, pause, seed=data_width, single_port=single_port)
    rng = random.Random(data_width + int(10 * pause))
    n = data_width // 8
    lengths = [rng.randrange(1, 17) for _ in range(8)]
    bursts = [(rng.randrange(512 // n - beats + 1) * n, beats) for beats in lengths]
    lite_words = [(512 + 4 * k, rng.getrandbits(32), rng.randrange(1, 16)) for k in range(24)]
    seen = {}

    done, readback = set(), []

    async def axi_side(ctx):
        for addr, beats in bursts:
            data = rng.randbytes(beats * n)
            strobes = [rng.getrandbits(n) for _ in range(beats)]
            await tb.write_burst(ctx, addr, data, strobes)
            readback.append((await tb.read_burst(ctx, addr, beats),
                             bytes(tb.model[addr:addr + beats * n])))
        done.add("axi")

    async def lite_side(ctx):
        # Meanwhile the bridge's words in the upper half, contending for both memory ports.
        for addr, word, strobe in lite_words:
            await tb.lite_write(ctx, addr, word, strobe)
        seen["lite"] = [await tb.lite_read(ctx, addr) for addr, _, _ in lite_words]
        while "axi" not in done:
            await ctx.tick()
        # Then each port reads what the other wrote, a 32-bit word in each lane of a beat.
        seen["axi of lite"] = await tb.read_burst(ctx, 512, 96 // n)
        seen["lite of axi"] = [await tb.lite_read(ctx, 4 * k) for k in range(128)]
        seen["backdoor"] = tb.contents(ctx)

    simulate(tb.dut, axi_side, lite_side, timeout=50_000)
    model = bytes(tb.model)
    assert all(got == want for got, want in readback) and len(readback) == len(bursts)
    assert seen["lite"] == [int.from_bytes(model[a:a + 4], "little") for a, _, _ in lite_words]
    assert seen["axi of lite"] == model[512:608]
    assert seen["lite of axi"] == list(struct.unpack("<128I", model[:512]))
    assert seen["backdoor"] == model
    assert any(model[:512]) and any(model[512:608])


def test_memory_read_latency_is_the_constant():
    tb = MemoryTB(256, 32, 0.0, seed=0)
    cycles = {}

    async def testbench(ctx):
        for name, valid, ready in [("axi", tb.dut.axi.read.arvalid, tb.dut.axi.read.arready),
                                   ("lite", tb.dut.axil.arvalid, tb.dut.axil.arready)]:
            rvalid = tb.dut.axi.read.rvalid if name == "axi" else tb.dut.axil.rvalid
            ctx.set(tb.dut.axi.read.rready, 1)
            ctx.set(tb.dut.axil.rready, 1)
            ctx.set(valid, 1)
            await ctx.tick().until(ready)
            ctx.set(valid, 0)
            count = 0
            while not (await ctx.tick().sample(rvalid))[-1]:
                count += 1
            cycles[name] = count + 1

    simulate(tb.dut, testbench, timeout=1_000)
    assert cycles == {"axi": READ_LATENCY, "lite": READ_LATENCY}


@pytest.mark.parametrize("depth", [0, 1002, 4.0])
def test_memory_depth_is_checked(depth):
    with pytest.raises(ValueError, match=rf"OnChipMemory depth must be a positive multiple of "
                                         rf"4 bytes, not {depth!r}"):
        OnChipMemory(depth, 32)


# The board top from its pins -----------------------------------------------------------------

class TopTB:
    """The host on a :class:`BoardTop`'s pins: the client's frames driven bit by bit on ``rx``,
    its replies decoded from ``tx``."""

    def __init__(self, memory_bytes=MEMORY_BYTES):
        self.dut = BoardTop(CONFIG, memory_bytes, DIVISOR)
        self.replies = bytearray()

    async def send(self, ctx, data):
        for byte in data:
            await drive_byte(ctx, self.dut.rx, byte, DIVISOR)
            ctx.set(self.dut.rx, 1)

    async def decode_tx(self, ctx):
        await decode_bytes(ctx, self.dut.tx, DIVISOR, self.replies)

    async def write_words(self, ctx, addr, words):
        for first in range(0, len(words), MAX_WORDS):
            port = RecordingPort()
            chunk = words[first:first + MAX_WORDS]
            BridgeClient(port).write_words(addr + 4 * first, chunk)
            await self.send(ctx, port.sent)
            # At divisor 4 the commit of a 255-word frame (765 cycles) outlasts the bridge's
            # queue of QUEUE_BYTES byte times (640 cycles); from divisor 5 on it does not, so
            # only the simulated host waits.
            await ctx.tick().repeat(COMMIT_CYCLES_PER_WORD * len(chunk))

    async def read_words(self, ctx, addr, n):
        port = RecordingPort(bytes(4 * n))
        BridgeClient(port).read_words(addr, n)
        start = len(self.replies)
        await self.send(ctx, port.sent)
        while len(self.replies) < start + 4 * n:
            await ctx.tick()
        return BridgeClient(RecordingPort(self.replies[start:])).read_words(addr, n)

    def run(self, testbench, timeout):
        simulate(self.dut, testbench, processes=[self.decode_tx], timeout=timeout)


def test_the_host_reaches_registers_and_memory_at_the_maps_addresses():
    tb = TopTB()
    seen = {}
    offset = REGISTERS["base"] - min(REGISTERS.values())    # the same low bits in memory

    async def testbench(ctx):
        seen["status, pc"] = [(await tb.read_words(ctx, REGISTERS[name], 1))[0]
                              for name in ("status", "pc")]
        await tb.write_words(ctx, REGISTERS["base"], [0x0000_1230])
        await tb.write_words(ctx, MEMORY_BASE + offset, [0xCAFE_F00D, 0x1234_5678])
        seen["base"] = await tb.read_words(ctx, REGISTERS["base"], 1)
        seen["memory"] = await tb.read_words(ctx, MEMORY_BASE + offset, 2)
        seen["backdoor"] = [ctx.get(tb.dut.memory.data[offset // 4 + k]) for k in range(2)]

    tb.run(testbench, timeout=20_000)
    assert seen == {"status, pc": [0, 0], "base": [0x1230],
                    "memory": [0xCAFE_F00D, 0x1234_5678], "backdoor": [0xCAFE_F00D, 0x1234_5678]}


def test_memory_bytes_is_checked():
    with pytest.raises(ValueError, match=r"BoardTop memory_bytes must be a positive multiple of "
                                         r"the AXI width \(4 bytes\), not 4098"):
        BoardTop(CONFIG, 4098, DIVISOR)


def _words_covering(addresses):
    """The word-aligned byte range ``(first, end)`` holding every byte of ``addresses``."""
    return int(addresses.min()) // 4 * 4, (int(addresses.max()) // 4 + 1) * 4


def test_a_compiled_program_runs_from_the_host_bit_exact_with_the_isa_simulator():
    """All through the pins: the host writes the image, ``base`` and ``start``, polls
    ``status`` and reads the output back; the memory starts with ones, so every byte the
    program uses came over the UART."""
    qgraph, inputs = quantized(conv_model(2, 2, (3, 3), [3, 3], pads=[1, 1, 1, 1]))
    program = lower(qgraph, CONFIG, True)
    image = program.frame(inputs)
    ref = isa_sim.run(image, CONFIG)
    (out_name, entry), = program.layout["outputs"].items()
    out_first, out_end = _words_covering(tensor_addresses(entry))
    tb = TopTB()
    seen = {"polls": 0}

    async def testbench(ctx):
        for k in range(MEMORY_BYTES // 4):
            ctx.set(tb.dut.memory.data[k], 0xFFFF_FFFF)
        await tb.write_words(ctx, MEMORY_BASE, struct.unpack(f"<{len(image) // 4}I", image))
        await tb.write_words(ctx, REGISTERS["base"], [0])
        await tb.write_words(ctx, REGISTERS["start"], [1])
        while True:
            status, = await tb.read_words(ctx, REGISTERS["status"], 1)
            seen["polls"] += 1
            if status & STATUS_DONE:
                break
            assert status == STATUS_BUSY
        seen["irq"] = ctx.get(tb.dut.irq)
        seen["status"] = status
        seen["pc"], = await tb.read_words(ctx, REGISTERS["pc"], 1)
        words = await tb.read_words(ctx, MEMORY_BASE + out_first, (out_end - out_first) // 4)
        seen["output"] = struct.pack(f"<{len(words)}I", *words)
        seen["memory"] = np.array([ctx.get(tb.dut.memory.data[k])
                                   for k in range(MEMORY_BYTES // 4)], "<u4").view(np.uint8)

    tb.run(testbench, timeout=150_000)
    assert seen["status"] == STATUS_DONE and seen["irq"] == 1 and seen["polls"] > 1
    # The fetcher has read past END.
    assert len(program.code) <= seen["pc"] < MEMORY_BYTES, seen["pc"]
    np.testing.assert_array_equal(np.frombuffer(seen["output"], np.uint8),
                                  ref.memory[out_first:out_end])
    # Every byte of memory, by the backdoor, but the COUNTERS block (its cycle count is the
    # RTL's own); past the image the memory is as the host left it.
    block = program.layout["counters"]
    backdoor, expect = seen["memory"].copy(), np.frombuffer(ref.memory, np.uint8)[:len(image)]
    backdoor[block:block + 64] = expect[block:block + 64]
    np.testing.assert_array_equal(backdoor[:len(image)], expect)
    assert (backdoor[len(image):] == 0xFF).all()
    memory = bytearray(MEMORY_BYTES)
    memory[out_first:out_end] = seen["output"]
    np.testing.assert_array_equal(program.outputs(memory)[out_name],
                                  program.outputs(ref.memory)[out_name])
