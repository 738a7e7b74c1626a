"""Channel-last graphs: layout Transposes removed at import, as addressing.

TensorFlow and Keras store images as ``(N, H, W, C)``; tf2onnx wraps the model's convolutions
(which ONNX defines on ``(N, C, H, W)``) in Transposes and cancels the pairs it can, so an
exported GAN keeps a Transpose where the layout really changes: after the graph's input, before
its output, and between a Dense and a Reshape to an image (a generator's first layer) or between
an image and its Flatten (a discriminator's last). The accelerator stores every activation in
HWC order already, so none of those moves data. :func:`fold_transposes` removes them from the
IR:

* a Transpose of a model input: the input takes the transposed shape, the IR layout, and
  ``graph.graph["layouts"][input]`` records the permutation from it to the ONNX layout;
* a Transpose that is a model output: the output is its operand, and the layouts record the
  permutation likewise;
* a Transpose of a Reshape of a vector computed by a Dense (through element-wise Affines and
  Activations): the Dense computes its rows in the transposed order, and the Reshape goes
  straight to the transposed shape;
* a Reshape to a vector of a Transpose of an image, read only by Dense layers: each Dense reads
  its columns in the untransposed order;
* and, first, a run of Reshapes, Tiles and Transposes whose net effect is a nearest upsampling
  of an image (Keras 3's UpSampling2D, which tf2onnx writes with 5-D Transposes): one Upsample
  (after a Reshape and a layout Transpose, which the rules above then remove).

The rewritten IR computes the same numbers; the values whose elements are reordered (a Dense
computing its rows in another order, a vector flattened in another order) are renamed with
the suffix ``/chw``, so no report compares them with the ONNX tensor of their old name. A
Transpose that fits none of these stays, and the back end reports it.

The model's boundary keeps the ONNX layout: :func:`to_ir` and :func:`to_onnx` convert a batched
array of a model input or output between the two, and :func:`onnx_shape` is the ONNX shape of
one sample. The flow applies them where arrays enter (``--input``, ``--calibrate``) and leave
(outputs, onnxruntime's reference).
"""

from __future__ import annotations

import itertools

import numpy as np

from . import ir
from .evaluate import LAYOUT_KERNELS

__all__ = ["fold_transposes", "to_ir", "to_onnx", "onnx_shape", "RENAMED"]

#: The suffix of a value whose elements the rewrite reorders.
RENAMED = "/chw"
#: The ops a Dense's row order passes through unchanged (element-wise on a vector).
_ELEMENTWISE = (ir.Affine, ir.Activation)


def _layouts(graph):
    return graph.graph.get("layouts", {})


def _perm(graph, name):
    """The permutation (of per-sample axes) from value ``name``'s IR layout to its ONNX
    layout, or None when they are the same."""
    perm = _layouts(graph).get(name)
    return None if perm is None else tuple(int(p) for p in perm)


def onnx_shape(graph, name):
    """The per-sample ONNX shape of model input or output ``name``."""
    shape = ir.node(graph, name).shape
    perm = _perm(graph, name)
    return shape if perm is None else tuple(shape[p] for p in perm)


def to_onnx(graph, name, x):
    """The batched array ``x`` of model input or output ``name``, from the IR layout to the
    ONNX model's."""
    perm = _perm(graph, name)
    return x if perm is None else np.transpose(x, (0, *(p + 1 for p in perm)))


def to_ir(graph, name, x):
    """The batched array ``x`` of model input or output ``name``, from the ONNX layout to the
    IR's (the inverse of :func:`to_onnx`)."""
    perm = _perm(graph, name)
    return x if perm is None else np.transpose(x, (0, *(int(p) + 1 for p in np.argsort(perm))))


def _only_reader(graph, name):
    """The one value that reads ``name``, or None (several, none, or ``name`` is an output)."""
    readers = ir.consumers(graph, name)
    if len(readers) != 1 or name in graph.graph["outputs"]:
        return None
    return readers[0]


def _rename(graph, old, new):
    """Give value ``old`` the name ``new``, in its readers' operands and the outputs too."""
    n = ir.node(graph, old)
    readers = ir.consumers(graph, old)
    graph.add_node(new, node=n)
    for i in n.inputs:
        graph.add_edge(i, new)
    for reader in readers:
        r = ir.node(graph, reader)
        ir.replace_node(graph, reader, ir.Node(
            r.op, tuple(new if i == old else i for i in r.inputs), r.shape, r.scale, r.q))
    graph.remove_node(old)
    graph.graph["outputs"] = [new if o == old else o for o in graph.graph["outputs"]]
    scales = graph.graph.get("scales", {})
    if old in scales:
        graph.graph["scales"] = {new if k == old else k: v for k, v in scales.items()}


def _bypass(graph, name, source):
    """Remove value ``name``, its readers reading ``source`` instead."""
    for reader in ir.consumers(graph, name):
        r = ir.node(graph, reader)
        ir.replace_node(graph, reader, ir.Node(
            r.op, tuple(source if i == name else i for i in r.inputs), r.shape, r.scale, r.q))
    graph.remove_node(name)


def _order(shape, perm):
    """For each element of ``shape`` transposed by ``perm``, in row-major order, the row-major
    index of the element it is in ``shape``."""
    return np.arange(int(np.prod(shape))).reshape(shape).transpose(perm).reshape(-1)


def _input_transpose(graph, name, n):
    """A Transpose of a model input that nothing else reads: the input takes its layout."""
    source = n.inputs[0]
    if source not in graph.graph["inputs"] or ir.consumers(graph, source) != [name] \
            or {source, name} & set(graph.graph["outputs"]) or source in _layouts(graph):
        return False
    graph.nodes[source]["node"] = ir.Node(ir.Input(), (), n.shape)
    graph.graph["layouts"][source] = [int(p) for p in np.argsort(n.op.perm)]
    _bypass(graph, name, source)
    return True


def _output_transpose(graph, name, n):
    """A Transpose that is a model output (and read by nothing): the output is its operand."""
    source = n.inputs[0]
    outputs = graph.graph["outputs"]
    if name not in outputs or ir.consumers(graph, name) or source in outputs \
            or source in graph.graph["inputs"]:
        return False
    graph.graph["outputs"] = [source if o == name else o for o in outputs]
    graph.graph["layouts"][source] = [int(p) for p in n.op.perm]
    graph.remove_node(name)
    return True


def _dense_rows(graph, name, n):
    """A Transpose of a Reshape (read by nothing else) of a vector that a Dense computes,
    through element-wise ops each read only by the next: the Dense computes its rows in the
    transposed order."""
    reshape = n.inputs[0]
    r = ir.node(graph, reshape)
    if not isinstance(r.op, ir.Reshape) or _only_reader(graph, reshape) != name:
        return False
    chain = [r.inputs[0]]
    while len(ir.node(graph, chain[-1]).shape) == 1 and \
            isinstance(ir.node(graph, chain[-1]).op, _ELEMENTWISE):
        chain.append(ir.node(graph, chain[-1]).inputs[0])
    if not isinstance(ir.node(graph, chain[-1]).op, ir.Dense) or \
            any(_only_reader(graph, v) is None for v in chain) or \
            any(isinstance(ir.node(graph, v).op, ir.Activation) and
                ir.node(graph, v).op.slope is not None and ir.node(graph, v).op.slope.size > 1
                for v in chain):
        return False
    order = _order(r.shape, n.op.perm)
    for value in chain:
        v = ir.node(graph, value)
        if isinstance(v.op, ir.Dense):
            op = ir.Dense(v.op.weight[order], v.op.bias[order],
                          None if v.op.weight_scale is None else v.op.weight_scale[order])
        elif isinstance(v.op, ir.Affine):
            op = ir.Affine(*(np.broadcast_to(p, v.shape)[order]
                             for p in (v.op.scale, v.op.shift)))
        else:
            op = v.op
        graph.nodes[value]["node"] = ir.Node(op, v.inputs, v.shape)
        _rename(graph, value, value + RENAMED)
    ir.replace_node(graph, reshape, ir.Node(ir.Reshape(n.shape), (chain[0] + RENAMED,), n.shape))
    _bypass(graph, name, reshape)
    _rename(graph, reshape, name)
    return True


def _dense_columns(graph, name, n):
    """A Transpose of an image (read by nothing else) flattened by a Reshape that only Dense
    layers read: each Dense reads its columns in the untransposed order."""
    flat = _only_reader(graph, name)
    if flat is None or len(n.shape) != 3 or len(ir.node(graph, flat).shape) != 1 or \
            not isinstance(ir.node(graph, flat).op, ir.Reshape) or \
            flat in graph.graph["outputs"]:
        return False
    readers = ir.consumers(graph, flat)
    if not readers or not all(isinstance(ir.node(graph, d).op, ir.Dense) for d in readers):
        return False
    source = ir.node(graph, n.inputs[0]).shape
    columns = np.argsort(_order(source, n.op.perm))
    for dense in readers:
        d = ir.node(graph, dense)
        op = ir.Dense(d.op.weight[:, columns], d.op.bias, d.op.weight_scale)
        graph.nodes[dense]["node"] = ir.Node(op, d.inputs, d.shape)
    _bypass(graph, name, n.inputs[0])
    _rename(graph, flat, flat + RENAMED)
    return True


_REWRITES = (_input_transpose, _output_transpose, _dense_rows, _dense_columns)
#: The ops of a chain that :func:`_collapse_chain` may find to be a nearest upsampling.
_CHAIN_OPS = (ir.Reshape, ir.Transpose, ir.Tile)


def _chain(graph, tile):
    """``(source, values)``: the longest run of layout ops through ``tile``, each the only
    reader of the one before (and not a model output, but for the last), and the value the
    first reads."""
    values = [tile]
    while _only_reader(graph, values[-1]) is not None and \
            isinstance(ir.node(graph, _only_reader(graph, values[-1])).op, _CHAIN_OPS):
        values.append(_only_reader(graph, values[-1]))
    while isinstance(ir.node(graph, ir.node(graph, values[0]).inputs[0]).op, _CHAIN_OPS) and \
            _only_reader(graph, ir.node(graph, values[0]).inputs[0]) == values[0]:
        values.insert(0, ir.node(graph, values[0]).inputs[0])
    return ir.node(graph, values[0]).inputs[0], values


def _as_upsampling(moved):
    """``(factors, image)`` when the index array ``moved`` (one sample, 3-D) is a nearest
    upsampling of ``image`` by ``factors`` > 1, largest first; else None."""
    _, height, width = moved.shape
    for up_h in range(height, 0, -1):
        for up_w in range(width, 0, -1):
            if height % up_h or width % up_w or up_h * up_w == 1:
                continue
            image = moved[:, ::up_h, ::up_w]
            if np.array_equal(moved, image.repeat(up_h, axis=1).repeat(up_w, axis=2)):
                return (up_h, up_w), image
    return None


def _as_transposed(image):
    """``(shape, perm)`` such that the source's elements reshaped to ``shape`` and transposed
    by ``perm`` are the index array ``image``; else None."""
    count = image.size
    for perm in itertools.permutations(range(3)):
        shape = tuple(image.shape[perm.index(axis)] for axis in range(3))
        if np.array_equal(np.arange(count).reshape(shape).transpose(perm), image):
            return shape, perm
    return None


def _collapse_chain(graph, tile):
    """A run of Reshapes, Tiles and Transposes through ``tile`` whose net effect is a nearest
    upsampling of the source's elements reshaped to an image and transposed (Keras 3's
    UpSampling2D as tf2onnx exports it, in NCHW or before the Transpose from NHWC): that
    Reshape, Transpose (when they move anything; the rewrites below remove a layout Transpose)
    and one Upsample, named as the run's last value. The net effect is found by moving the
    source's element indices through the run."""
    source, values = _chain(graph, tile)
    last = values[-1]
    if len(ir.node(graph, last).shape) != 3:
        return
    moved = np.arange(int(np.prod(ir.node(graph, source).shape)), dtype=np.float64)
    moved = moved.reshape(1, *ir.node(graph, source).shape)
    for value in values:
        op = ir.node(graph, value).op
        moved = LAYOUT_KERNELS[type(op)](op, moved)
    upsampling = _as_upsampling(moved[0].astype(np.int64))
    found = upsampling and _as_transposed(upsampling[1])
    if not found:
        return
    (shape, perm), end = found, ir.node(graph, last).shape
    graph.remove_nodes_from(values[:-1])
    value = source
    if shape != ir.node(graph, source).shape:
        value = ir.add_node(graph, f"{last}/reshape", ir.Reshape(shape), [value])
    if perm != (0, 1, 2):
        value = ir.add_node(graph, f"{last}/transpose", ir.Transpose(perm), [value])
    ir.replace_node(graph, last, ir.Node(ir.Upsample(upsampling[0]), (value,), end))


def fold_transposes(graph):
    """The IR without its layout Transposes (see the module docstring), and with
    ``graph.graph["layouts"]``: for each model input or output whose IR layout is not the ONNX
    model's, the permutation from one to the other. A pure function: ``graph`` is not
    changed."""
    graph = graph.copy()
    graph.graph["layouts"] = dict(_layouts(graph))
    for name in [name for name, n in ir.topo_nodes(graph) if isinstance(n.op, ir.Tile)]:
        if name in graph:      # not in a run collapsed already
            _collapse_chain(graph, name)
    for name in [name for name, n in ir.topo_nodes(graph) if isinstance(n.op, ir.Transpose)]:
        if name in graph:      # an earlier rewrite may have renamed its operand
            any(rewrite(graph, name, ir.node(graph, name)) for rewrite in _REWRITES)
    return ir.verify(graph)
