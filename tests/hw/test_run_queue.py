# amaranth: UnusedElaboratable=no
"""The group's RUN queue against a model: in order, at most RUN_SLOTS held, every slot shown."""

import random

import pytest

from flexigan.hw.arch.config import RUN_SLOTS
from flexigan.hw.group.run_queue import RunQueue
from tests.hw.streams import Pauses, get, put, simulate


def random_run(rng, n):
    """A RUN whose fields tell it apart (``rows`` numbers it)."""
    return {"group_mask": 1, "uop_addr": rng.randrange(4096), "uop_count": rng.randrange(256),
            "rows": n, "cols": rng.randrange(4096), "lanes": rng.randrange(256),
            "act_offset": rng.getrandbits(24), "wgt_offset": rng.getrandbits(24),
            "param_offset": rng.getrandbits(16), "out_offset": rng.getrandbits(24),
            "lut_offset": rng.getrandbits(8)}


def as_dict(run):
    return {name: getattr(run, name) for name in random_run(random.Random(0), 0)}


@pytest.mark.parametrize("seed, p_in, p_out, p_done", [
    (0, 0.0, 0.0, 0.0), (1, 0.5, 0.0, 0.0), (2, 0.0, 0.6, 0.0), (3, 0.0, 0.0, 0.8),
    (4, 0.3, 0.3, 0.3), (5, 0.7, 0.2, 0.5),
])
def test_holds_at_most_run_slots_and_hands_them_out_in_order(seed, p_in, p_out, p_done):
    rng = random.Random(seed)
    runs = [random_run(rng, n) for n in range(60)]
    dut = RunQueue()
    handed = []            # RUNs the decoder took, in order
    completed = []

    async def producer(ctx):
        pauses = Pauses(p_in, seed)
        for run in runs:
            await put(ctx, dut.i, run, pauses)

    async def decoder(ctx):
        pauses = Pauses(p_out, seed + 1)
        for _ in runs:
            handed.append(as_dict(await get(ctx, dut.o, pauses)))

    async def completer(ctx):
        # Completes the oldest RUN the decoder has taken, now and then.
        pauses = Pauses(p_done, seed + 2)
        while len(completed) < len(runs):
            if len(completed) < len(handed):
                await pauses.wait(ctx)
                ctx.set(dut.done, 1)
                await ctx.tick()
                ctx.set(dut.done, 0)
                completed.append(handed[len(completed)])
            else:
                await ctx.tick()

    async def checker(ctx):
        # The model: the RUNs held, oldest first, and the slot of the oldest.
        held, head, taken = [], 0, 0
        while len(completed) < len(runs):
            _, _, i_valid, i_ready, done, slots, busy = await ctx.tick().sample(
                dut.i.valid, dut.i.ready, dut.done, dut.slots, dut.busy)
            assert i_ready == (len(held) < RUN_SLOTS)
            assert busy == bool(held)
            for k in range(RUN_SLOTS):
                j = (k - head) % RUN_SLOTS
                assert slots[k].valid == (j < len(held)), k
            if done:
                held.pop(0)
                head = (head + 1) % RUN_SLOTS
            if i_valid and i_ready:
                held.append(runs[taken])
                taken += 1

    simulate(dut, producer, decoder, completer, checker)
    assert handed == runs
    assert completed == runs


def test_a_run_is_offered_the_cycle_after_it_is_taken_and_a_slot_frees_the_cycle_after_done():
    rng = random.Random(9)
    runs = [random_run(rng, n) for n in range(RUN_SLOTS + 1)]
    dut = RunQueue()

    async def bench(ctx):
        ctx.set(dut.i.valid, 1)
        for k, run in enumerate(runs[:RUN_SLOTS]):
            ctx.set(dut.i.payload, run)
            assert ctx.get(dut.i.ready)
            assert ctx.get(dut.o.valid) == (k != 0)
            await ctx.tick()
        # Full: the next RUN waits, though the first is handed out.
        ctx.set(dut.i.payload, runs[-1])
        assert not ctx.get(dut.i.ready)
        for run in runs[:RUN_SLOTS]:
            assert ctx.get(dut.o.valid)
            assert as_dict(ctx.get(dut.o.payload)) == run
            ctx.set(dut.o.ready, 1)
            await ctx.tick()
            ctx.set(dut.o.ready, 0)
        assert not ctx.get(dut.o.valid)
        await ctx.tick().repeat(3)
        assert not ctx.get(dut.i.ready)
        ctx.set(dut.done, 1)
        await ctx.tick()
        ctx.set(dut.done, 0)
        assert ctx.get(dut.i.ready)
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        assert not ctx.get(dut.i.ready)
        assert ctx.get(dut.o.valid)
        assert as_dict(ctx.get(dut.o.payload)) == runs[-1]
        assert [ctx.get(dut.slots[k].valid) for k in range(RUN_SLOTS)] == [1] * RUN_SLOTS

    simulate(dut, bench)
