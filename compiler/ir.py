"""The intermediate representation: a networkx DiGraph of small frozen dataclasses.

A model is a :class:`networkx.DiGraph` whose node keys are tensor names (the ONNX name of the
tensor the node produces, so every IR value can be traced back to the ONNX graph) and whose node
attribute ``"node"`` holds a frozen :class:`Node`: the operation, its ordered inputs and its
output shape. Edges mirror ``Node.inputs`` for the graph algorithms; ``Node.inputs`` is the
authority on operand order. ``graph.graph["inputs"]`` and ``graph.graph["outputs"]`` list the
model's input and output names; ``graph.graph["layouts"]`` maps an input or output whose IR
layout is not the ONNX model's to the permutation between them
(:mod:`flexigan.compiler.layout`), and ``graph.graph["scales"]`` a value to the int8 step a
pre-quantized model gives it (:func:`flexigan.compiler.quant.quantize`).

Shapes are *per sample*: axis 0 of every tensor is the batch axis and is not stored, so one IR
serves batch 1 and batch N alike. Activation tensors are ``(C, H, W)`` for images and ``(K,)``
for vectors.

Each pass is a function ``graph -> graph``; :func:`verify` checks the invariants between passes.
After quantization every node also carries ``scale`` (the real value of one int8 step of its
output) and ``q`` (the integer parameters of its arithmetic, see :mod:`flexigan.compiler.quant`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np

__all__ = [
    "Input", "Conv", "ConvTranspose", "Dense", "Affine", "Activation", "InstanceNorm", "Add",
    "Concat", "Reshape", "Transpose", "Tile", "Pad", "Upsample", "DepthToSpace",
    "Node", "new_graph", "add_node", "node", "replace_node", "inputs", "topo_nodes",
    "consumers", "verify", "conv_out", "convt_out", "COMPUTE_OPS", "LAYOUT_OPS",
]


def conv_out(size, kernel, stride, pad_begin, pad_end, dilation=1):
    """Output length of a convolution along one axis."""
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


def convt_out(size, kernel, stride, pad_begin, pad_end, output_padding=0, dilation=1):
    """Output length of a transposed convolution along one axis."""
    return stride * (size - 1) + output_padding + dilation * (kernel - 1) + 1 - pad_begin - pad_end


@dataclass(frozen=True, eq=False)
class Input:
    """A model input (float at the model boundary, int8 inside)."""

    def shape(self):
        raise TypeError("an Input's shape is given, not inferred")


@dataclass(frozen=True, eq=False)
class Conv:
    """2-D convolution. ``weight`` is ``(Cout, Cin/group, kH, kW)``; ``pads`` is ONNX order
    ``(top, left, bottom, right)``; ``weight_scale`` as :class:`Dense`'s."""

    weight: np.ndarray
    bias: np.ndarray
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    group: int = 1
    weight_scale: np.ndarray | None = None

    def shape(self, x):
        c, h, w = x
        kh, kw = self.weight.shape[2:]
        return (self.weight.shape[0],
                conv_out(h, kh, self.strides[0], self.pads[0], self.pads[2], self.dilations[0]),
                conv_out(w, kw, self.strides[1], self.pads[1], self.pads[3], self.dilations[1]))


@dataclass(frozen=True, eq=False)
class ConvTranspose:
    """2-D transposed convolution. ``weight`` is ``(Cin, Cout/group, kH, kW)``; ``pads`` is
    ``(top, left, bottom, right)`` after ``auto_pad`` and ``output_shape`` have been resolved;
    ``weight_scale`` as :class:`Dense`'s."""

    weight: np.ndarray
    bias: np.ndarray
    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    output_padding: tuple[int, int] = (0, 0)
    dilations: tuple[int, int] = (1, 1)
    group: int = 1
    weight_scale: np.ndarray | None = None

    @property
    def out_channels(self):
        return self.weight.shape[1] * self.group

    def shape(self, x):
        c, h, w = x
        kh, kw = self.weight.shape[2:]
        return (self.out_channels,
                convt_out(h, kh, self.strides[0], self.pads[0], self.pads[2],
                          self.output_padding[0], self.dilations[0]),
                convt_out(w, kw, self.strides[1], self.pads[1], self.pads[3],
                          self.output_padding[1], self.dilations[1]))


@dataclass(frozen=True, eq=False)
class Dense:
    """Fully connected layer on a vector: ``y = weight @ x + bias``, ``weight`` is ``(N, K)``.

    ``weight_scale``, of a pre-quantized model, is the real value of one int8 weight step of
    each output channel, shape ``(N,)``: the weights are integer multiples of it, and
    quantization keeps them so. None: quantization derives the steps from the weights."""

    weight: np.ndarray
    bias: np.ndarray
    weight_scale: np.ndarray | None = None

    def shape(self, x):
        return (self.weight.shape[0],)


@dataclass(frozen=True, eq=False)
class Affine:
    """Per-channel ``y = x * scale[c] + shift[c]`` along axis 0 of the sample (the channel axis).

    Standalone BatchNormalization, and Mul, Div, Add and Sub by constants, become this op;
    an Affine right after a Conv, ConvTranspose or Dense is folded into its weights.
    """

    scale: np.ndarray
    shift: np.ndarray

    def shape(self, x):
        return x


ACTIVATIONS = ("relu", "leaky_relu", "prelu", "tanh", "sigmoid")


@dataclass(frozen=True, eq=False)
class Activation:
    """Unary activation: ``kind`` in :data:`ACTIVATIONS`. ``slope`` is LeakyReLU's alpha
    (shape ``(1,)``) or PReLU's per-channel slope (shape ``(C,)`` or ``(1,)``)."""

    kind: str
    slope: np.ndarray | None = None

    def shape(self, x):
        return x

    def __call__(self, x, channel_axis=0):
        """Float reference of the activation on ``x`` (a per-sample or batched array)."""
        if self.kind == "relu":
            return np.maximum(x, 0)
        if self.kind in ("leaky_relu", "prelu"):
            slope = self.slope.reshape((-1,) + (1,) * (x.ndim - channel_axis - 1))
            return np.where(x >= 0, x, x * slope)
        if self.kind == "tanh":
            return np.tanh(x)
        return 1 / (1 + np.exp(-x))


@dataclass(frozen=True, eq=False)
class InstanceNorm:
    """Instance normalization over the spatial axes of each channel."""

    scale: np.ndarray
    bias: np.ndarray
    epsilon: float = 1e-5

    def shape(self, x):
        return x


@dataclass(frozen=True, eq=False)
class Add:
    """Element-wise sum of two tensors of the same shape (residual connections)."""

    def shape(self, a, b):
        return a


@dataclass(frozen=True, eq=False)
class Concat:
    """Concatenation along per-sample ``axis`` (0 is the channel axis)."""

    axis: int = 0

    def shape(self, *xs):
        out = list(xs[0])
        out[self.axis] = sum(x[self.axis] for x in xs)
        return tuple(out)


@dataclass(frozen=True, eq=False)
class Reshape:
    """Row-major reshape of each sample (Reshape, Flatten, Squeeze and Unsqueeze)."""

    target: tuple[int, ...]

    def shape(self, x):
        return self.target


@dataclass(frozen=True, eq=False)
class Transpose:
    """Permutation of the per-sample axes (the batch axis stays first)."""

    perm: tuple[int, ...]

    def shape(self, x):
        return tuple(x[p] for p in self.perm)


@dataclass(frozen=True, eq=False)
class Tile:
    """The sample repeated ``repeats[i]`` times along axis ``i`` (ONNX Tile). Keras 3's
    UpSampling2D exports as Reshapes, Tiles and Transposes; import makes such a chain one
    :class:`Upsample` (:mod:`flexigan.compiler.layout`), and the back end lowers no other."""

    repeats: tuple[int, ...]

    def shape(self, x):
        return tuple(d * r for d, r in zip(x, self.repeats))


@dataclass(frozen=True, eq=False)
class Pad:
    """Spatial padding ``(top, left, bottom, right)``; ``mode`` is "constant", "reflect" or
    "edge" (as ONNX Pad)."""

    pads: tuple[int, int, int, int]
    mode: str = "constant"
    value: float = 0.0

    def shape(self, x):
        c, h, w = x
        return (c, h + self.pads[0] + self.pads[2], w + self.pads[1] + self.pads[3])


@dataclass(frozen=True, eq=False)
class Upsample:
    """Nearest-neighbour upsampling by integer factors (Resize and Upsample)."""

    scales: tuple[int, int]

    def shape(self, x):
        c, h, w = x
        return (c, h * self.scales[0], w * self.scales[1])


@dataclass(frozen=True, eq=False)
class DepthToSpace:
    """DepthToSpace; ``mode`` is "DCR" or "CRD" as in ONNX."""

    blocksize: int
    mode: str = "DCR"

    def shape(self, x):
        c, h, w = x
        b = self.blocksize
        return (c // (b * b), h * b, w * b)


COMPUTE_OPS = (Conv, ConvTranspose, Dense)
LAYOUT_OPS = (Reshape, Transpose, Tile, Pad, Upsample, DepthToSpace, Concat)


@dataclass(frozen=True, eq=False)
class Node:
    """One IR value: the operation that makes it, its operands, its per-sample shape and, after
    quantization, its output ``scale`` and integer parameters ``q``."""

    op: Any
    inputs: tuple[str, ...]
    shape: tuple[int, ...]
    scale: float | None = None
    q: Any = None


def new_graph(inputs=(), outputs=()):
    """An empty IR graph."""
    graph = nx.DiGraph()
    graph.graph["inputs"] = list(inputs)
    graph.graph["outputs"] = list(outputs)
    return graph


def add_node(graph, name, op, inputs=(), shape=None):
    """Add the value ``name`` computed by ``op`` from ``inputs``; infer its shape unless given."""
    inputs = tuple(inputs)
    if shape is None:
        shape = op.shape(*(graph.nodes[i]["node"].shape for i in inputs))
    graph.add_node(name, node=Node(op, inputs, tuple(int(d) for d in shape)))
    for i in inputs:
        graph.add_edge(i, name)
    return name


def node(graph, name) -> Node:
    """The :class:`Node` of value ``name``."""
    return graph.nodes[name]["node"]


def replace_node(graph, name, new):
    """Replace value ``name``'s node by ``new``, rewiring its input edges."""
    for i in list(graph.predecessors(name)):
        graph.remove_edge(i, name)
    graph.nodes[name]["node"] = new
    for i in new.inputs:
        graph.add_edge(i, name)


def inputs(graph, name):
    """The input nodes of value ``name``, in operand order."""
    return [node(graph, i) for i in node(graph, name).inputs]


def consumers(graph, name):
    """Names of the values that read ``name``."""
    return list(graph.successors(name))


def topo_nodes(graph):
    """``(name, Node)`` pairs in a deterministic topological order."""
    return [(n, node(graph, n)) for n in nx.lexicographical_topological_sort(graph)]


def verify(graph, quantized=False):
    """Check the IR invariants; raise ``AssertionError`` naming the first broken one.

    Invariants: acyclic; edges match ``Node.inputs``; every declared input is an ``Input`` and
    every ``Input`` is declared; outputs exist; each shape is what the op infers from its
    operands; compute ops have consistent weight and bias shapes; after quantization every
    node has a positive scale and non-Input nodes carry integer parameters.
    """
    assert nx.is_directed_acyclic_graph(graph), "IR graph has a cycle"
    declared = set(graph.graph["inputs"])
    for name, n in topo_nodes(graph):
        assert isinstance(n, Node), f"{name}: node attribute is not a Node"
        assert set(graph.predecessors(name)) == set(n.inputs), f"{name}: edges != inputs"
        if isinstance(n.op, Input):
            assert name in declared, f"{name}: Input not listed in graph inputs"
            assert not n.inputs, f"{name}: Input has operands"
        else:
            expect = n.op.shape(*(node(graph, i).shape for i in n.inputs))
            assert tuple(expect) == n.shape, f"{name}: shape {n.shape} != inferred {expect}"
        if isinstance(n.op, COMPUTE_OPS):
            out = n.op.out_channels if isinstance(n.op, ConvTranspose) else n.op.weight.shape[0]
            assert n.op.bias.shape == (out,), f"{name}: bias shape {n.op.bias.shape}"
            assert n.op.weight_scale is None or n.op.weight_scale.shape == (out,), (
                f"{name}: weight_scale shape {n.op.weight_scale.shape}")
        if quantized:
            assert n.scale is not None and n.scale > 0, f"{name}: no positive scale"
            assert isinstance(n.op, Input) or n.q is not None or isinstance(n.op, LAYOUT_OPS), (
                f"{name}: no integer parameters")
    for name in declared:
        assert name in graph and isinstance(node(graph, name).op, Input), f"{name}: bad input"
    for name in graph.graph["outputs"]:
        assert name in graph, f"output {name} missing"
    return graph
