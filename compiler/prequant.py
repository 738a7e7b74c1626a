"""Pre-quantized models: which of their quantizations the machine represents, and their values.

The machine's values are int8 with zero point 0 and one real step per tensor; its weights int8
in [-127, 127] with one step per output channel (:mod:`flexigan.compiler.quant`). A model
quantized before export says how it quantizes each tensor, in one of two forms:

* ONNX's QuantizeLinear/DequantizeLinear pairs (QDQ: onnxruntime's ``quantize_static``,
  PyTorch, Brevitas): codes of a type (the zero point's), a zero point, steps (one, or one per
  index along ``axis``);
* QONNX's ``Quant`` (FINN, Brevitas), one node that quantizes and dequantizes,
  ``(clip(round(x / scale + zeropt), lo, hi) - zeropt) * scale``, the codes' range ``[lo, hi]``
  given by ``bitwidth``, ``signed`` and ``narrow``.

Import (:mod:`flexigan.compiler.onnx_import`) gives a run-time tensor whose quantization the
machine represents that tensor's step, and keeps the codes of quantized weights with their
steps (``weight_scale`` of the layer). The functions here are the rules and the arithmetic,
on arrays: each ``*_problem`` says why a quantization is not the machine's (one line of the
error that names every such tensor), or None.
"""

from __future__ import annotations

import numpy as np
import onnx

__all__ = ["QONNX_DOMAINS", "problem", "codes_dtype", "lowest", "qonnx_range", "qonnx_problem",
           "dequantize_weights", "quantize", "qonnx_weights", "per_output_channel"]

#: The domains of QONNX's ``Quant``.
QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general")
#: Why weight codes that reach -128 are not the machine's.
_CODE_128 = "weight code -128 (the machine's weights are in [-127, 127])"


def problem(codes, zero_point, steps, per_tensor):
    """Why a quantization with codes of type ``codes``, ``zero_point`` and ``steps`` is not the
    machine's (int8, zero point 0, positive steps, one step per tensor if ``per_tensor``), or
    None."""
    if np.dtype(codes) != np.int8:
        return f"{np.dtype(codes).name} codes, not int8"
    if zero_point is not None and np.any(np.asarray(zero_point) != 0):
        points = np.unique(zero_point)
        return "zero point " + ", ".join(str(z) for z in points[:3]) + \
            (", ..." if points.size > 3 else "")
    if np.any(np.asarray(steps) <= 0):
        return "steps that are not positive"
    if per_tensor and np.asarray(steps).size != 1:
        return f"{np.asarray(steps).size} steps along an axis, not one per tensor"
    return None


def codes_dtype(zero_point, output_dtype=0):
    """The type of QuantizeLinear's codes: its zero point's, its ``output_dtype``, or uint8 (the
    ONNX default)."""
    if zero_point is not None:
        return np.asarray(zero_point).dtype
    if output_dtype:
        return onnx.helper.tensor_dtype_to_np_dtype(output_dtype)
    return np.dtype(np.uint8)


def lowest(low, zero_point):
    """The lowest real value of a quantization, in steps: its lowest code ``low`` less its zero
    point (0 and above: the quantization clips the negatives, a ReLU)."""
    return low - (0 if zero_point is None else float(np.min(zero_point)))


def qonnx_range(bitwidth, signed, narrow):
    """The lowest and highest code of a QONNX ``Quant``."""
    bits = int(np.asarray(bitwidth).reshape(-1)[0])
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return low + (1 if narrow and signed else 0), high - (1 if narrow and not signed else 0)


def qonnx_problem(bitwidth, signed, narrow, rounding_mode, zero_point, steps, weights):
    """Why a QONNX quantization is not the machine's, or None (``weights``: of constant
    weights, where a narrow range [-127, 127] is the machine's own)."""
    low, high = qonnx_range(bitwidth, signed, narrow)
    if (low, high) not in (((-127, 127), (-128, 127)) if weights else ((-128, 127),)):
        return f"codes in [{low}, {high}], not int8"
    if rounding_mode != "ROUND":
        return f"rounding mode {rounding_mode}"
    return problem(np.int8, zero_point, steps, per_tensor=not weights)


def dequantize_weights(codes, steps, zero_point, axis):
    """``(values, steps, why)`` of a DequantizeLinear of constant ``codes`` (``steps`` and
    ``zero_point`` shaped to broadcast along ``axis``): their real values, and the steps to keep
    with them (flat) or why the machine cannot. int32 codes (a bias) need no steps: the bias is
    requantized exactly from its real values."""
    offset = 0 if zero_point is None else np.asarray(zero_point, np.float64).reshape(
        steps.shape)
    values = (codes.astype(np.float64) - offset) * steps
    if codes.dtype == np.int32:
        return values, None, None
    why = problem(codes.dtype, zero_point, steps, per_tensor=False)
    if why is None and codes.size and codes.min() == -128:
        why = _CODE_128
    return values, None if why else steps.reshape(-1), why


def quantize(values, steps, zero_point, dtype):
    """The codes of a QuantizeLinear of constant real ``values`` (weights stored in float):
    ONNX's rounding half to even and saturation to ``dtype``."""
    offset = 0 if zero_point is None else np.asarray(zero_point, np.float64).reshape(
        steps.shape)
    info = np.iinfo(dtype)
    return np.clip(np.rint(values / steps) + offset, info.min, info.max).astype(dtype)


def qonnx_weights(values, steps, zero_point, bitwidth, signed, narrow, rounding_mode):
    """``(values, steps, axis, why)`` of a QONNX ``Quant`` of constant weights: their quantized
    real values, and the steps (flat) with the axis they run along, or why the machine cannot
    keep them."""
    low, high = qonnx_range(bitwidth, signed, narrow)
    codes = np.clip(np.rint(values / steps + zero_point), low, high)
    why = qonnx_problem(bitwidth, signed, narrow, rounding_mode, zero_point, steps, True)
    if why is None and codes.size and codes.min() == -128:
        why = _CODE_128
    axes = [values.ndim - steps.ndim + a for a, d in enumerate(steps.shape) if d > 1]
    if why is None and len(axes) > 1:
        why = f"steps along axes {axes} of the weights"
    return (codes - zero_point) * steps, None if why else steps.reshape(-1), \
        axes[0] if axes else 0, why


def per_output_channel(steps, steps_axis, axis, channels, repeat=1):
    """``(steps, why)``: the weight ``steps`` that run along ``steps_axis`` as one per output
    channel, whose axis is ``axis``: ``channels`` of them (one group's ``repeat`` times), or
    why they are not."""
    if steps.size == 1:
        return np.full(channels, steps[0]), None
    if steps_axis != axis or steps.size * repeat != channels:
        return None, f"steps along axis {steps_axis} of the weights, not their output channels"
    return np.tile(steps, repeat), None
