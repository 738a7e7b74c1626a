# amaranth: UnusedElaboratable=no
import random
import struct

import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib.wiring import Out

from flexigan.host import BridgeClient
from flexigan.hw.arch.bridge import CMD_READ, CMD_WRITE, MAX_WORDS
from flexigan.hw.arch.registers import register_addresses, registers
from flexigan.hw.axi import AxiLiteRegisters
from flexigan.hw.bridge import UartBridge
from tests.helpers import RecordingPort
from tests.hw.streams import decode_bytes, drive_byte, simulate

DIVISOR = 5
TIMEOUT_BITS = 30


def frame(cmd, word_address, words=(), count=None):
    count = len(words) if count is None else count
    return bytes([cmd, count]) + struct.pack(f">I{len(words)}I", word_address, *words)


class TB:
    """Drives ``rx``, decodes ``tx``, serves the AXI4-Lite master port from ``mem``."""

    def __init__(self, divisor=DIVISOR, timeout_bits=TIMEOUT_BITS, pause=0.0, seed=0):
        self.dut = UartBridge(divisor, timeout_bits)
        self.divisor = divisor
        self.quiet = (timeout_bits + 12) * divisor    # a quiet line longer than the timeout
        self.mem = {}                   # byte address -> word
        self.writes = []                # (byte address, word) in bus order
        self.replies = bytearray()
        self.dropped = 0
        self.rng = random.Random(seed)
        self.pause = pause

    def _stall(self):
        return self.rng.random() < self.pause

    async def send(self, ctx, data, stop_bits=None):
        for k, byte in enumerate(data):
            stop = 1 if stop_bits is None else stop_bits[k]
            await drive_byte(ctx, self.dut.rx, byte, self.divisor, stop)
            ctx.set(self.dut.rx, 1)

    async def wait_replies(self, ctx, n):
        while len(self.replies) < n:
            await ctx.tick()

    async def decode_tx(self, ctx):
        await decode_bytes(ctx, self.dut.tx, self.divisor, self.replies)

    async def count_dropped(self, ctx):
        async for _, _, dropped in ctx.tick().sample(self.dut.dropped):
            self.dropped += dropped

    async def serve_writes(self, ctx):
        p = self.dut.axil
        addr = data = None
        responding = False
        while True:
            ctx.set(p.awready, addr is None and not self._stall())
            ctx.set(p.wready, data is None and not self._stall())
            ctx.set(p.bvalid, responding)
            (aw_valid, aw_ready, awaddr, w_valid, w_ready, wdata, wstrb,
             b_ready) = (await ctx.tick().sample(p.awvalid, p.awready, p.awaddr, p.wvalid,
                                                 p.wready, p.wdata, p.wstrb, p.bready))[2:]
            if responding and b_ready:
                responding = False
            if aw_valid and aw_ready:
                addr = awaddr
            if w_valid and w_ready:
                assert wstrb == 0xF
                data = wdata
            if addr is not None and data is not None and not responding:
                self.mem[addr] = data
                self.writes.append((addr, data))
                addr = data = None
                responding = True

    async def serve_reads(self, ctx):
        p = self.dut.axil
        word = None
        while True:
            ctx.set(p.arready, word is None and not self._stall())
            ctx.set(p.rvalid, word is not None)
            ctx.set(p.rdata, word or 0)
            ar_valid, ar_ready, araddr, r_valid, r_ready = (await ctx.tick().sample(
                p.arvalid, p.arready, p.araddr, p.rvalid, p.rready))[2:]
            if r_valid and r_ready:
                word = None
            if ar_valid and ar_ready:
                word = self.mem.get(araddr, 0xDEAD0000 | araddr & 0xFFFF)

    def run(self, testbench, timeout=60_000, top=None):
        """Simulate the bridge alone, its bus served here, or inside ``top`` (which serves it)."""
        servers = [self.serve_writes, self.serve_reads] if top is None else []
        simulate(self.dut if top is None else top, testbench, timeout=timeout,
                 processes=[self.decode_tx, self.count_dropped, *servers])


@pytest.mark.parametrize("pause", [0.0, 0.5])
def test_writes_land_and_reads_come_back(pause):
    tb = TB(pause=pause, seed=1)
    words = [0x01234567, 0x89ABCDEF, 0xCAFEF00D]

    async def testbench(ctx):
        await tb.send(ctx, frame(CMD_WRITE, 0x100, words))
        await tb.send(ctx, frame(CMD_READ, 0x100, count=3))
        await tb.wait_replies(ctx, 12)
        await tb.send(ctx, frame(CMD_READ, 0x2000, count=1))
        await tb.wait_replies(ctx, 16)

    tb.run(testbench)
    assert tb.writes == [(0x400 + 4 * k, w) for k, w in enumerate(words)]
    assert bytes(tb.replies) == struct.pack(">4I", *words, 0xDEAD8000)
    assert tb.dropped == 0


def test_a_burst_of_many_words_back_to_back():
    rng = random.Random(7)
    words = [rng.randrange(1 << 32) for _ in range(40)]
    tb = TB(divisor=4, pause=0.3, seed=2)

    async def testbench(ctx):
        await tb.send(ctx, frame(CMD_WRITE, 0x3FFF_FFF0, words) + frame(CMD_READ, 0x3FFF_FFF0,
                                                                        count=len(words)))
        await tb.wait_replies(ctx, 4 * len(words))

    tb.run(testbench)
    # The byte address is the low 32 bits of 4 * word address: this burst wraps to 0.
    assert tb.writes == [((0xFFFF_FFC0 + 4 * k) % (1 << 32), w) for k, w in enumerate(words)]
    assert list(struct.unpack(">40I", tb.replies)) == words


def test_a_truncated_frame_times_out_and_writes_nothing():
    tb = TB()
    marks = {}

    async def testbench(ctx):
        await tb.send(ctx, frame(CMD_WRITE, 0x10, [0x11111111, 0x22222222])[:-2])
        await ctx.tick().repeat(tb.quiet)
        marks["after timeout"] = (list(tb.writes), tb.dropped)
        await tb.send(ctx, frame(CMD_WRITE, 0x10, [0x33333333]) + frame(CMD_READ, 0x10, count=1))
        await tb.wait_replies(ctx, 4)

    tb.run(testbench)
    assert marks["after timeout"] == ([], 1)
    assert tb.writes == [(0x40, 0x33333333)]
    assert bytes(tb.replies) == struct.pack(">I", 0x33333333)


@pytest.mark.parametrize("gap_bits,kept", [(TIMEOUT_BITS - 2, True), (TIMEOUT_BITS + 2, False)])
def test_a_quiet_line_longer_than_the_timeout_drops_the_frame(gap_bits, kept):
    tb = TB()
    data = frame(CMD_WRITE, 0x10, [0x44444444])

    async def testbench(ctx):
        await tb.send(ctx, data[:5])
        await ctx.tick().repeat(gap_bits * DIVISOR)
        await tb.send(ctx, data[5:])
        await ctx.tick().repeat(tb.quiet)

    tb.run(testbench)
    assert tb.writes == ([(0x40, 0x44444444)] if kept else [])
    # Past the timeout the rest is a frame of its own, with command 0x44: dropped too.
    assert tb.dropped == (0 if kept else 2)


@pytest.mark.parametrize("bad", [0, 7, 9])
def test_a_garbled_byte_drops_its_frame(bad):
    tb = TB()
    data = frame(CMD_WRITE, 0x20, [0x55555555])
    stop_bits = [int(k != bad) for k in range(len(data))]

    async def testbench(ctx):
        await tb.send(ctx, data, stop_bits)
        await ctx.tick().repeat(tb.quiet)
        await tb.send(ctx, frame(CMD_READ, 0x20, count=1))
        await tb.wait_replies(ctx, 4)

    tb.run(testbench)
    assert tb.writes == []
    assert tb.dropped == 1
    assert bytes(tb.replies) == struct.pack(">I", 0xDEAD0080)


def test_an_unknown_command_is_dropped_without_touching_the_bus():
    tb = TB()

    async def testbench(ctx):
        await tb.send(ctx, frame(0x03, 0x20, [0x66666666]))
        await ctx.tick().repeat(tb.quiet)
        await tb.send(ctx, frame(CMD_WRITE, 0x21, [0x77777777]))
        await ctx.tick().repeat(10 * DIVISOR)

    tb.run(testbench)
    assert tb.writes == [(0x84, 0x77777777)]
    assert tb.dropped == 1


def test_the_host_clients_frames_work_on_the_bridge():
    rng = random.Random(5)
    image = bytes(rng.randrange(256) for _ in range(4 * (MAX_WORDS + 2)))
    writes, reads = RecordingPort(), RecordingPort(bytes(len(image)))
    BridgeClient(writes).write_bytes(0x2000, image, check_every=0)     # frames only
    BridgeClient(reads).read_bytes(0x2000, len(image))
    tb = TB()

    async def testbench(ctx):
        # The second read frame waits in the bridge's queue while the first is answered.
        await tb.send(ctx, writes.sent + reads.sent)
        await tb.wait_replies(ctx, len(image))

    tb.run(testbench, timeout=150_000)
    assert [a for a, _ in tb.writes] == list(range(0x2000, 0x2000 + len(image), 4))
    assert tb.mem[0x2004] == int.from_bytes(image[4:8], "little")
    assert BridgeClient(RecordingPort(tb.replies)).read_bytes(0x2000, len(image)) == image


class BridgeAndRegisters(Elaboratable):
    """The bridge's master port on the controller's register file (its narrower address)."""

    def __init__(self, bridge):
        self.bridge, self.regs = bridge, AxiLiteRegisters(registers())

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge, m.submodules.regs = self.bridge, self.regs
        for name, member in self.bridge.axil.signature.members.items():
            master, slave = getattr(self.bridge.axil, name), getattr(self.regs.axil, name)
            m.d.comb += slave.eq(master) if member.flow == Out else master.eq(slave)
        return m


def test_the_register_map_is_reached_at_its_byte_addresses():
    tb = TB()
    top = BridgeAndRegisters(tb.dut)
    reg = register_addresses(registers())

    async def testbench(ctx):
        await tb.send(ctx, frame(CMD_WRITE, reg["base"] // 4, [0x1234_5678, 1]))
        await tb.send(ctx, frame(CMD_READ, reg["start"] // 4, count=5))
        await tb.wait_replies(ctx, 20)
        assert ctx.get(top.regs.base) == 0x1234_5678 and ctx.get(top.regs.bypass) == 1

    tb.run(testbench, top=top)
    assert list(struct.unpack(">5I", tb.replies)) == [0, 0, 0x1234_5678, 1, 0]


@pytest.mark.parametrize("timeout_bits", [0, 2.5])
def test_timeout_is_checked(timeout_bits):
    with pytest.raises(ValueError, match=rf"UartBridge timeout_bits must be a positive integer, "
                                         rf"not {timeout_bits!r}"):
        UartBridge(8, timeout_bits)
