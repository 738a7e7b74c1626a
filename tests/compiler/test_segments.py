"""Segment arithmetic against brute-force enumeration of (output, tap, input) triples."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexigan.compiler.ir import conv_out, convt_out
from flexigan.compiler.segments import conv_axis, convt_axis, phase_tap_counts


def _from_segments(segments, out):
    """{output: sorted (tap, input)} read by the segments; each output covered exactly once."""
    reads = {}
    for seg in segments:
        for m, o in enumerate(seg.outputs()):
            assert o not in reads, f"output {o} in two segments"
            reads[o] = sorted((k, seg.in0 + m * seg.in_step + j * seg.tap_step)
                              for j, k in enumerate(seg.taps))
    assert sorted(reads) == list(range(out))
    return reads


def _convt_reads(size, out, k, s, p, d):
    return {o: sorted((t, (o + p - t * d) // s) for t in range(k)
                      if (o + p - t * d) % s == 0 and 0 <= (o + p - t * d) // s < size)
            for o in range(out)}


def _conv_reads(size, out, k, s, p, d):
    return {o: sorted((t, o * s + t * d - p) for t in range(k) if 0 <= o * s + t * d - p < size)
            for o in range(out)}


axis = st.tuples(st.integers(1, 9), st.integers(1, 7), st.integers(1, 4), st.integers(1, 3),
                 st.integers(0, 6), st.integers(0, 6), st.integers(0, 3))


@settings(max_examples=400, deadline=None)
@given(axis)
def test_convt_segments_read_exactly_the_real_taps(args):
    size, k, s, d, pb, pe, op = args
    pb, pe, op = min(pb, d * (k - 1)), min(pe, d * (k - 1)), op % max(s, d)
    out = convt_out(size, k, s, pb, pe, op, d)
    if out > 0:
        segments = convt_axis(size, out, k, s, pb, d)
        assert _from_segments(segments, out) == _convt_reads(size, out, k, s, pb, d)
        # Within a segment, each output steps by the stride and its input by one.
        assert all(seg.out_step == s and seg.in_step == 1 for seg in segments)


@settings(max_examples=400, deadline=None)
@given(axis)
def test_conv_segments_read_exactly_the_real_taps(args):
    size, k, s, d, pb, pe, _ = args
    out = conv_out(size, k, s, pb, pe, d)
    if out > 0:
        assert _from_segments(conv_axis(size, out, k, s, pb, d), out) == \
            _conv_reads(size, out, k, s, pb, d)


@pytest.mark.parametrize("k, s, p, counts", [
    (5, 2, 2, [9, 6, 6, 4]), (3, 2, 1, [1, 2, 2, 4]), (4, 2, 1, [4, 4, 4, 4]),
    (4, 4, 0, [1] * 16), (2, 1, 0, [4])])
def test_phase_tap_counts(k, s, p, counts):
    rows = phase_tap_counts(k, s, p)
    assert [r * c for r in rows for c in rows] == counts


def test_interior_and_border_segments_of_k5_s2():
    # 8 -> 16 with k=5, s=2, p=2, op=1: interior segments use the phase's 3 or 2 taps,
    # the border ones fewer; no segment touches padding.
    segments = convt_axis(8, 16, 5, 2, 2)
    assert [(seg.phase, seg.count, seg.ntaps) for seg in segments] == [
        (0, 1, 2), (0, 6, 3), (0, 1, 2), (1, 7, 2), (1, 1, 1)]


def test_one_pixel_input_gives_one_tap_segments():
    segments = convt_axis(1, 4, 4, 1, 0)
    assert [(seg.out0, seg.count, seg.taps, seg.in0) for seg in segments] == [
        (0, 1, (0,), 0), (1, 1, (1,), 0), (2, 1, (2,), 0), (3, 1, (3,), 0)]


def test_clip():
    seg = convt_axis(4, 8, 4, 2, 1)[1]  # outputs 2, 4, 6
    clipped = seg.clip(3, 7)
    assert list(clipped.outputs()) == [4, 6] and clipped.in0 == seg.in0 + 1
    assert seg.clip(7, 8) is None
