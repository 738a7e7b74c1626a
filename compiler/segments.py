"""Zero-free segments: the output pixels of a convolution grouped by the real taps they read.

This module is the pure index arithmetic of docs/isa.md, "How the compiler uses it". Along one
spatial axis a convolution or transposed convolution is cut into :class:`AxisSegment` s: runs of
outputs, equally spaced, that read the same contiguous range of their phase's taps, with the
input index affine in (output, tap). A 2-D segment is a row segment times a column segment; one
micro-program computes it with no multiply touching an inserted zero or a padding pixel.

Transposed convolution (stride ``s``, pad ``p``, dilation ``d``): output ``o`` meets tap ``k``
at input ``i = (o + p - k*d) / s``, real only when the division is exact and ``0 <= i < size``.
The outputs ``o0, o0 + s, o0 + 2s, ...`` (``o0 < s``) form a *phase*; they all meet the taps
``k`` with ``(o0 + p - k*d) mod s == 0``, and as the output steps by ``s`` the input steps by 1.
Convolution: one phase, output ``o`` meets tap ``k`` at ``i = o*s + k*d - p``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

__all__ = ["AxisSegment", "conv_axis", "convt_axis", "phases", "phase_tap_counts"]


@dataclass(frozen=True)
class AxisSegment:
    """Outputs ``out0 + m*out_step`` (``m < count``) of one phase along one axis.

    They read the taps ``phase_taps[first : first + ntaps]`` (kernel indices, in MAC order);
    tap number ``j`` of that range, at output ``m``, reads input ``in0 + m*in_step + j*tap_step``.
    ``ntaps == 0`` means the outputs meet no real input (they are the bias alone).
    """

    phase: int
    out0: int
    out_step: int
    count: int
    phase_taps: tuple[int, ...]
    first: int
    ntaps: int
    in0: int
    in_step: int
    tap_step: int

    @property
    def taps(self):
        """Kernel indices of the real taps, in MAC order."""
        return self.phase_taps[self.first:self.first + self.ntaps]

    def outputs(self):
        """The output indices of the segment."""
        return range(self.out0, self.out0 + self.count * self.out_step, self.out_step)

    def clip(self, lo, hi):
        """The part of the segment whose outputs lie in ``[lo, hi)``, or None if empty."""
        m_lo = max(0, -((self.out0 - lo) // self.out_step))
        m_hi = min(self.count, -((self.out0 - hi) // self.out_step))
        if m_hi <= m_lo:
            return None
        return replace(self, out0=self.out0 + m_lo * self.out_step, count=m_hi - m_lo,
                       in0=self.in0 + m_lo * self.in_step)


def _runs(phase, out0, step, count, phase_taps, tap_range, in_of, in_step, tap_step):
    """Cut ``count`` outputs into segments of equal real-tap range ``tap_range(m) = (lo, hi)``."""
    segments = []
    m = 0
    while m < count:
        lo, hi = tap_range(m)
        n = 1
        while m + n < count and tap_range(m + n) == (lo, hi):
            n += 1
        ntaps = max(0, hi - lo)
        first = lo if ntaps else 0
        segments.append(AxisSegment(phase, out0 + m * step, step, n, phase_taps, first, ntaps,
                                    in_of(m, first) if ntaps else 0, in_step, tap_step))
        m += n
    return segments


def conv_axis(size, out, kernel, stride=1, pad=0, dilation=1):
    """Segments of a convolution along one axis (input ``size``, ``out`` outputs)."""
    def tap_range(m):
        base = m * stride - pad  # input read by tap 0; real taps: 0 <= base + k*d < size
        lo = max(0, -(base // dilation))
        hi = min(kernel, (size - 1 - base) // dilation + 1)
        return lo, max(lo, hi)

    return _runs(0, 0, 1, out, tuple(range(kernel)), tap_range,
                 lambda m, j: m * stride + j * dilation - pad, stride, dilation)


def phases(kernel, stride, pad, dilation=1):
    """``[(o0, taps)]`` of a transposed convolution: each phase's first output and its kernel
    taps in MAC order (increasing kernel index, so decreasing input index)."""
    return [(o0, tuple(k for k in range(kernel) if (o0 + pad - k * dilation) % stride == 0))
            for o0 in range(stride)]


def phase_tap_counts(kernel, stride, pad=0, dilation=1):
    """Taps of each phase along one axis (e.g. k=5, s=2: ``[3, 2]``)."""
    return [len(taps) for _, taps in phases(kernel, stride, pad, dilation)]


def convt_axis(size, out, kernel, stride=1, pad=0, dilation=1):
    """Segments of a transposed convolution along one axis (input ``size``, ``out`` outputs),
    phase by phase."""
    tap_step = -(dilation // math.gcd(stride, dilation))
    segments = []
    for phase, (o0, taps) in enumerate(phases(kernel, stride, pad, dilation)):
        if o0 >= out:
            continue
        count = (out - o0 + stride - 1) // stride
        # Input read by the phase's tap j at output m: i0 + m + j*tap_step.
        i0 = (o0 + pad - taps[0] * dilation) // stride if taps else 0

        def tap_range(m, i0=i0, n=len(taps)):  # noqa: B008 (binds this phase's values)
            # Real taps: 0 <= i0 + m + j*tap_step < size, with tap_step < 0.
            lo = max(0, -((size - 1 - i0 - m) // -tap_step))
            hi = min(n, (i0 + m) // -tap_step + 1)
            return lo, max(lo, hi)

        segments += _runs(phase, o0, stride, count, taps, tap_range,
                          lambda m, j, i0=i0: i0 + m + j * tap_step, 1, tap_step)
    return segments
