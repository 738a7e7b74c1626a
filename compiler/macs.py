"""Multiply-accumulate counts: what a layer needs, and what each kind of engine spends on it.

The counting rules, used by every report:

``macs_useful``
    Multiplies whose operands are both real: no inserted zero, no padding.
``macs_zero_insertion``
    What a dense engine spends on the zero-inserted, padded input of a transposed convolution
    (the conventional baseline); for other layers, the dense count including padding.
``macs_phase``
    What a dense engine spends on the zero-free phase sub-convolutions of a transposed
    convolution, border padding included; for other layers, the dense count including padding.
    A transposed convolution of a 1x1 input is a Gemm (each output pixel meets exactly one
    tap), so it has no borders and ``macs_phase == macs_useful``.

All counts are per sample, and separable: along each spatial axis we count (output, tap)
pairs, and the 2-D count is the product of the two axes times the channel factor.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import ir

__all__ = ["Macs", "layer_macs", "graph_macs", "total", "millions"]


@dataclass(frozen=True)
class Macs:
    """MAC counts of one layer (or a sum of layers)."""

    useful: int = 0
    phase: int = 0
    zero_insertion: int = 0

    def __add__(self, other):
        return Macs(self.useful + other.useful, self.phase + other.phase,
                    self.zero_insertion + other.zero_insertion)


def _conv_axis(size, out, kernel, stride, pad, dilation):
    """(useful, dense) (output, tap) pairs of a convolution along one axis."""
    useful = sum(1 for o in range(out) for k in range(kernel)
                 if 0 <= o * stride + k * dilation - pad < size)
    return useful, out * kernel


def _convt_axis(size, out, kernel, stride, pad, dilation):
    """(useful, phase, zero_insertion) (output, tap) pairs of a transposed conv along one axis.

    Output ``o`` meets tap ``k`` at input ``i = (o + pad - k * dilation) / stride``, which is a
    real input only when the division is exact and ``0 <= i < size``.
    """
    useful = phase = 0
    for o in range(out):
        taps = [k for k in range(kernel) if (o + pad - k * dilation) % stride == 0]
        phase += len(taps)
        useful += sum(1 for k in taps if 0 <= (o + pad - k * dilation) // stride < size)
    return useful, phase, out * kernel


def layer_macs(op, in_shape, out_shape):
    """:class:`Macs` of one IR op with per-sample input and output shapes (0 for non-MAC ops)."""
    if isinstance(op, ir.Dense):
        n = op.weight.size
        return Macs(n, n, n)
    if isinstance(op, ir.Conv):
        cout, cin_g = op.weight.shape[:2]
        axes = [_conv_axis(in_shape[1 + a], out_shape[1 + a], op.weight.shape[2 + a],
                           op.strides[a], op.pads[a], op.dilations[a]) for a in range(2)]
        channels = cout * cin_g
        useful = channels * axes[0][0] * axes[1][0]
        dense = channels * axes[0][1] * axes[1][1]
        return Macs(useful, dense, dense)
    if isinstance(op, ir.ConvTranspose):
        cin, cout_g = op.weight.shape[:2]
        axes = [_convt_axis(in_shape[1 + a], out_shape[1 + a], op.weight.shape[2 + a],
                            op.strides[a], op.pads[a], op.dilations[a]) for a in range(2)]
        channels = cin * cout_g
        useful = channels * axes[0][0] * axes[1][0]
        zero_insertion = channels * axes[0][2] * axes[1][2]
        phase = useful if in_shape[1:] == (1, 1) else channels * axes[0][1] * axes[1][1]
        return Macs(useful, phase, zero_insertion)
    return Macs()


def graph_macs(graph):
    """``{name: Macs}`` for every MAC layer of an IR graph, in topological order."""
    out = {}
    for name, n in ir.topo_nodes(graph):
        if isinstance(n.op, ir.COMPUTE_OPS):
            out[name] = layer_macs(n.op, ir.node(graph, n.inputs[0]).shape, n.shape)
    return out


def total(macs):
    """Sum of a ``{name: Macs}`` mapping."""
    return sum(macs.values(), Macs())


def millions(count):
    """A MAC count in millions, for reports."""
    return round(count / 1e6, 3) if count else 0.0
