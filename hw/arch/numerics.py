"""The machine's integer arithmetic, defined once: rounding, shifts, saturation, requantization.

The quantizer (:mod:`flexigan.compiler.quant`) chooses parameters with it, the golden
interpreter and the instruction-level simulator compute with it, the post-processor
(:mod:`flexigan.hw.post`) implements it in gates, and the tests use it as their oracle.
docs/numerics.md is the contract in prose.

Host-side rounding (weights, biases, offsets, LUT entries, input quantization) is
:func:`round_half_up`, ``floor(x + 0.5)``; device-side rounding is :func:`rshift_round`.
"""

import numpy as np

__all__ = ["round_half_up", "sat8", "rshift_round", "requantize"]


def round_half_up(x):
    """Host-side rounding to the nearest integer, ties towards +inf: ``floor(x + 0.5)``."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5)


def sat8(v):
    """Saturate integers to int8 [-128, 127]."""
    return np.clip(v, -128, 127).astype(np.int8)


def rshift_round(v, shift):
    """``(v + 2**(shift-1)) >> shift`` (arithmetic shift: round half up), and ``v`` for shift 0.

    ``(1 << shift) >> 1`` is the rounding term for every shift, 0 included. ``v`` and ``shift``
    are int64 arrays (or ints) that broadcast.
    """
    v = np.asarray(v, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    return (v + ((np.int64(1) << shift) >> 1)) >> shift


def requantize(acc, multiplier, shift, offset=0):
    """POST's requantization (docs/isa.md): ``sat8(rshift_round(acc * multiplier + offset,
    shift))`` of integer ``acc`` (|acc| < 2**31), with parameters that broadcast against it."""
    product = np.asarray(acc, dtype=np.int64) * np.asarray(multiplier, dtype=np.int64)
    return sat8(rshift_round(product + np.asarray(offset, dtype=np.int64), shift))
