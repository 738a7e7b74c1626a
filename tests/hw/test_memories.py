# amaranth: UnusedElaboratable=no
import random

import pytest

from flexigan.hw.arch.config import AcceleratorConfig
from flexigan.hw.memories import ElementMemory, WeightBuffer
from tests.hw.streams import simulate


def random_chunks(rng, size, chunk, n):
    """Chunk writes (addr, bytes, mask) and the memory they leave."""
    model = bytearray(size)
    writes = []
    for _ in range(n):
        addr = rng.randrange(0, size, chunk)
        payload = rng.randbytes(chunk)
        mask = rng.choice([(1 << chunk) - 1, rng.getrandbits(chunk)])
        for b in range(chunk):
            if mask >> b & 1:
                model[addr + b] = payload[b]
        writes.append((addr, int.from_bytes(payload, "little"), mask))
    return writes, model


async def write_chunks(ctx, port, writes):
    for addr, word, mask in writes:
        ctx.set(port.valid, 1)
        ctx.set(port.payload, {"addr": addr, "data": word, "mask": mask})
        await ctx.tick()
    ctx.set(port.valid, 0)


@pytest.mark.parametrize("registered", [False, True])
@pytest.mark.parametrize("element,depth,chunk", [(1, 512, 4), (1, 512, 32), (8, 64, 4),
                                                 (8, 64, 32), (16, 16, 4), (16, 16, 32)])
def test_element_memory(element, depth, chunk, registered):
    rng = random.Random(element * 100 + chunk)
    dut = ElementMemory(element_bytes=element, depth=depth, chunk_bytes=chunk,
                        registered=registered)
    writes, model = random_chunks(rng, element * depth, chunk, 3 * depth * element // chunk)

    async def tb(ctx):
        await write_chunks(ctx, dut.w, writes)
        # The reads made in enabled cycles; the output holds the one a stage (or two) back.
        reads = []
        for _ in range(200):
            index = rng.randrange(depth)
            enable = rng.random() < 0.7
            ctx.set(dut.r.addr, index)
            ctx.set(dut.r.en, enable)
            await ctx.tick()
            if enable:
                reads.append(index)
            held = reads[-2 if registered else -1:]
            if len(held) == (2 if registered else 1):
                expect = int.from_bytes(model[held[0] * element:(held[0] + 1) * element],
                                        "little")
                assert ctx.get(dut.r.data) == expect

    simulate(dut, tb)


@pytest.mark.parametrize("element,chunk", [(8, 4), (8, 8), (8, 32), (1, 4)])
def test_element_writes_yield_to_chunks(element, chunk):
    """Elements written on ``e`` between and beside chunks on ``w``: ``e`` waits while a chunk
    is there, and each write lands, masked, in its element."""
    rng = random.Random(element + chunk)
    depth = 64
    dut = ElementMemory(element_bytes=element, depth=depth, chunk_bytes=chunk,
                        element_write=True)
    model = bytearray(element * depth)

    async def tb(ctx):
        for _ in range(300):
            chunk_there = rng.random() < 0.4
            addr, payload = rng.randrange(0, element * depth, chunk), rng.randbytes(chunk)
            index, data = rng.randrange(depth), rng.randbytes(element)
            mask = rng.getrandbits(element)
            ctx.set(dut.w.valid, chunk_there)
            ctx.set(dut.w.payload, {"addr": addr, "data": int.from_bytes(payload, "little"),
                                    "mask": (1 << chunk) - 1})
            ctx.set(dut.e.valid, 1)
            ctx.set(dut.e.payload, {"index": index, "data": int.from_bytes(data, "little"),
                                    "mask": mask})
            assert ctx.get(dut.e.ready) == (not chunk_there)
            await ctx.tick()
            if chunk_there:
                model[addr:addr + chunk] = payload
            else:
                for b in range(element):
                    if mask >> b & 1:
                        model[index * element + b] = data[b]
        ctx.set(dut.w.valid, 0)
        ctx.set(dut.e.valid, 0)
        for index in range(depth):
            ctx.set(dut.r.addr, index)
            ctx.set(dut.r.en, 1)
            await ctx.tick()
            assert ctx.get(dut.r.data) == int.from_bytes(
                model[index * element:(index + 1) * element], "little")

    simulate(dut, tb)


@pytest.mark.parametrize("lanes,chunk", [(4, 4), (4, 32), (8, 4), (1, 8), (2, 1)])
def test_weight_buffer_reads_lanes_at_any_address(lanes, chunk):
    rng = random.Random(lanes * 10 + chunk)
    config = AcceleratorConfig(lanes=lanes, weight_bytes=512, axi_data_width=8 * chunk)
    dut = WeightBuffer(config)
    writes, model = random_chunks(rng, 512, chunk, 400)

    async def tb(ctx):
        await write_chunks(ctx, dut.w, writes)
        for _ in range(200):
            addr = rng.randrange(512)
            ctx.set(dut.r.addr, addr)
            ctx.set(dut.r.en, 1)
            await ctx.tick()
            ctx.set(dut.r.en, 0)
            await ctx.tick()     # the pipeline holds while not enabled
            ctx.set(dut.r.addr, rng.randrange(512))
            ctx.set(dut.r.en, 1)
            await ctx.tick()     # the next read moves this one to the output
            ctx.set(dut.r.en, 0)
            await ctx.tick().repeat(rng.randrange(1, 3))
            got = [ctx.get(dut.r.data[lane]) for lane in range(lanes)]
            assert got == [model[(addr + lane) % 512] for lane in range(lanes)], addr

    simulate(dut, tb)


def test_memory_size_errors():
    with pytest.raises(ValueError, match="ElementMemory depth must be a positive power of two, "
                                         "not 12"):
        ElementMemory(element_bytes=1, depth=12, chunk_bytes=4)
    with pytest.raises(ValueError, match="AcceleratorConfig.lanes must be a positive power of "
                                         "two, not 3"):
        WeightBuffer(AcceleratorConfig(lanes=3))
