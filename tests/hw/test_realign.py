# amaranth: UnusedElaboratable=no
import random

import pytest

from flexigan.hw.realign import Realign, SharedRealign
from tests.hw.streams import Pauses, get, put, simulate


def words_of(payload, offset, width):
    """``payload`` placed from byte ``offset`` of the first of the words that cover it."""
    nbytes = width // 8
    padded = bytes(offset) + payload
    padded += bytes(-len(padded) % nbytes)
    return [int.from_bytes(padded[i:i + nbytes], "little")
            for i in range(0, len(padded), nbytes)]


def expected_words(payload, offset, width):
    nbytes = width // 8
    words = words_of(payload, offset, width)
    out = []
    for k, word in enumerate(words):
        mask = 0
        for b in range(nbytes):
            if offset <= k * nbytes + b < offset + len(payload):
                mask |= 1 << b
        out.append((word, mask, int(k == len(words) - 1)))
    return out


def random_transfers(rng, nbytes, count=25):
    """``(src_offset, dst_offset, payload)`` of ``count`` transfers, some empty."""
    transfers = []
    for _ in range(count):
        n = rng.choice([0, 1, 2, nbytes - 1 or 1, nbytes, nbytes + 1, rng.randint(1, 5 * nbytes)])
        transfers.append((rng.randrange(nbytes), rng.randrange(nbytes), rng.randbytes(n)))
    return transfers


def check_word(got, expected, nbytes, where):
    """An output word against ``(word, mask, last)``: the mask, last, and the masked bytes."""
    word, mask, last = expected
    assert got.mask == mask and got.last == last, where
    for b in range(nbytes):
        if mask >> b & 1:
            assert (got.data >> 8 * b) & 0xFF == (word >> 8 * b) & 0xFF, where


@pytest.mark.parametrize("width", [8, 32, 64])
@pytest.mark.parametrize("seed,p_in,p_out", [(0, 0.0, 0.0), (1, 0.4, 0.2), (2, 0.2, 0.6)])
def test_realign_moves_bytes(width, seed, p_in, p_out):
    nbytes = width // 8
    dut = Realign(width)
    transfers = random_transfers(random.Random(seed * 1000 + width), nbytes)

    async def commander(ctx):
        for s, t, payload in transfers:
            await put(ctx, dut.cmd, {"src_offset": s, "dst_offset": t, "length": len(payload)})

    async def driver(ctx):
        pauses = Pauses(p_in, seed)
        for s, _, payload in transfers:
            if payload:
                for word in words_of(payload, s, width):
                    await put(ctx, dut.i, {"data": word}, pauses)

    async def checker(ctx):
        pauses = Pauses(p_out, seed + 7)
        for n, (_, t, payload) in enumerate(transfers):
            if not payload:
                continue
            for expected in expected_words(payload, t, width):
                check_word(await get(ctx, dut.o, pauses), expected, nbytes, (n, t, payload))

    simulate(dut, commander, driver, checker)


@pytest.mark.parametrize("seed,p_in,p_out", [(3, 0.0, 0.0), (4, 0.4, 0.2)])
def test_shared_realign_serves_the_client_selected_while_idle(seed, p_in, p_out):
    """Transfers alternate between the two clients, ``select`` switching between them."""
    width, nbytes = 32, 4
    dut = SharedRealign(width)
    clients = (dut.first, dut.second)
    transfers = [t for t in random_transfers(random.Random(seed), nbytes) if t[2]]
    done = [0]                                 # transfers whose last word has left

    async def commander(ctx):
        for n, (s, t, payload) in enumerate(transfers):
            while done[0] < n:
                await ctx.tick()
            ctx.set(dut.select, n % 2)
            await put(ctx, clients[n % 2].cmd, {"src_offset": s, "dst_offset": t,
                                                "length": len(payload)})

    async def driver(ctx):
        pauses = Pauses(p_in, seed)
        for n, (s, _, payload) in enumerate(transfers):
            for word in words_of(payload, s, width):
                await put(ctx, clients[n % 2].i, {"data": word}, pauses)

    async def checker(ctx):
        pauses = Pauses(p_out, seed + 7)
        for n, (_, t, payload) in enumerate(transfers):
            for expected in expected_words(payload, t, width):
                assert not ctx.get(clients[1 - n % 2].o.valid)
                check_word(await get(ctx, clients[n % 2].o, pauses), expected, nbytes, n)
            done[0] = n + 1

    simulate(dut, commander, driver, checker)


def test_realign_width_error():
    with pytest.raises(ValueError, match="data_width must be a power of two >= 8, not 24"):
        Realign(24)
