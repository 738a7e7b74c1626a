# amaranth: UnusedElaboratable=no
"""Construction-time contracts of hw/axi.py, and the burst engines' error responses in
Amaranth's simulator (the protocols run against AxiRam in test_axi_cocotb.py)."""

import random

import pytest

from flexigan.hw.arch.config import AcceleratorConfig
from flexigan.hw.arch.registers import (
    STATUS_BUS_ERROR,
    STATUS_BUSY,
    STATUS_DONE,
    STATUS_ERROR,
    stop_message,
)
from flexigan.hw.axi import (
    AxiBurstReader,
    AxiBurstWriter,
    AxiLiteRegisters,
    RegisterField,
    axi4_signature,
    register_addresses,
)
from tests.hw.amaranth_axi import AxiMemory
from tests.hw.streams import Pauses, get, put, simulate


def test_register_addresses_pack_fields_in_words():
    fields = [RegisterField("a", 1, "strobe"), RegisterField("b", 64, "ro"),
              RegisterField("c", 33, "rw"), RegisterField("d", 32, "rw")]
    assert register_addresses(fields) == {"a": 0, "b": 4, "c": 12, "d": 20}
    assert AxiLiteRegisters(fields).addr_width == 5


def test_register_field_errors():
    with pytest.raises(ValueError, match="width must be an integer from 1 to 64, not 65"):
        RegisterField("x", 65, "rw")
    with pytest.raises(ValueError, match="access must be one of .*, not 'wo'"):
        RegisterField("x", 8, "wo")
    with pytest.raises(ValueError, match="must be unique and not 'axil'"):
        AxiLiteRegisters([RegisterField("x", 1, "rw"), RegisterField("x", 1, "ro")])


def test_axi4_signature_names_and_width_error():
    sig = axi4_signature(addr_width=32, data_width=64)
    assert sig.members["read"].signature.members["rdata"].shape == 64
    assert sig.members["write"].signature.members["wstrb"].shape == 8
    with pytest.raises(ValueError, match="data_width must be a power of two >= 8, not 12"):
        axi4_signature(addr_width=32, data_width=12)


# --- error responses, in Amaranth's simulator ---------------------------------------------

#: 32-bit beats, bursts of 16 beats: a transfer of 40 beats from 0x100 takes three bursts.
CONFIG = AcceleratorConfig(axi_data_width=32, burst_bytes=64)
#: A transfer of ``BEATS`` beats from ``ADDR``; the beat at ``FAULT`` (in the second burst)
#: answers an error.
ADDR, BEATS, FAULT = 0x100, 40, 0x150


class _Port:
    """The memory's view of a reader's or a writer's port (AxiMemory serves ``read`` and
    ``write``)."""

    def __init__(self, read=None, write=None):
        self.read, self.write = read, write


def _memory(port, resp):
    mem = bytearray(random.Random(3).randbytes(0x400))
    faults = None if resp is None else (FAULT, FAULT + 4, resp)
    return mem, AxiMemory(port, mem, CONFIG.axi_bytes, latency=3, pause=0.3, seed=4,
                          faults=faults)


async def _transfer(ctx, dut, addr, beats):
    await put(ctx, dut.cmd, {"addr": addr, "beats": beats})


@pytest.mark.parametrize("resp", [None, 2, 3])
def test_burst_reader_flags_an_error_response_and_still_delivers_every_beat(resp):
    dut = AxiBurstReader(CONFIG)
    mem, memory = _memory(_Port(read=dut.axi), resp)
    seen = []

    async def testbench(ctx):
        await _transfer(ctx, dut, ADDR, BEATS)
        for k in range(BEATS):
            beat = await get(ctx, dut.o, Pauses(0.3, k))
            seen.append((beat.data, ctx.get(dut.error)))
        await ctx.tick().until(~dut.busy)
        await ctx.tick()
        sticky = ctx.get(dut.error)
        await _transfer(ctx, dut, 0, 4)        # a good transfer does not clear it
        for _ in range(4):
            await get(ctx, dut.o)
        assert ctx.get(dut.error) == sticky
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        assert not ctx.get(dut.error)

    simulate(dut, testbench, processes=[memory.reads], timeout=5000)
    fault = (FAULT - ADDR) // 4
    expect = [int.from_bytes(mem[ADDR + 4 * k:ADDR + 4 * k + 4], "little")
              if resp is None or k != fault else 0 for k in range(BEATS)]
    assert [data for data, _ in seen] == expect
    # Read just after each beat's handshake: low before the faulty beat, high from it on.
    assert [flag for _, flag in seen] == [resp is not None and k >= fault for k in range(BEATS)]


@pytest.mark.parametrize("resp", [None, 2, 3])
def test_burst_writer_flags_an_error_response_and_completes_every_burst(resp):
    dut = AxiBurstWriter(CONFIG)
    mem, memory = _memory(_Port(write=dut.axi), resp)
    before = bytes(mem)
    words = random.Random(5).randbytes(4 * BEATS)

    async def testbench(ctx):
        await _transfer(ctx, dut, ADDR, BEATS)
        for k in range(BEATS):
            await put(ctx, dut.i, {"data": int.from_bytes(words[4 * k:4 * k + 4], "little"),
                                   "mask": 0xF, "last": 0}, Pauses(0.3, k))
        await ctx.tick().until(~dut.busy)
        await ctx.tick()
        assert ctx.get(dut.error) == (resp is not None)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        assert not ctx.get(dut.error)

    simulate(dut, testbench, processes=[memory.writes], timeout=5000)
    # Every beat is written but, in the faulty burst, those from the faulty one on.
    end = ADDR + 4 * BEATS
    skipped = range(FAULT, FAULT - FAULT % 64 + 64) if resp is not None else range(0)
    expect = bytes(before[a] if a in skipped else words[a - ADDR] for a in range(ADDR, end))
    assert mem[ADDR:end] == expect


def test_the_hosts_line_for_each_way_a_program_stops():
    assert stop_message(STATUS_DONE | STATUS_ERROR | STATUS_BUS_ERROR, 0x440, "within 60 s") == \
        "the accelerator stopped on a bus error (AXI SLVERR/DECERR) at fetch address 0x440 " \
        "(status 0xe)"
    assert stop_message(STATUS_DONE | STATUS_ERROR, 0x40, "").startswith(
        "the accelerator stopped with its error bit set (an undefined opcode")
    assert stop_message(STATUS_BUSY, 0x40, "within 60 s") == \
        "the accelerator did not reach END within 60 s at fetch address 0x40 (status 0x1)"
