"""NORM FINISH's unit (hw/norm.py) against ``numerics.norm_params``, bit for bit, with its
fixed latency."""

import math

import numpy as np
import pytest

from flexigan.hw.arch import numerics
from flexigan.hw.norm import NormFinish
from tests.hw.streams import simulate

FIELDS = ("s1", "s2", "count", "eps", "gain", "gain_shift", "beta")
I32 = (-(1 << 31), (1 << 31) - 1)


def random_cases(seed, k):
    """Channels of int8 data (valid sums) and raw operands at the ends of their fields."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(k):
        n = int(rng.choice([1, 2, 3, 16, 1000, numerics.NORM_MAX_COUNT,
                            int(rng.integers(1, numerics.NORM_MAX_COUNT + 1))]))
        mean, spread = rng.integers(-128, 128), rng.choice([0, 1, 5, 60, 200])
        x = np.clip(rng.normal(mean, spread, min(n, 4096)), -128, 127).round()
        scale = n / x.size
        s1, s2 = int(x.sum() * scale), int((x * x).sum() * scale)
        eps = int(rng.choice([0, 1, int(rng.integers(0, 1 << 20)), numerics.NORM_MAX_EPS]))
        gain = int(rng.integers(-(1 << 15), 1 << 15))
        gain_shift = int(rng.choice([0, int(rng.integers(0, 40)), int(rng.integers(0, 256))]))
        beta = int(rng.choice([int(rng.integers(-(3 << 12), 3 << 12)), *I32,
                               int(rng.integers(*I32))]))
        cases.append((s1, s2, n, eps, gain, gain_shift, beta))
    return cases


EDGES = [
    (-9 * 25, 81 * 25, 25, 40, 20000, 10, -5 << 12),          # a constant channel
    (-9 * 25, 81 * 25, 25, 0, 20000, 10, -5 << 12),           # D == 0 and eps == 0
    (100, 900, 20, numerics.NORM_MAX_EPS, 32767, 0, 4096),    # huge eps
    (300, 9000, 20, 7, -32768, 9, -7000),                     # negative gain, its extreme
    (300, 9000, 20, 7, 0, 9, 7000),                           # gain 0
    (5, 25, 1, 0, 1234, 3, 99),                               # n = 1
    (-128 * numerics.NORM_MAX_COUNT, 127 * 127 * numerics.NORM_MAX_COUNT,
     numerics.NORM_MAX_COUNT, 0, 32767, 0, I32[1]),          # extreme sums, beta
    (127 * 1000, 16129 * 999, 1000, 3, -32767, 255, I32[0]),  # beta -2**31, s > 47
    (131070, 131070, 131071, 0, 32767, 0, 0),                 # tiny spread: s < 0
    (300, 9000, 20, 7, -32768, 40, -7000),                    # s = 49: M rounded twice
    (1, 1 << 30, numerics.NORM_MAX_COUNT, 0, 1, 255, 1),      # s > 47 by far: M = 0
    (I32[0], I32[1], (1 << 24) - 1, (1 << 48) - 1, -32768, 255, I32[0]),   # field ends
    (I32[1], -5, 77, 5, 77, 7, I32[1]),                       # S2 < 0
]


def rounding_up_cases():
    """Channels whose quotient rounds up to 2 ** 15 (``t + 1``)."""
    cases, rng = [], np.random.default_rng(7)
    while len(cases) < 4:
        n = int(rng.integers(2, 5000))
        s1, s2 = int(rng.integers(-50, 50)) * n // 3, int(rng.integers(1, 4000)) * n
        gain = int(rng.integers(1 << 14, 1 << 15))
        d = max(n * s2 - s1 * s1, 0)
        if not d:
            continue
        r = math.isqrt(d << 16)
        q = numerics.div_round(gain * n << 23, 64 * r)
        drop = max(0, q.bit_length() - 15)
        if drop and int(numerics.rshift_round(q, drop)) >> 15:
            cases.append((s1, s2, n, 0, gain, 5, 100))
    return cases


def run_unit(cases):
    """Each case through one NormFinish; returns the entries and the cycles each took."""
    dut = NormFinish()
    results = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for case in cases:
            ctx.set(dut.i.payload, dict(zip(FIELDS, case)))
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)
            cycles = 1
            while not ctx.get(dut.o.valid):
                await ctx.tick()
                cycles += 1
            entry = ctx.get(dut.o.payload)
            results.append(((entry.bias, entry.multiplier, entry.shift), cycles))
            await ctx.tick()

    simulate(dut, bench, timeout=(NormFinish.LATENCY + 4) * len(cases) + 100)
    return results


def check(cases):
    results = run_unit(cases)
    for case, (entry, cycles) in zip(cases, results):
        assert entry == numerics.norm_params(*case), case
        assert cycles == NormFinish.LATENCY


def test_edge_cases():
    check(EDGES)


def test_quotients_that_round_up_to_2_15():
    check(rounding_up_cases())


@pytest.mark.parametrize("seed", range(3))
def test_random_channels(seed):
    check(random_cases(seed, 100))
