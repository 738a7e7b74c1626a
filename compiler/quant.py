"""int8 quantization: calibration, and the integer parameters of every IR op.

Every value is int8 with zero point 0 and a real step ``scale`` (``real = q * scale``), so a zero
activation is the integer 0: the sparse core skips it and padding is zero without arithmetic.
:func:`quantize` attaches to each node its ``scale`` and, in ``Node.q``, one of the records below;
their ``apply`` methods are the integer semantics that the golden interpreter
(:mod:`flexigan.sim.golden`) runs and that the hardware matches bit for bit. docs/numerics.md is
the contract in prose.

A value's step comes from its calibrated range, or, in a pre-quantized model, from the
model's QuantizeLinear (``graph.graph["scales"]``, :func:`needs_range`); a layer's weight steps
from its weights, or from the model's own (``weight_scale`` of the op), whose int8 codes are
then kept.

The integer arithmetic itself (host-side :func:`round_half_up`, device-side
:func:`rshift_round`, :func:`sat8`, :func:`requantize`) is the machine's, defined once in
:mod:`flexigan.hw.arch.numerics`.

============  =========================================================================
op            ``Node.q``
============  =========================================================================
Input         None
Conv, ConvT,  :class:`Compute`: int8 weights, int32 bias, per-output-channel
Dense         :class:`Requant`
Affine        :class:`Requant` with offset
Activation    :class:`Lut`
Add           :class:`Sum`
InstanceNorm  :class:`Norm`
Concat        tuple of (:class:`Requant` or None), one per input
Pad           the int8 pad value (constant mode) or None (reflect, edge)
other layout  None
============  =========================================================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from ..errors import FitError, ModelError
from ..hw.arch.numerics import (
    MAX_SHIFT,
    NORM_BETA_FRAC,
    NORM_MAX_COUNT,
    NORM_MAX_EPS,
    NORM_WEIGHT,
    norm_params,
    requantize,
    round_half_up,
    rshift_round,
    sat8,
)
from . import ir
from .evaluate import run_float
from .layout import to_onnx
from .onnx_import import load_onnx

__all__ = ["Requant", "Compute", "Lut", "Sum", "Norm", "requant", "sum_params", "calibrate",
           "quantize", "needs_range", "MAX_SHIFT", "ZERO_RANGE"]

#: Signed 16-bit multipliers; the most negative code is not used, so they are symmetric.
MULT_LIMIT = 1 << 15
#: Bias and offset words are int32.
INT32_LIMIT = 1 << 31
#: The range given to a value that is identically zero on the calibration data: its scale does
#: not matter for the data seen, and 1 keeps every ratio that involves it moderate.
ZERO_RANGE = 1.0


def _channels(p, ndim, channel_axis):
    """A per-channel parameter vector shaped to broadcast along ``channel_axis`` of ``ndim``."""
    return p.reshape((-1,) + (1,) * (ndim - channel_axis - 1))


@dataclass(frozen=True, eq=False)
class Requant:
    """Per-channel fixed-point rescaling ``y = sat8(rshift_round(acc * multiplier + offset,
    shift))``.

    ``multiplier`` (signed 16-bit), ``shift`` (0..47) and ``offset`` (int32) are int64 arrays of
    shape ``(C,)`` or ``(1,)`` (one value for all channels).
    """

    multiplier: np.ndarray
    shift: np.ndarray
    offset: np.ndarray

    def apply(self, acc, channel_axis=1):
        """Requantize the integer array ``acc`` (|acc| < 2**31) whose channels are along
        ``channel_axis``; returns int8."""
        acc = np.asarray(acc, dtype=np.int64)
        m, s, b = (_channels(p, acc.ndim, channel_axis)
                   for p in (self.multiplier, self.shift, self.offset))
        return requantize(acc, m, s, b)


@dataclass(frozen=True, eq=False)
class Compute:
    """Integer Conv, ConvTranspose or Dense: ``acc = sum(x * weight) + bias`` (int32), then
    ``requant.apply(acc)``. ``weight`` is int8 in the op's layout, in [-127, 127]; ``bias`` is an
    int64 array of int32 values, one per output channel."""

    weight: np.ndarray
    bias: np.ndarray
    requant: Requant


@dataclass(frozen=True, eq=False)
class Lut:
    """Activation look-up table: ``y = table[c][x + 128]``; ``table`` is int8 ``(C, 256)``
    (per-channel PReLU) or ``(1, 256)``."""

    table: np.ndarray

    def apply(self, x, channel_axis=1):
        """Look up the int8 array ``x`` whose channels are along ``channel_axis``."""
        index = x.astype(np.intp) + 128
        if self.table.shape[0] == 1:
            return self.table[0][index]
        rows = _channels(np.arange(self.table.shape[0]), x.ndim, channel_axis)
        return self.table[rows, index]


@dataclass(frozen=True, eq=False)
class Sum:
    """Element-wise sum of two int8 tensors of different scales, as the machine computes it (a
    two-tap depthwise convolution with no bias)::

        y = sat8(rshift_round((a * weight_a + b * weight_b) * multiplier, shift))

    ``weight_a``/``weight_b`` are int8 weights in [0, 127] (not both 0) whose ratio
    approximates the ratio of the input scales; ``multiplier`` (signed 16-bit) and ``shift``
    (0..47) the one shared rescaling. ``|a*weight_a + b*weight_b| <= 2 * 128 * 127 < 2**15``.
    """

    weight_a: int
    weight_b: int
    multiplier: int
    shift: int

    def apply(self, a, b):
        """The sum of the int8 arrays ``a`` and ``b``; returns int8."""
        acc = a.astype(np.int64) * self.weight_a + b.astype(np.int64) * self.weight_b
        return sat8(rshift_round(acc * self.multiplier, self.shift))


@dataclass(frozen=True, eq=False)
class Norm:
    """Integer instance normalization (see docs/numerics.md), as the machine does it.

    Per sample and channel ``c``, over its ``n`` spatial positions, the sums ``S1 = sum x``
    and ``S2 = sum x*x`` give the channel's PARAM entry
    ``(bias, multiplier, shift) = norm_params(S1, S2, n, eps, gain[c], gain_shift[c],
    beta[c])`` (:func:`flexigan.hw.arch.numerics.norm_params`), and then
    ``y = requantize(NORM_WEIGHT * x + bias, multiplier, shift)``. ``gain``/``gain_shift``
    are the 16-bit fixed-point ``scale[c] / s_out``, ``beta = round(bias[c] / scale[c] *
    2**NORM_BETA_FRAC)`` and ``eps = round(epsilon * n**2 / s_in**2)``.
    """

    gain: np.ndarray
    gain_shift: np.ndarray
    beta: np.ndarray
    eps: int

    def params(self, x):
        """``(bias, multiplier, shift)`` arrays of shape ``(N, C)`` for the int8 array ``x``
        of shape ``(N, C, ...)``."""
        xs = x.astype(np.int64).reshape(x.shape[0], x.shape[1], -1)
        n = xs.shape[2]
        s1, s2 = xs.sum(axis=2), (xs * xs).sum(axis=2)
        out = np.zeros((3, *s1.shape), dtype=np.int64)
        for (i, c), total in np.ndenumerate(s1):
            out[:, i, c] = norm_params(int(total), int(s2[i, c]), n, self.eps,
                                       int(self.gain[c]), int(self.gain_shift[c]),
                                       int(self.beta[c]))
        return out

    def apply(self, x):
        """Normalize the int8 array ``x`` of shape ``(N, C, ...)``; returns int8."""
        bias, multiplier, shift = (p.reshape(*p.shape, *[1] * (x.ndim - 2))
                                   for p in self.params(x))
        return requantize(NORM_WEIGHT * x.astype(np.int64) + bias, multiplier, shift)


def _shifts(ratio, offset=None):
    """Per element, the largest shift <= MAX_SHIFT with ``|round(ratio * 2**shift)| < 2**15``
    (and ``|round(offset * 2**shift)| < 2**31`` when offsets are given), or -1 if even shift 0
    does not fit."""
    candidates = np.arange(MAX_SHIFT + 1)
    scaled = np.ldexp(ratio[:, None], candidates)
    fits = np.abs(round_half_up(scaled)) < MULT_LIMIT
    if offset is not None:
        fits &= np.abs(round_half_up(np.ldexp(offset[:, None], candidates))) < INT32_LIMIT
    # |round(r * 2**s)| grows with s, so the shifts that fit are a prefix of the candidates.
    return fits.sum(axis=1) - 1


def _at_shift(values, shift, limit):
    """``round(values * 2**shift)`` clamped to ``(-limit, limit)``.

    The clamp only acts when even shift 0 does not fit: a ratio of 2**15 or more saturates every
    non-zero accumulator, and an offset of 2**31 output steps every output, either way; so the
    result is still exact.
    """
    return np.clip(round_half_up(np.ldexp(values, shift)), 1 - limit, limit - 1).astype(np.int64)


def requant(ratio, offset=None):
    """The :class:`Requant` closest to ``y = acc * ratio + offset`` (reals, per channel).

    The shift is the largest (<= 47) that keeps the multiplier within signed 16 bits and, with
    ``offset``, the offset within int32; a ratio too small for shift 47 gets multiplier 0.
    """
    ratio = np.atleast_1d(np.asarray(ratio, dtype=np.float64))
    real_offset = None if offset is None else np.broadcast_to(
        np.asarray(offset, dtype=np.float64), ratio.shape)
    shift = np.maximum(_shifts(ratio, real_offset), 0)
    offset_q = np.zeros(ratio.shape, dtype=np.int64) if real_offset is None else \
        _at_shift(real_offset, shift, INT32_LIMIT)
    return Requant(_at_shift(ratio, shift, MULT_LIMIT), shift.astype(np.int64), offset_q)


def calibrate(graph, feeds, model=None):
    """The max-abs range of every IR value on the calibration ``feeds`` (run in float).

    With ``model`` (the ONNX model ``graph`` was imported from: a path or a ``ModelProto``),
    the model runs in onnxruntime where it is installed and computes a tensor of every IR
    value's name (the values the importer adds, such as the 2-D view of a 1-D convolution,
    have none): in float32, a sample at a time, so a range differs from the float64 one in its
    last bits (a relative 3e-7 at most on the example networks; onnxruntime's Sigmoid and Tanh
    are approximations, but their outputs' scale is fixed), which moves a requantization
    multiplier or a bias that lies on a rounding boundary by one step (docs/user-guide.md,
    ``flexigan compile``, measured). Otherwise the IR runs in float64
    (:func:`~flexigan.compiler.evaluate.run_float`).

    Values that are identically zero get range ``ZERO_RANGE``. Raises :class:`ModelError` if a
    value is not finite (the float model overflows on the calibration data).
    """
    peaks = None if model is None else _onnxruntime_peaks(graph, feeds, model)
    if peaks is None:
        peaks = {name: _peak(value) for name, value in run_float(graph, feeds, keep=True).items()}
    ranges = {}
    for name, r in peaks.items():
        if not math.isfinite(r):
            raise ModelError(f"calibration: value {name!r} is not finite on the calibration "
                             "inputs")
        ranges[name] = r if r > 0 else ZERO_RANGE
    return ranges


def _peak(value):
    return float(np.max(np.abs(value))) if value.size else 0.0


def _onnxruntime_peaks(graph, feeds, model):
    """The max-abs of every IR value of ``graph`` in onnxruntime's run of ``model`` on
    ``feeds``; the inputs' from ``feeds`` themselves. None when onnxruntime is not installed or
    cannot run the model, or the model computes no tensor of some IR value's name or one of
    another shape."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    import onnx

    proto = model if isinstance(model, onnx.ModelProto) else load_onnx(model)
    inputs = list(graph.graph["inputs"])
    computed = {name for node in proto.graph.node for name in node.output}
    wanted = [name for name, _ in ir.topo_nodes(graph) if name not in inputs]
    if not computed.issuperset(wanted):
        return None
    proto = onnx.ModelProto.FromString(proto.SerializeToString())    # the caller's stays
    present = {o.name for o in proto.graph.output}
    proto.graph.output.extend(onnx.helper.make_empty_tensor_value_info(name)
                              for name in wanted if name not in present)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(proto.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
    except Exception:  # an op onnxruntime has no kernel for (QONNX's Quant): run the IR
        return None
    kinds = {i.name: i.type for i in session.get_inputs()}
    dtype = {"tensor(double)": np.float64, "tensor(float16)": np.float16}
    peaks = {name: _peak(feeds[name]) for name in inputs}
    peaks.update(dict.fromkeys(wanted, 0.0))
    for k in range(len(next(iter(feeds.values())))):
        sample = {name: to_onnx(graph, name, feeds[name][k:k + 1])
                  .astype(dtype.get(kinds[name], np.float32)) for name in inputs}
        for name, value in zip(wanted, session.run(wanted, sample)):
            if value.shape[1:] != tuple(ir.node(graph, name).shape):
                return None            # the tensor of that name is not the IR value
            peaks[name] = float(np.maximum(peaks[name], _peak(value)))   # NaN stays
    return peaks


def _weight_rows(op):
    """``op.weight`` as ``(Cout, fan_in)``: one row per output channel."""
    weight = op.weight
    if isinstance(op, ir.ConvTranspose):
        cin, cout_g = weight.shape[:2]
        w = weight.reshape(op.group, cin // op.group, cout_g, -1)
        return w.transpose(0, 2, 1, 3).reshape(op.group * cout_g, -1)
    return weight.reshape(weight.shape[0], -1)


def _weight_from_rows(op, rows):
    """The inverse of :func:`_weight_rows`."""
    if isinstance(op, ir.ConvTranspose):
        cin, cout_g = op.weight.shape[:2]
        w = rows.reshape(op.group, cout_g, cin // op.group, -1).transpose(0, 2, 1, 3)
        return w.reshape(op.weight.shape)
    return rows.reshape(op.weight.shape)


def _compute(name, n, ins, s_out):
    s_in = ins[0].scale
    rows = _weight_rows(n.op)
    peak = np.abs(rows).max(axis=1)
    # A pre-quantized layer's own steps (its weights are multiples of them), or the step
    # that maps each output channel's largest weight to 127.
    w_scale = np.where(peak > 0, peak / 127, 1.0) if n.op.weight_scale is None \
        else n.op.weight_scale
    w_q = np.clip(round_half_up(rows / w_scale[:, None]), -127, 127)
    bias_q = round_half_up(n.op.bias / (s_in * w_scale))
    # Worst case |sum x*w| is fan_in * 128 * 127 (x in [-128, 127], w in [-127, 127]); the
    # fan-in counts every kernel tap, which also bounds the zero-inserted (--no-reorder) lowering.
    worst = float(np.max(np.abs(bias_q))) + rows.shape[1] * 128 * 127
    if worst >= INT32_LIMIT:
        raise FitError(f"{name}: the int32 accumulator can overflow (|bias| + fan-in * 128 * 127 "
                       f"= {worst:.0f} >= 2**31); the bias is too large for the input's scale "
                       f"{s_in:.3g}")
    weight = _weight_from_rows(n.op, w_q).astype(np.int8)
    return Compute(weight, bias_q.astype(np.int64), requant(s_in * w_scale / s_out))


def _affine(name, n, ins, s_out):
    scale, shift = np.broadcast_arrays(n.op.scale, n.op.shift)
    return requant(scale * ins[0].scale / s_out, shift / s_out)


def _activation(name, n, ins, s_out):
    grid = np.arange(-128, 128, dtype=np.float64)[None, :] * ins[0].scale
    # (1, 256), or (C, 256) when PReLU's per-channel slope broadcasts against the grid.
    return Lut(sat8(round_half_up(n.op(grid, channel_axis=0) / s_out)))


#: Every pair of Add weights ``(w_a, w_b)`` in [0, 127]**2 but (0, 0), ordered by ``w_a``
#: then ``w_b``.
_ADD_WEIGHTS = np.stack(np.divmod(np.arange(1, 128 * 128), 128), axis=1).astype(np.float64)


def sum_params(ratio_a, ratio_b):
    """The :class:`Sum` closest to ``y = a * ratio_a + b * ratio_b`` (positive reals).

    Over every weight pair ``(w_a, w_b)`` in [0, 127]**2 but (0, 0): the least-squares gain
    ``g = (ratio_a*w_a + ratio_b*w_b) / (w_a**2 + w_b**2)``, its fixed-point ratio ``(M, s)``
    (:func:`requant`), and the effective ratios ``e = w * M / 2**s``; the pair whose
    ``|e_a - ratio_a| + |e_b - ratio_b|`` (the worst output error, in output steps per input
    step) is least, the first such pair in the order of ``(w_a, w_b)``.
    """
    ratios = np.array([ratio_a, ratio_b], dtype=np.float64)
    w = _ADD_WEIGHTS
    gain = (w @ ratios) / (w * w).sum(axis=1)
    r = requant(gain)
    effective = w * np.ldexp(r.multiplier.astype(np.float64), -r.shift)[:, None]
    best = int(np.argmin(np.abs(effective - ratios).sum(axis=1)))
    w_a, w_b = (int(v) for v in w[best])
    return Sum(w_a, w_b, int(r.multiplier[best]), int(r.shift[best]))


def _add(name, n, ins, s_out):
    return sum_params(ins[0].scale / s_out, ins[1].scale / s_out)


def _instance_norm(name, n, ins, s_out):
    s_in = ins[0].scale
    size = math.prod(n.shape[1:])
    if size > NORM_MAX_COUNT:
        raise FitError(f"{name}: InstanceNorm over {size:,} positions; the machine's sums hold "
                       f"at most {NORM_MAX_COUNT:,}")
    gain = requant(n.op.scale / s_out)
    gamma = np.where(n.op.scale == 0, np.inf, n.op.scale)
    beta = np.clip(round_half_up(np.ldexp(n.op.bias / gamma, NORM_BETA_FRAC)),
                   -INT32_LIMIT, INT32_LIMIT - 1).astype(np.int64)
    eps = int(min(round_half_up(n.op.epsilon * size ** 2 / s_in ** 2), NORM_MAX_EPS))
    return Norm(gain.multiplier, gain.shift, beta, eps)


def _concat(name, n, ins, s_out):
    return tuple(None if i.scale == s_out else requant(i.scale / s_out) for i in ins)


def _pad(name, n, ins, s_out):
    if n.op.mode != "constant":
        return None
    return int(sat8(round_half_up(n.op.value / s_out)))


_COMPUTED = {ir.Conv: _compute, ir.ConvTranspose: _compute, ir.Dense: _compute,
             ir.Affine: _affine, ir.Activation: _activation, ir.Add: _add,
             ir.InstanceNorm: _instance_norm}
_SAME_SCALE = (ir.Reshape, ir.Transpose, ir.Tile, ir.Pad, ir.Upsample, ir.DepthToSpace)


def _range(ranges, name):
    if name not in ranges:
        raise ValueError(f"ranges has no entry for value {name!r}")
    r = ranges[name]
    if not (math.isfinite(r) and r > 0):
        raise ValueError(f"ranges[{name!r}] must be a positive finite number, not {r!r}")
    return r


#: The output steps of the activations whose output range is known.
_FIXED_SCALE = {"tanh": 1.0 / 127, "sigmoid": 1.0 / 127}


def _calibrated(name, n, given):
    """Whether value ``name``'s step comes from its calibrated range: not inherited (layout ops,
    Concat), not given by a pre-quantized model (``given``), not fixed (Tanh, Sigmoid)."""
    return not isinstance(n.op, (*_SAME_SCALE, ir.Concat)) and name not in given and \
        not (isinstance(n.op, ir.Activation) and n.op.kind in _FIXED_SCALE)


def needs_range(graph):
    """The values of ``graph`` whose step comes from a calibrated range (:func:`quantize`); for
    a pre-quantized model whose QuantizeLinear nodes give every step, none."""
    given = graph.graph.get("scales", {})
    return [name for name, n in ir.topo_nodes(graph) if _calibrated(name, n, given)]


def _scale(name, n, ins, ranges, given):
    """The output step of value ``name``."""
    if isinstance(n.op, _SAME_SCALE):
        return ins[0].scale
    if isinstance(n.op, ir.Concat):
        return max(i.scale for i in ins)
    if not _calibrated(name, n, given):
        return given[name] if name in given else _FIXED_SCALE[n.op.kind]
    return _range(ranges, name) / 127


def quantize(graph, ranges):
    """A quantized copy of ``graph``: every node gets ``scale`` and integer parameters ``q``.

    Parameters
    ----------
    graph : networkx.DiGraph
        A float IR graph (not changed).
    ranges : dict of str to float
        Max-abs range of each value (see :func:`calibrate`); values whose scale is inherited
        (layout ops, Concat), known (Tanh, Sigmoid) or given by a pre-quantized model
        (``graph.graph["scales"]``, see :func:`needs_range`) need none.

    Raises
    ------
    FitError
        If a layer's int32 accumulator could overflow.
    """
    out = graph.copy()
    given = graph.graph.get("scales", {})
    for name, n in ir.topo_nodes(graph):
        ins = [ir.node(out, i) for i in n.inputs]
        scale = _scale(name, n, ins, ranges, given)
        if isinstance(n.op, ir.Input):
            q = None
        elif isinstance(n.op, ir.Concat):
            q = _concat(name, n, ins, scale)
        elif isinstance(n.op, ir.Pad):
            q = _pad(name, n, ins, scale)
        elif isinstance(n.op, _SAME_SCALE):
            q = None
        else:
            q = _COMPUTED[type(n.op)](name, n, ins, scale)
        out.nodes[name]["node"] = replace(n, scale=float(scale), q=q)
    return out
