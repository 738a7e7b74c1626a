"""The machine's integer arithmetic, defined once: rounding, shifts, saturation, requantization.

The quantizer (:mod:`flexigan.compiler.quant`) chooses parameters with it, the golden
interpreter and the instruction-level simulator compute with it, the post-processor
(:mod:`flexigan.hw.post`) implements it in gates, and the tests use it as their oracle.
docs/numerics.md is the contract in prose.

Host-side rounding (weights, biases, offsets, LUT entries, input quantization) is
:func:`round_half_up`, ``floor(x + 0.5)``; device-side rounding is :func:`rshift_round`.
"""

import math

import numpy as np

__all__ = ["round_half_up", "sat8", "rshift_round", "requantize", "div_round", "norm_params",
           "NORM_WEIGHT", "NORM_ROOT_FRAC", "NORM_GAIN_FRAC", "NORM_BETA_FRAC", "NORM_MAX_COUNT",
           "NORM_MAX_EPS", "MAX_SHIFT"]

#: Largest requantization shift: a 32-bit accumulator times a 16-bit multiplier is 47 bits.
MAX_SHIFT = 47
#: The weight of an InstanceNorm's normalizing pass: ``acc = NORM_WEIGHT * x + bias`` holds
#: the channel's mean to 1/NORM_WEIGHT of a step.
NORM_WEIGHT = 64
#: Fractional bits of the square root of the variance term, ``r = isqrt(V << 2*NORM_ROOT_FRAC)``.
NORM_ROOT_FRAC = 8
#: Bits the gain quotient is scaled by before it is rounded to a 16-bit multiplier.
NORM_GAIN_FRAC = 23
#: Fractional bits of the per-channel ``beta / gamma`` constant.
NORM_BETA_FRAC = 12
#: Positions an InstanceNorm may normalize over: the sum of squares of int8 values stays
#: below 2**31 (the accumulator).
NORM_MAX_COUNT = (1 << 17) - 1
#: The largest epsilon term (NORM's 48-bit operand).
NORM_MAX_EPS = (1 << 48) - 1


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


def div_round(a, b):
    """``floor(a / b + 1/2)`` of Python integers, ``b > 0``."""
    return (2 * a + b) // (2 * b)


def norm_params(s1, s2, count, eps, gain, gain_shift, beta):
    """The PARAM entry ``(bias, multiplier, shift)`` that normalizes one channel of an
    InstanceNorm (NORM FINISH, docs/numerics.md), from its sums ``s1 = sum(x)`` and ``s2 =
    sum(x*x)`` over ``count`` positions and its constants: ``eps`` (epsilon in
    ``count**2`` squared steps), ``gain``/``gain_shift`` (the fixed-point gamma / s_out) and
    ``beta`` (beta / gamma, NORM_BETA_FRAC fractional bits). The pass then computes
    ``requantize(NORM_WEIGHT * x + bias, multiplier, shift)``. A constant channel (``count *
    s2 == s1 * s1``) gives its bias, ``beta * gamma / s_out`` rounded, exactly; the bias is
    clipped to int32 in both cases. ``count`` is at least 1. Python integers in and out (numpy
    integers are taken as Python integers: the products exceed 64 bits)."""
    s1, s2, count, eps, gain, gain_shift, beta = \
        (int(v) for v in (s1, s2, count, eps, gain, gain_shift, beta))
    d = max(count * s2 - s1 * s1, 0)
    if d == 0:
        level = _shift_round(beta * gain, gain_shift + NORM_BETA_FRAC)
        return _clip32(level - NORM_WEIGHT * s1 // count), 1, 0
    root = math.isqrt((d + eps) << 2 * NORM_ROOT_FRAC)
    quotient = div_round(abs(gain) * count << NORM_GAIN_FRAC, NORM_WEIGHT * root)
    drop = max(0, quotient.bit_length() - 15)
    multiplier = _shift_round(quotient, drop)
    if multiplier >> 15:
        drop += 1
        multiplier = _shift_round(quotient, drop)
    shift = gain_shift + NORM_GAIN_FRAC - NORM_ROOT_FRAC - drop
    if shift < 0:
        multiplier, shift = (1 << 15) - 1, 0
    elif shift > MAX_SHIFT:
        multiplier, shift = _shift_round(multiplier, shift - MAX_SHIFT), MAX_SHIFT
    frac = NORM_ROOT_FRAC + NORM_BETA_FRAC
    bias = div_round(NORM_WEIGHT * (beta * root - (s1 << frac)), count << frac)
    return _clip32(bias), -multiplier if gain < 0 else multiplier, shift


def _shift_round(value, shift):
    """:func:`rshift_round` of a Python integer, exact for every shift (int64 shifts are not
    defined from 64 on: ``gain_shift`` may be up to 255)."""
    return (value + ((1 << shift) >> 1)) >> shift


def _clip32(value):
    """A Python integer clipped to int32 (a PARAM entry's bias)."""
    return min(max(value, -(1 << 31)), (1 << 31) - 1)
