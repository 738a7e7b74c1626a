"""ONNX import: load, check, convert opset, infer shapes, fold constants, legalize into the IR.

The entry point is :func:`import_model`. Every user-facing failure raises a
:class:`~flexigan.errors.FlexiganError` subclass with a one-line message; all unsupported nodes
of a model are collected and reported together by :class:`~flexigan.errors.UnsupportedError`.

Legalization is one small function per ONNX op, registered with :func:`_op`. Each receives the
builder, the node and its inputs — tensor names (``str``) for run-time values, ``numpy`` arrays
for constants — followed by the node's attributes as keyword arguments named and defaulted as in
the ONNX specification.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference, version_converter
from onnx.reference import ReferenceEvaluator

from ..errors import ModelError, UnsupportedError
from . import ir, layout, limits, prequant

__all__ = ["import_model", "load_onnx", "SUPPORTED_OPS", "QUANTIZATION_OPS", "OPSET_RANGE"]

#: Default-domain opsets the op handlers understand; others are converted to ``OPSET_TARGET``.
OPSET_RANGE = (11, onnx.defs.onnx_opset_version())
OPSET_TARGET = 17

_HANDLERS = {}


def _op(*names):
    def register(fn):
        for name in names:
            _HANDLERS[name] = fn
        return fn
    return register


class Unsupported(Exception):
    """Raised by an op handler for a variant flexigan cannot run; carries the reason."""


# --------------------------------------------------------------------------------------------
# Loading


def load_onnx(path):
    """Read and check an ONNX model; refuse external data outside the model's folder.

    Raises
    ------
    ModelError
        If the file is missing, not ONNX, truncated, fails ``onnx.checker`` or points at
        external data outside its own folder.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror}") from None
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError, and others on garbage
        raise ModelError(f"{path} is not a valid ONNX file ({type(exc).__name__}: {exc})") \
            from None
    if not model.graph.node and not model.graph.output:
        raise ModelError(f"{path} is not a valid ONNX file (empty or truncated graph)")
    base = path.resolve().parent
    for tensor in _external_tensors(model):
        location = {e.key: e.value for e in tensor.external_data}.get("location", "")
        target = (base / location).resolve()
        if not location:
            raise ModelError(f"{path}: tensor {tensor.name!r} is marked external but names no "
                             "file")
        if os.path.commonpath([target, base]) != str(base):
            raise ModelError(f"{path}: tensor {tensor.name!r} points at external data "
                             f"{location!r} outside the model's folder; refused")
        if not target.is_file():
            raise ModelError(f"{path}: external data {location!r} of {tensor.name!r} is missing")
    _check_order(path, model.graph)
    try:
        onnx.load_external_data_for_model(model, str(base))
    except Exception as exc:
        raise ModelError(f"{path}: cannot read its external data: {_one_line(exc)}") from None
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelError(f"{path} fails the ONNX checker: {_one_line(exc)}") from None
    return model


def _one_line(exc, limit=300):
    """The message of ``exc`` on one line (onnx's span several, with node listings)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _check_order(path, graph):
    """Refuse a graph whose nodes read a tensor before a node computes it: a cycle, named by
    its nodes, or nodes out of topological order."""
    import networkx as nx

    made = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    label = [n.name or n.output[0] for n in graph.node]
    late = [(i, made[x]) for i, n in enumerate(graph.node) for x in n.input
            if x in made and made[x] >= i]
    if not late:
        return
    edges = nx.DiGraph([(made[x], i) for i, n in enumerate(graph.node) for x in n.input
                        if x in made])
    try:
        cycle = [label[a] for a, _ in nx.find_cycle(edges)]
        raise ModelError(f"{path}: the graph has a cycle ({' -> '.join(cycle + cycle[:1])}); "
                         "ONNX graphs must be acyclic")
    except nx.NetworkXNoCycle:
        reader, writer = late[0]
        raise ModelError(f"{path}: node {label[reader]!r} reads a tensor that node "
                         f"{label[writer]!r} computes after it; the nodes must be in "
                         "topological order") from None


def _external_tensors(model):
    """Every tensor of ``model`` that keeps its data in a file: initializers (sparse ones
    too), tensors in node attributes, in subgraphs (If, Loop, Scan bodies) at any depth, and in
    the model's functions."""
    def tensors_of_graph(graph):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield from (sparse.values, sparse.indices)
        for n in graph.node:
            yield from tensors_of_node(n)

    def tensors_of_node(n):
        for attr in n.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            for sparse in (*([attr.sparse_tensor] if attr.HasField("sparse_tensor") else []),
                           *attr.sparse_tensors):
                yield from (sparse.values, sparse.indices)
            for graph in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                yield from tensors_of_graph(graph)

    tensors = [*tensors_of_graph(model.graph),
               *(t for function in model.functions for n in function.node
                 for t in tensors_of_node(n))]
    return [t for t in tensors
            if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data)]


def _opset(model):
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _prepare(model, batch):
    """Convert the opset if needed, fix the batch axis and infer shapes."""
    version = _opset(model)
    if version > OPSET_RANGE[1]:
        raise ModelError(f"the model uses opset {version}, newer than this onnx "
                         f"({onnx.__version__}) knows (up to {OPSET_RANGE[1]}); export it at an "
                         f"opset from {OPSET_RANGE[0]} to {OPSET_RANGE[1]}, or upgrade onnx")
    if version < OPSET_RANGE[0]:
        try:
            model = version_converter.convert_version(model, OPSET_TARGET)
        except Exception as exc:
            # onnx reports a C++ assertion: its source line, then "failed: " and the reason.
            reason = _one_line(exc, 10_000).rpartition("failed: ")[2][:200]
            raise ModelError(f"onnx's version converter cannot bring opset {version} to "
                             f"{OPSET_TARGET} ({reason}); export the model at an opset from "
                             f"{OPSET_RANGE[0]} to {OPSET_RANGE[1]}") from None
    inits = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name in inits:
            continue
        dims = value.type.tensor_type.shape.dim
        for axis, dim in enumerate(dims):
            if axis == 0 and (dim.dim_param or dim.dim_value <= 0):   # unknown batch
                dim.Clear()
                dim.dim_value = batch
            elif dim.dim_param or not dim.HasField("dim_value"):
                raise ModelError(f"input {value.name!r} has a dynamic size at axis {axis}: "
                                 "only the batch axis (0) may be dynamic")
            elif dim.dim_value <= 0:
                raise ModelError(f"input {value.name!r} has size {dim.dim_value} at axis "
                                 f"{axis}: every size must be positive")
    try:
        model = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise ModelError(f"shape inference failed: {_one_line(exc)}") from None
    _check_sizes(model)
    return model


def _check_sizes(model):
    """Refuse a tensor ONNX's shape inference makes too large for the host, before constant
    folding or legalization allocates it (:mod:`flexigan.compiler.limits`)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    for name, shape in _static_shapes(model).items():
        node = producer.get(name)
        limits.check_value(node.name or name if node else name,
                           node.op_type if node else "input", shape)


def _static_shapes(model):
    shapes = {}
    for value in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        t = value.type.tensor_type
        if t.HasField("shape") and all(d.HasField("dim_value") for d in t.shape.dim):
            shapes[value.name] = tuple(d.dim_value for d in t.shape.dim)
    return shapes


# --------------------------------------------------------------------------------------------
# Constant folding

_NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                     "Multinomial", "Bernoulli"}


def _fold(model, node, consts, shapes):
    """The constant outputs of ``node`` if it can be evaluated at compile time, else None."""
    if node.op_type == "Constant":
        return _evaluate(model, node, [])
    if node.op_type in ("Shape", "Size") and node.input[0] in shapes:
        full = np.array(shapes[node.input[0]], dtype=np.int64)
        if node.op_type == "Size":
            return [np.array(full.prod(), dtype=np.int64)]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        return [full[attrs.get("start", 0):attrs.get("end", None)]]
    if node.op_type in _NONDETERMINISTIC or node.op_type in ("Identity", "Dropout"):
        return None
    args = [n for n in node.input if n]
    if args and all(a in consts for a in args):
        return _evaluate(model, node, [consts.get(n) if n else None for n in node.input])
    return None


def _evaluate(model, node, values):
    names = [n for n in node.input if n]
    graph = onnx.helper.make_graph(
        [node], "fold",
        [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(v.dtype),
                                            v.shape) for n, v in zip(node.input, values) if n],
        [onnx.helper.make_empty_tensor_value_info(o) for o in node.output if o])
    ref = ReferenceEvaluator(onnx.helper.make_model(graph, opset_imports=model.opset_import))
    return ref.run(None, {n: v for n, v in zip(node.input, values) if n and n in names})


# --------------------------------------------------------------------------------------------
# Legalization


class _Builder:
    """Emits IR nodes for the ONNX nodes being legalized and tracks aliases of tensor names."""

    def __init__(self, graph, batch, requantize=False):
        self.graph = graph
        self.batch = batch
        self.alias = {}
        self.requantize = requantize
        #: IR value -> the step its QuantizeLinear gives it (a pre-quantized model).
        self.scales = {}
        #: ONNX name of a dequantized constant -> (steps, axis, rank) of its quantization.
        self.weight_scales = {}
        #: (tensor, reason) of each quantization the machine cannot represent.
        self.unrepresentable = []

    def cannot_represent(self, tensor, reason):
        """Note a pre-quantized tensor whose quantization the machine cannot represent; with
        ``requantize`` it is calibrated instead, and nothing is noted."""
        if not self.requantize:
            self.unrepresentable.append((tensor, reason))

    def name(self, onnx_name):
        return self.alias.get(onnx_name, onnx_name)

    def shape(self, name):
        return ir.node(self.graph, name).shape

    def emit(self, name, op, inputs):
        """Add the IR value ``name``; a :class:`ModelError` when it is too large for the host
        (:func:`~flexigan.compiler.limits.check_layer`), before anything is allocated."""
        ir.add_node(self.graph, name, op, inputs)
        limits.check_layer(self.graph, name)
        return name


def import_model(path_or_model, batch=None, requantize=False):
    """Import an ONNX model into the IR.

    Parameters
    ----------
    path_or_model : str, Path or onnx.ModelProto
        The model file, or an already loaded model.
    batch : int, optional
        Batch size to assume for a dynamic batch axis while folding shape computations (the IR
        itself is per sample). Defaults to the model's static batch, or 1.
    requantize : bool
        For a pre-quantized model (QuantizeLinear/DequantizeLinear pairs): calibrate the
        tensors whose quantization the machine cannot represent (a zero point other than 0,
        another type than int8, steps per channel of an activation) instead of refusing them.

    Returns
    -------
    networkx.DiGraph
        The verified IR, with ``graph.graph["onnx_outputs"]`` giving the ONNX name of each
        output, ``graph.graph["opset"]`` the opset the model was read at,
        ``graph.graph["scales"]`` the steps a pre-quantized model gives its values (see
        :func:`~flexigan.compiler.quant.quantize`) and ``graph.graph["layouts"]`` the layout
        of its boundary (:mod:`flexigan.compiler.layout`).

    Raises
    ------
    ModelError
        For a pre-quantized model whose quantization the machine cannot represent (without
        ``requantize``), naming every such tensor.
    """
    model = path_or_model if isinstance(path_or_model, onnx.ModelProto) \
        else load_onnx(path_or_model)
    if batch is None:
        batch = _static_batch(model)
    model = _prepare(model, batch)
    shapes = _static_shapes(model)
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    graph_inputs = [v for v in model.graph.input if v.name not in consts]
    graph = ir.new_graph(inputs=[v.name for v in graph_inputs])
    build = _Builder(graph, batch, requantize)
    problems = []
    broken = set()  # tensors that depend on an unsupported node
    for value in graph_inputs:
        _import_input(graph, value, shapes, problems, broken)
    for onnx_node in model.graph.node:
        _import_node(model, onnx_node, build, consts, shapes, problems, broken)
    if problems:
        raise UnsupportedError(problems)
    if build.unrepresentable:
        listed = "; ".join(f"{t} ({why})" for t, why in build.unrepresentable)
        raise ModelError(f"{len(build.unrepresentable)} pre-quantized tensor(s) the machine "
                         f"cannot represent (int8, zero point 0, one step per activation): "
                         f"{listed}; compile with --requantize to calibrate them instead")
    _import_outputs(model, graph, build, consts, shapes)
    _prune(graph)
    graph.graph["scales"] = {k: v for k, v in build.scales.items() if k in graph}
    return layout.fold_transposes(ir.verify(graph))


def _import_input(graph, value, shapes, problems, broken):
    """The IR Input of graph input ``value``, or its problem (and the name marked broken)."""
    if not value.type.HasField("tensor_type") or value.name not in shapes:
        problems.append((value.name, "input", "only tensors of static shape (but for the "
                         "batch axis) are supported"))
        broken.add(value.name)
        return
    kind = value.type.tensor_type.elem_type
    if kind not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                    onnx.TensorProto.FLOAT16):
        problems.append((value.name, "input", f"{onnx.TensorProto.DataType.Name(kind)} "
                         "tensors are not supported (float inputs only)"))
        broken.add(value.name)
    ir.add_node(graph, value.name, ir.Input(), (), shapes[value.name][1:])


def _import_node(model, onnx_node, build, consts, shapes, problems, broken):
    """Fold ``onnx_node`` into ``consts`` or build its IR nodes; a node that cannot be
    imported adds its problem and marks its outputs broken."""
    label = onnx_node.name or onnx_node.output[0]
    if onnx_node.op_type in _FOLD_QUANTIZATION and all(i in consts for i in onnx_node.input
                                                       if i) and \
            onnx_node.domain in ("", "ai.onnx", *prequant.QONNX_DOMAINS):
        consts[onnx_node.output[0]] = _FOLD_QUANTIZATION[onnx_node.op_type](build, onnx_node,
                                                                            consts)
        return
    try:
        folded = _fold(model, onnx_node, consts, shapes)
    except Exception as exc:
        problems.append((label, onnx_node.op_type, f"constant folding failed: {exc}"))
        broken.update(onnx_node.output)
        return
    if folded is not None:
        consts.update(zip(onnx_node.output, folded))
        return
    handler = _HANDLERS.get(onnx_node.op_type) if onnx_node.domain in ("", "ai.onnx") \
        else _QONNX_HANDLERS.get(onnx_node.op_type) if onnx_node.domain in prequant.QONNX_DOMAINS \
        else None
    if handler is None:
        problems.append((label, onnx_node.op_type, "operator not supported"))
        broken.update(onnx_node.output)
        return
    if any(i in broken for i in onnx_node.input):
        # A supported op after an unsupported one cannot be checked (its operand has no
        # IR value), but unsupported ops further on are still reported.
        broken.update(onnx_node.output)
        return
    args = [consts[i] if i in consts else (build.name(i) if i else None)
            for i in onnx_node.input]
    attrs = {a.name: _attr(a) for a in onnx_node.attribute}
    try:
        handler(build, onnx_node, *args, **attrs)
    except Unsupported as exc:
        problems.append((label, onnx_node.op_type, str(exc)))
        broken.update(onnx_node.output)


def _import_outputs(model, graph, build, consts, shapes):
    """The graph's outputs (IR names, their ONNX names) and opset, checked against ONNX's
    shapes."""
    outputs = []
    codes = {n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    for value in model.graph.output:
        if value.name in consts:
            raise ModelError(f"output {value.name!r} is a constant; nothing to accelerate")
        if value.name in codes:
            raise ModelError(f"output {value.name!r} is the integer codes of a QuantizeLinear; "
                             "flexigan's outputs are real values (end the model with its "
                             "DequantizeLinear)")
        outputs.append(build.name(value.name))
        if value.name in shapes and shapes[value.name][1:] != build.shape(outputs[-1]):
            raise ModelError(f"output {value.name!r}: IR shape {build.shape(outputs[-1])} "
                             f"disagrees with ONNX {shapes[value.name][1:]}")
    graph.graph["outputs"] = outputs
    graph.graph["onnx_outputs"] = [v.name for v in model.graph.output]
    graph.graph["opset"] = _opset(model)


def _static_batch(model):
    inits = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name not in inits:
            dims = value.type.tensor_type.shape.dim
            if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
                return dims[0].dim_value
    return 1


def _prune(graph):
    """Drop values that no output depends on (e.g. BatchNorm's training outputs)."""
    import networkx as nx

    keep = set(graph.graph["outputs"])
    for out in graph.graph["outputs"]:
        keep |= nx.ancestors(graph, out)
    keep |= set(graph.graph["inputs"])
    graph.remove_nodes_from([n for n in list(graph.nodes) if n not in keep])


def _attr(attribute):
    value = onnx.helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list):
        return tuple(v.decode() if isinstance(v, bytes) else v for v in value)
    return value


def _tensor(x, what):
    if not isinstance(x, str):
        raise Unsupported(f"{what} must be a run-time tensor, not a constant")
    return x


def _const(x, what):
    if isinstance(x, str):
        raise Unsupported(f"{what} must be a constant (initializer), not a run-time tensor")
    return np.asarray(x, dtype=np.float64)


def _spatial(build, x, what):
    shape = build.shape(x)
    if len(shape) not in (2, 3):
        raise Unsupported(f"{what}: only 1-D and 2-D are supported (input has "
                          f"{len(shape) - 1} spatial axes)")
    return len(shape) == 2


def _as_2d(build, node, x):
    """View a 1-D (C, L) input as 2-D (C, 1, L)."""
    c, length = build.shape(x)
    return build.emit(f"{node.output[0]}/as2d", ir.Reshape((c, 1, length)), [x])


def _pad4(pads, one_d):
    """ONNX pads (begin..., end...) as (top, left, bottom, right)."""
    pads = tuple(int(p) for p in pads)
    if one_d:
        return (0, pads[0], 0, pads[1])
    return (pads[0], pads[1], pads[2], pads[3])


def _auto_pads(auto_pad, size, kernel, stride, dilation):
    """Explicit (begin, end) pads for a convolution's auto_pad along one axis."""
    if auto_pad == "VALID":
        return 0, 0
    out = -(-size // stride)
    total = max(0, (out - 1) * stride + (kernel - 1) * dilation + 1 - size)
    small, large = total // 2, total - total // 2
    return (small, large) if auto_pad == "SAME_UPPER" else (large, small)


def _conv_geometry(build, x, weight, one_d, auto_pad, dilations, kernel_shape, pads, strides):
    n_spatial = 1 if one_d else 2
    kernel = tuple(weight.shape[2:])
    if kernel_shape and tuple(kernel_shape) != kernel:
        raise Unsupported(f"kernel_shape {kernel_shape} disagrees with weight shape {kernel}")
    strides = tuple(strides or (1,) * n_spatial)
    dilations = tuple(dilations or (1,) * n_spatial)
    if one_d:
        kernel, strides, dilations = (1, *kernel), (1, *strides), (1, *dilations)
    return kernel, strides, dilations


def _finish_1d(build, node, y, one_d):
    if not one_d:
        return y
    c, _, length = build.shape(y)
    return build.emit(node.output[0], ir.Reshape((c, length)), [y])


@_op("Conv")
def _conv(build, node, x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1,
          kernel_shape=None, pads=None, strides=None):
    x = _tensor(x, "Conv input X")
    w = _const(w, "Conv weight W")
    one_d = _spatial(build, x, "Conv")
    if w.ndim != (3 if one_d else 4):
        raise Unsupported(f"weight rank {w.ndim} does not match the input")
    bias = np.zeros(w.shape[0]) if b is None else _const(b, "Conv bias B")
    kernel, strides, dilations = _conv_geometry(build, x, w, one_d, auto_pad, dilations,
                                                kernel_shape, pads, strides)
    src = _as_2d(build, node, x) if one_d else x
    w4 = w[:, :, None, :] if one_d else w
    _, h, wd = build.shape(src)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER", "VALID"):
        ph = _auto_pads(auto_pad, h, kernel[0], strides[0], dilations[0])
        pw = _auto_pads(auto_pad, wd, kernel[1], strides[1], dilations[1])
        pad4 = (ph[0], pw[0], ph[1], pw[1])
    else:
        pad4 = _pad4(pads or (0,) * (2 if one_d else 4), one_d)
    if build.shape(src)[0] != w4.shape[1] * group:
        raise Unsupported(f"{build.shape(src)[0]} input channels do not match weight "
                          f"{w.shape} with group={group}")
    out = f"{node.output[0]}/2d" if one_d else node.output[0]
    steps = _weight_scale(build, node.input[1], 0, w.shape[0])
    y = build.emit(out, ir.Conv(w4, bias, strides, pad4, dilations, int(group), steps), [src])
    _finish_1d(build, node, y, one_d)


@_op("ConvTranspose")
def _conv_transpose(build, node, x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1,
                    kernel_shape=None, output_padding=None, output_shape=None, pads=None,
                    strides=None):
    x = _tensor(x, "ConvTranspose input X")
    w = _const(w, "ConvTranspose weight W")
    one_d = _spatial(build, x, "ConvTranspose")
    if w.ndim != (3 if one_d else 4):
        raise Unsupported(f"weight rank {w.ndim} does not match the input")
    bias = np.zeros(w.shape[1] * group) if b is None else _const(b, "ConvTranspose bias B")
    kernel, strides, dilations = _conv_geometry(build, x, w, one_d, auto_pad, dilations,
                                                kernel_shape, pads, strides)
    src = _as_2d(build, node, x) if one_d else x
    w4 = w[:, :, None, :] if one_d else w
    c, h, wd = build.shape(src)
    if c != w4.shape[0]:
        raise Unsupported(f"{c} input channels do not match weight {w.shape}")
    n_sp = 1 if one_d else 2
    outpad = tuple(output_padding or (0,) * n_sp)
    outpad = (0, *outpad) if one_d else outpad
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        if output_shape is not None:
            target = tuple(output_shape)[-n_sp:]
        else:
            target = tuple(s * i for s, i in zip(strides[-n_sp:], (h, wd)[-n_sp:]))
        target = (1, *target) if one_d else target
        begin, end, extra = [], [], []
        for i, size in enumerate((h, wd)):
            total = (strides[i] * (size - 1) + outpad[i] + (kernel[i] - 1) * dilations[i] + 1
                     - target[i])
            # A negative total means the requested output is larger than the natural one: the
            # extra rows are bias-only, exactly as output_padding produces them.
            grow = max(0, -total)
            total = max(0, total)
            if auto_pad == "SAME_UPPER":
                begin.append(total // 2), end.append(total - total // 2)
            else:
                begin.append(total - total // 2), end.append(total // 2)
            extra.append(grow)
        pad4 = (begin[0], begin[1], end[0], end[1])
        outpad = (outpad[0] + extra[0], outpad[1] + extra[1])
    elif auto_pad == "VALID":
        pad4 = (0, 0, 0, 0)
    else:
        pad4 = _pad4(pads or (0,) * (2 * n_sp), one_d)
    steps = _weight_scale(build, node.input[1], 1, w.shape[1] * group, group)
    op = ir.ConvTranspose(w4, bias, strides, pad4, outpad, dilations, int(group), steps)
    out = f"{node.output[0]}/2d" if one_d else node.output[0]
    y = build.emit(out, op, [src])
    _finish_1d(build, node, y, one_d)


@_op("Gemm")
def _gemm(build, node, a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    a = _tensor(a, "Gemm input A")
    b = _const(b, "Gemm input B")
    if transA:
        raise Unsupported("transA=1 puts the batch on axis 1")
    if len(build.shape(a)) != 1:
        raise Unsupported(f"input A must be 2-D, not {1 + len(build.shape(a))}-D")
    weight = alpha * (b if transB else b.T)
    bias = np.zeros(weight.shape[0])
    if c is not None:
        c = _const(c, "Gemm input C")
        if c.size not in (1, weight.shape[0]) or (c.ndim == 2 and c.shape[0] != 1):
            raise Unsupported(f"C of shape {c.shape} is not a per-output bias")
        bias = beta * np.broadcast_to(c.reshape(-1), (weight.shape[0],))
    steps = _weight_scale(build, node.input[1], 0 if transB else 1, weight.shape[0])
    steps = None if steps is None else steps * abs(alpha)
    build.emit(node.output[0], ir.Dense(weight, bias.copy(), steps), [a])


@_op("MatMul")
def _matmul(build, node, a, b):
    a = _tensor(a, "MatMul input A")
    b = _const(b, "MatMul input B")
    if len(build.shape(a)) != 1 or b.ndim != 2:
        raise Unsupported("only a 2-D activation times a 2-D constant matrix is supported")
    steps = _weight_scale(build, node.input[1], 1, b.shape[1])
    build.emit(node.output[0], ir.Dense(b.T.copy(), np.zeros(b.shape[1]), steps), [a])


@_op("BatchNormalization")
def _batch_norm(build, node, x, scale, bias, mean, var, *, epsilon=1e-5, momentum=0.9,
                training_mode=0, spatial=1):
    x = _tensor(x, "BatchNormalization input X")
    if training_mode:
        raise Unsupported("training_mode=1 is not inference")
    scale, bias, mean, var = (_const(v, "BatchNormalization statistics")
                              for v in (scale, bias, mean, var))
    gain = scale / np.sqrt(var + epsilon)
    build.emit(node.output[0], ir.Affine(gain, bias - mean * gain), [x])


@_op("InstanceNormalization")
def _instance_norm(build, node, x, scale, b, *, epsilon=1e-5):
    x = _tensor(x, "InstanceNormalization input")
    if len(build.shape(x)) < 2:
        raise Unsupported("needs at least one spatial axis")
    build.emit(node.output[0], ir.InstanceNorm(_const(scale, "scale"), _const(b, "B"),
                                               float(epsilon)), [x])


@_op("Relu")
def _relu(build, node, x):
    build.emit(node.output[0], ir.Activation("relu"), [_tensor(x, "Relu input")])


@_op("LeakyRelu")
def _leaky_relu(build, node, x, *, alpha=0.01):
    build.emit(node.output[0], ir.Activation("leaky_relu", np.array([alpha], dtype=np.float64)),
               [_tensor(x, "LeakyRelu input")])


@_op("PRelu")
def _prelu(build, node, x, slope):
    x = _tensor(x, "PRelu input")
    build.emit(node.output[0], ir.Activation("prelu", _per_channel(build, x, slope, "slope")),
               [x])


@_op("Tanh")
def _tanh(build, node, x):
    build.emit(node.output[0], ir.Activation("tanh"), [_tensor(x, "Tanh input")])


@_op("Sigmoid")
def _sigmoid(build, node, x):
    build.emit(node.output[0], ir.Activation("sigmoid"), [_tensor(x, "Sigmoid input")])


def _per_channel(build, x, value, what):
    """Reduce a constant broadcast against ``x`` to a per-channel (C,) or scalar (1,) vector."""
    value = _const(value, what)
    shape = build.shape(x)
    try:
        full = np.broadcast_to(value, (1, *shape))[0] if value.ndim <= len(shape) + 1 else None
    except ValueError:
        full = None
    if full is None or (value.ndim == len(shape) + 1 and value.shape[0] != 1):
        raise Unsupported(f"{what} of shape {value.shape} does not broadcast per channel "
                          f"onto {shape}")
    if value.size == 1:
        return value.reshape(1).copy()
    per_channel = full.reshape(shape[0], -1)
    if not np.all(per_channel == per_channel[:, :1]):
        raise Unsupported(f"{what} of shape {value.shape} varies within a channel; only "
                          "scalar and per-channel constants are supported")
    return per_channel[:, 0].copy()


def _binary(build, node, a, b, kind):
    if isinstance(a, str) and isinstance(b, str):
        if kind != "Add":
            raise Unsupported(f"{kind} of two run-time tensors is not supported")
        if build.shape(a) != build.shape(b):
            raise Unsupported(f"Add of shapes {build.shape(a)} and {build.shape(b)} "
                              "(broadcasting between tensors is not supported)")
        return build.emit(node.output[0], ir.Add(), [a, b])
    tensor_first = isinstance(a, str)
    x, c = (a, b) if tensor_first else (b, a)
    if not isinstance(x, str):
        raise Unsupported("both operands are constant")
    c = _per_channel(build, x, c, f"{kind} constant")
    one, zero = np.ones_like(c), np.zeros_like(c)
    if kind == "Add":
        scale, shift = one, c
    elif kind == "Sub":
        scale, shift = (one, -c) if tensor_first else (-one, c)
    elif kind == "Mul":
        scale, shift = c, zero
    else:
        if not tensor_first:
            raise Unsupported("division of a constant by a tensor is not supported")
        if np.any(c == 0):
            raise Unsupported("division by zero")
        scale, shift = 1 / c, zero
    return build.emit(node.output[0], ir.Affine(scale, shift), [x])


@_op("Add", "Sub", "Mul", "Div")
def _arith(build, node, a, b):
    _binary(build, node, a, b, node.op_type)


@_op("Concat")
def _concat(build, node, *xs, axis):
    first = build.shape(xs[0]) if isinstance(xs[0], str) else xs[0].shape[1:]
    rank = len(first) + 1
    axis = axis + rank if axis < 0 else axis
    if axis == 0:
        raise Unsupported("concatenation along the batch axis")
    xs = [_tensor(x, "Concat input") for x in xs]
    if len(xs) == 1:
        build.alias[node.output[0]] = xs[0]
        return
    build.emit(node.output[0], ir.Concat(axis - 1), xs)


def _reshaped(full, shape):
    """numpy's reshape of ``full`` to ``shape`` (one ``-1`` inferred), by arithmetic alone: no
    array of a size the model chose is allocated."""
    total, known = math.prod(full), math.prod(d for d in shape if d != -1)
    target = [total // known if d == -1 and known and total % known == 0 else d for d in shape]
    if shape.count(-1) > 1 or any(d < 0 for d in target) or math.prod(target) != total:
        raise Unsupported(f"cannot reshape {full} to {shape}: cannot reshape array of size "
                          f"{total} into shape ({','.join(map(str, shape))})")
    return tuple(target)


def _reshape_to(build, node, x, full_shape):
    """Emit a Reshape to the full (batched) shape, or alias if nothing changes."""
    full_shape = tuple(int(d) for d in full_shape)
    if full_shape[0] != build.batch:
        raise Unsupported(f"result shape {full_shape} mixes the batch axis "
                          f"(batch {build.batch})")
    if full_shape[1:] == build.shape(x):
        build.alias[node.output[0]] = x
    else:
        build.emit(node.output[0], ir.Reshape(full_shape[1:]), [x])


def _full(build, x):
    return (build.batch, *build.shape(x))


@_op("Reshape")
def _reshape(build, node, x, shape, *, allowzero=0):
    x = _tensor(x, "Reshape input")
    shape = [int(d) for d in _const(shape, "Reshape shape")]
    full = _full(build, x)
    if not allowzero:
        shape = [full[i] if d == 0 else d for i, d in enumerate(shape)]
    _reshape_to(build, node, x, _reshaped(full, shape))


@_op("Flatten")
def _flatten(build, node, x, *, axis=1):
    x = _tensor(x, "Flatten input")
    full = _full(build, x)
    axis = axis + len(full) if axis < 0 else axis
    _reshape_to(build, node, x, (math.prod(full[:axis]), math.prod(full[axis:])))


@_op("Squeeze")
def _squeeze(build, node, x, axes=None, **attrs):
    x = _tensor(x, "Squeeze input")
    axes = attrs.get("axes", axes)
    full = _full(build, x)
    if axes is None:
        axes = [i for i, d in enumerate(full) if d == 1 and i > 0]
    axes = {int(a) + len(full) if a < 0 else int(a) for a in np.atleast_1d(axes)}
    _reshape_to(build, node, x, [d for i, d in enumerate(full) if i not in axes])


@_op("Unsqueeze")
def _unsqueeze(build, node, x, axes=None, **attrs):
    x = _tensor(x, "Unsqueeze input")
    axes = attrs.get("axes", axes)
    full = list(_full(build, x))
    rank = len(full) + len(np.atleast_1d(axes))
    for a in sorted(int(a) + rank if a < 0 else int(a) for a in np.atleast_1d(axes)):
        full.insert(a, 1)
    if axes is not None and 0 in {int(a) + rank if a < 0 else int(a)
                                  for a in np.atleast_1d(axes)}:
        raise Unsupported("unsqueezing axis 0 moves the batch axis")
    _reshape_to(build, node, x, full)


@_op("Transpose")
def _transpose(build, node, x, *, perm=None):
    x = _tensor(x, "Transpose input")
    rank = len(build.shape(x)) + 1
    perm = tuple(perm) if perm else tuple(reversed(range(rank)))
    if perm[0] != 0:
        raise Unsupported(f"perm {perm} moves the batch axis")
    if perm == tuple(range(rank)):
        build.alias[node.output[0]] = x
        return
    build.emit(node.output[0], ir.Transpose(tuple(p - 1 for p in perm[1:])), [x])


@_op("Tile")
def _tile(build, node, x, repeats):
    x = _tensor(x, "Tile input")
    repeats = [int(r) for r in _const(repeats, "Tile repeats")]
    if repeats[0] != 1:
        raise Unsupported(f"repeats {repeats} repeat the batch axis")
    if set(repeats) == {1}:
        build.alias[node.output[0]] = x
        return
    build.emit(node.output[0], ir.Tile(tuple(repeats[1:])), [x])


@_op("Pad")
def _pad(build, node, x, pads=None, constant_value=None, axes=None, *, mode="constant",
         **attrs):
    x = _tensor(x, "Pad input")
    pads = attrs.get("pads", pads)
    value = attrs.get("value", constant_value)
    if mode not in ("constant", "reflect", "edge"):
        raise Unsupported(f"mode {mode!r} (constant, reflect and edge are supported)")
    rank = len(build.shape(x)) + 1
    pads = [int(p) for p in _const(pads, "pads")]
    if axes is not None:
        axes = [int(a) + rank if a < 0 else int(a) for a in _const(axes, "axes")]
        full = [0] * (2 * rank)
        for i, a in enumerate(axes):
            full[a], full[a + rank] = pads[i], pads[i + len(axes)]
        pads = full
    begin, end = pads[:rank], pads[rank:]
    if rank != 4 or any(begin[:2]) or any(end[:2]):
        raise Unsupported(f"pads {pads}: only the two spatial axes of a 4-D tensor may be "
                          "padded")
    if min(pads) < 0:
        raise Unsupported(f"negative pads {pads} (cropping) are not supported")
    value = 0.0 if value is None or (hasattr(value, "size") and value.size == 0) \
        else float(np.asarray(value).reshape(-1)[0])
    build.emit(node.output[0], ir.Pad((begin[2], begin[3], end[2], end[3]), mode, value), [x])


def _nearest_is_repeat(size, scale, mode, nearest_mode):
    """Whether ONNX Resize's nearest mapping for integer ``scale`` equals plain repetition."""
    out = np.arange(size * scale, dtype=np.float64)
    if mode == "asymmetric":
        orig = out / scale
    elif mode in ("half_pixel", "pytorch_half_pixel"):
        orig = (out + 0.5) / scale - 0.5
    elif mode == "align_corners":
        orig = out * (size - 1) / max(size * scale - 1, 1)
    elif mode == "tf_half_pixel_for_nn":
        orig = (out + 0.5) / scale
    else:
        return False
    if nearest_mode == "floor":
        index = np.floor(orig)
    elif nearest_mode == "ceil":
        index = np.ceil(orig)
    elif nearest_mode == "round_prefer_ceil":
        index = np.floor(orig + 0.5)
    else:
        index = np.ceil(orig - 0.5)
    return np.array_equal(np.clip(index, 0, size - 1), np.arange(size * scale) // scale)


def _emit_upsample(build, node, x, factors, mode="asymmetric", nearest_mode="floor"):
    full = _full(build, x)
    if len(full) != 4:
        raise Unsupported("only 4-D (N, C, H, W) tensors can be resized")
    factors = [float(f) for f in factors]
    if factors[:2] != [1.0, 1.0]:
        raise Unsupported(f"scales {factors} resize the batch or channel axis")
    ints = [int(round(f)) for f in factors[2:]]
    if any(abs(f - i) > 1e-6 or i < 1 for f, i in zip(factors[2:], ints)):
        raise Unsupported(f"scales {factors}: only integer upsampling is supported")
    for size, scale in zip(full[2:], ints):
        if not _nearest_is_repeat(size, scale, mode, nearest_mode):
            raise Unsupported(f"coordinate_transformation_mode {mode!r} with nearest_mode "
                              f"{nearest_mode!r} is not a pixel repetition")
    if ints == [1, 1]:
        build.alias[node.output[0]] = x
    else:
        build.emit(node.output[0], ir.Upsample(tuple(ints)), [x])


@_op("Resize")
def _resize(build, node, x, roi=None, scales=None, sizes=None, *, antialias=0, axes=None,
            coordinate_transformation_mode="half_pixel", cubic_coeff_a=-0.75,
            exclude_outside=0, extrapolation_value=0.0, keep_aspect_ratio_policy="stretch",
            mode="nearest", nearest_mode="round_prefer_floor"):
    x = _tensor(x, "Resize input")
    if mode != "nearest":
        raise Unsupported(f"mode {mode!r} (only nearest is supported)")
    full = _full(build, x)
    axes = list(range(len(full))) if axes is None else [a % len(full) for a in axes]
    factors = [1.0] * len(full)
    if scales is not None and np.size(scales):
        for a, f in zip(axes, _const(scales, "scales")):
            factors[a] = f
    elif sizes is not None and np.size(sizes):
        if keep_aspect_ratio_policy != "stretch":
            raise Unsupported(f"keep_aspect_ratio_policy {keep_aspect_ratio_policy!r}")
        for a, s in zip(axes, _const(sizes, "sizes")):
            factors[a] = s / full[a]
    else:
        raise Unsupported("neither scales nor sizes given")
    _emit_upsample(build, node, x, factors, coordinate_transformation_mode, nearest_mode)


@_op("Upsample")
def _upsample(build, node, x, scales=None, *, mode="nearest", **attrs):
    x = _tensor(x, "Upsample input")
    if mode != "nearest":
        raise Unsupported(f"mode {mode!r} (only nearest is supported)")
    scales = attrs.get("scales", scales)
    _emit_upsample(build, node, x, _const(scales, "scales"))


@_op("DepthToSpace")
def _depth_to_space(build, node, x, *, blocksize, mode="DCR"):
    x = _tensor(x, "DepthToSpace input")
    if len(build.shape(x)) != 3:
        raise Unsupported("only 4-D (N, C, H, W) tensors are supported")
    build.emit(node.output[0], ir.DepthToSpace(int(blocksize), mode), [x])


def _flag(value):
    """Whether an optional boolean operand is given and true."""
    return isinstance(value, np.ndarray) and value.size > 0 and bool(value.reshape(-1)[0])


@_op("Identity", "Dropout")
def _identity(build, node, x, *rest, **attrs):
    # Dropout's operands are (data, ratio, training_mode): an identity unless it trains with
    # a ratio other than 0.
    ratio, training = (list(rest) + [None, None])[:2]
    no_drop = isinstance(ratio, np.ndarray) and ratio.size > 0 and \
        float(ratio.reshape(-1)[0]) == 0
    if node.op_type == "Dropout" and _flag(training) and not no_drop:
        raise Unsupported("training_mode=True is not inference")
    build.alias[node.output[0]] = _tensor(x, f"{node.op_type} input")
    if node.op_type == "Dropout" and len(node.output) > 1 and node.output[1]:
        raise Unsupported("the mask output of Dropout is not supported")


# --------------------------------------------------------------------------------------------
# Pre-quantized models (:mod:`flexigan.compiler.prequant`): a quantization of a run-time tensor
# that the machine represents gives the tensor its step (``build.scales``) and is otherwise an
# identity, so the quantized IR computes exactly those int8 values; quantized weights fold to
# their real values, and their steps (``build.weight_scales``) go with the layer that reads
# them, whose int8 weights are then the model's own codes.


def _quantization_operands(node, consts):
    """``(values, steps, zero point or None, axis)`` of a Quantize- or DequantizeLinear of
    constants, the steps and zero point shaped to broadcast along ``axis`` of the values."""
    values = consts[node.input[0]]
    steps = np.asarray(consts[node.input[1]], dtype=np.float64)
    zero_point = consts[node.input[2]] if len(node.input) > 2 and node.input[2] else None
    axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % max(values.ndim, 1)
    shape = [1] * values.ndim
    if steps.size > 1:
        shape[axis] = -1
    return values, steps.reshape(shape), zero_point, axis


def _keep_weight_steps(build, node, steps, axis, rank, why):
    """Record the steps of the quantized weights ``node`` computes, or why they are not the
    machine's."""
    if why is None:
        if steps is not None:
            build.weight_scales[node.output[0]] = (steps, axis, rank)
    else:
        build.cannot_represent(node.output[0], why)


def _dequantize_constant(build, node, consts):
    codes, steps, zero_point, axis = _quantization_operands(node, consts)
    values, kept, why = prequant.dequantize_weights(codes, steps, zero_point, axis)
    _keep_weight_steps(build, node, kept, axis, codes.ndim, why)
    return values


def _quantize_constant(build, node, consts):
    values, steps, zero_point, _ = _quantization_operands(node, consts)
    dtype = prequant.codes_dtype(zero_point, next((a.i for a in node.attribute
                                                   if a.name == "output_dtype"), 0))
    return prequant.quantize(values, steps, zero_point, dtype)


def _qonnx_attributes(node):
    attrs = {a.name: _attr(a) for a in node.attribute}
    return attrs.get("signed", 1), attrs.get("narrow", 0), attrs.get("rounding_mode", "ROUND")


def _qonnx_constant(build, node, consts):
    values = consts[node.input[0]]
    steps, zero_point, bitwidth = (np.asarray(consts[i], np.float64) for i in node.input[1:4])
    values, kept, axis, why = prequant.qonnx_weights(values, steps, zero_point, bitwidth,
                                                     *_qonnx_attributes(node))
    _keep_weight_steps(build, node, kept, axis, values.ndim, why)
    return values


def _weight_scale(build, tensor, axis, channels, repeat=1):
    """The steps of weight ``tensor`` (an ONNX name) per output channel, whose axis in the
    weight is ``axis`` (:func:`~flexigan.compiler.prequant.per_output_channel`), or None when
    the model gives none or (with --requantize) gives them along another axis."""
    entry = build.weight_scales.get(tensor)
    if entry is None:
        return None
    steps, why = prequant.per_output_channel(entry[0], entry[1], axis, channels, repeat)
    if why is not None:
        build.cannot_represent(tensor, why)
    return steps


def _give_step(build, node, x, steps, why, lowest):
    """A quantization of run-time value ``x`` (QuantizeLinear, QONNX Quant): its output is
    ``x``, whose int8 step is ``steps``; or, when the machine cannot represent it (``why``),
    noted and, with --requantize, calibrated. ``lowest``: its lowest value in steps
    (:func:`~flexigan.compiler.prequant.lowest`)."""
    if why is not None:
        build.cannot_represent(node.output[0], why)
        # Re-calibrated (--requantize): the value keeps what the quantization does to it but
        # for rounding. A range from 0 up (unsigned codes from the zero point: an exporter's
        # ReLU folded into the quantization) clips the negatives; the clipping of a range
        # around 0 is the calibrated range's.
        if lowest >= 0:
            # Named after no ONNX tensor: onnxruntime's of the QuantizeLinear holds codes.
            build.alias[node.output[0]] = build.emit(f"{node.output[0]}/relu",
                                                     ir.Activation("relu"), [x])
        else:
            build.alias[node.output[0]] = x
        return
    build.alias[node.output[0]] = x
    step = float(steps.reshape(-1)[0])
    if build.scales.setdefault(x, step) != step:
        raise Unsupported(f"{x!r} is quantized with two steps, {build.scales[x]:.6g} and "
                          f"{step:.6g}")


@_op("QuantizeLinear")
def _quantize_linear(build, node, x, y_scale, y_zero_point=None, *, axis=1, saturate=1,
                     block_size=0, output_dtype=0):
    x = _tensor(x, "QuantizeLinear input")
    steps = _const(y_scale, "QuantizeLinear y_scale")
    dtype = prequant.codes_dtype(y_zero_point, output_dtype)
    _give_step(build, node, x, steps,
               prequant.problem(dtype, y_zero_point, steps, per_tensor=True),
               prequant.lowest(np.iinfo(dtype).min, y_zero_point))


@_op("DequantizeLinear")
def _dequantize_linear(build, node, x, x_scale, x_zero_point=None, *, axis=1, block_size=0):
    x = _tensor(x, "DequantizeLinear input")
    step = _const(x_scale, "DequantizeLinear x_scale").reshape(-1)
    if x in build.scales and (step.size != 1 or float(step[0]) != build.scales[x]):
        raise Unsupported(f"dequantizes {x!r} with steps {step[:3]}, not the step "
                          f"{build.scales[x]:.6g} it was quantized with")
    build.alias[node.output[0]] = x


def _qonnx_quant(build, node, x, scale, zeropt, bitwidth, **attrs):
    x = _tensor(x, "Quant input")
    steps = _const(scale, "Quant scale")
    zero_point = _const(zeropt, "Quant zeropt")
    signed, narrow, rounding_mode = _qonnx_attributes(node)
    low, _ = prequant.qonnx_range(_const(bitwidth, "Quant bitwidth"), signed, narrow)
    why = prequant.qonnx_problem(bitwidth, signed, narrow, rounding_mode, zero_point, steps,
                                 False)
    _give_step(build, node, x, steps, why, prequant.lowest(low, zero_point))


#: Handlers of QONNX's domains, by op type.
_QONNX_HANDLERS = {"Quant": _qonnx_quant}
#: The quantizations of constants that import computes itself (onnx's reference evaluator has
#: no DequantizeLinear before opset 19, and no QONNX), by op type.
_FOLD_QUANTIZATION = {"DequantizeLinear": _dequantize_constant,
                      "QuantizeLinear": _quantize_constant, "Quant": _qonnx_constant}


#: Supported in pairs, as a pre-quantized model has them, not as ops on their own: a lone
#: QuantizeLinear computes integer codes, which flexigan neither takes in nor gives out.
QUANTIZATION_OPS = ("DequantizeLinear", "QuantizeLinear")
#: The ops flexigan runs on their own.
SUPPORTED_OPS = tuple(sorted(set(_HANDLERS) - set(QUANTIZATION_OPS)))
