"""Pass 1: which values are stored, where every other value lives, and the jobs in order.

Each *materialized* value gets a :class:`~.types.Storage`: a model input, a layer's output (a
Conv, ConvTranspose, Gemm, Add or InstanceNorm, with the activation fused into it), a standalone
activation (one that is not the only reader of such a layer: a LUT pass,
:class:`~.types.LutJob`), a channel Concat, an Upsample, DepthToSpace or Pad, and the operand
storage of an Add of two different values (its two operands side by side, as a Concat of 2C
channels, which the Add reads as a two-tap depthwise convolution, taps C channels apart). The
other values are addressing:

* a Reshape aliases its operand's storage;
* an input of a *join* (a Concat, or an Add of two different values) that only its producer
  writes is stored in its channel slice (``slices``), its producer writing there directly
  (with the requantization to the Concat's scale folded into its POST's LUT: ``requant``);
  any other input (a model input or output, a value read elsewhere at its own scale, a
  reshape) is copied in by a :class:`~.types.JoinCopy`. An Add's operands are never
  requantized (the Add's weights carry the scales);
* an activation that is the only reader of a Concat (a U-Net's ReLU of its skip and up
  path) lives in the Concat's storage: every input's producer or copy folds the activation's
  LUT into its own (:class:`~.types.Into`), so the storage holds the activated values and no
  LUT pass runs (``joined``; a per-channel table is not folded);
* a Conv, ConvTranspose or standalone activation read only by an Upsample, DepthToSpace or Pad
  writes its output in place (``scattered``: into the spread's blocks, the Pad's interior);
  the rest of the upsampling is copies (a :class:`~.types.SpreadJob`), and so is a Pad's
  border (a :class:`~.types.PadJob`). A zero Pad read only by Convs is not here: the float
  pass :func:`~flexigan.compiler.passes.fold_pad` made it their padding.

``reorder=False`` (the conventional baseline) gives the input of every Conv and ConvTranspose a
grid with the padding and inserted zeros its reader needs. Every node that cannot be lowered
is reported at once, as an :class:`~flexigan.errors.UnsupportedError`.
"""

from __future__ import annotations

import math

from ...errors import UnsupportedError
from .. import ir
from ..grid import Grid
from .types import (
    Addressing,
    ComputeJob,
    Into,
    JoinCopy,
    LutJob,
    PadJob,
    SpreadJob,
    Storage,
    locate,
)

__all__ = ["assign", "reshape_root", "demand"]

#: The ops that become layers (with a fused activation): the compute ops, residual Add and
#: InstanceNorm.
LAYER_OPS = (*ir.COMPUTE_OPS, ir.Add, ir.InstanceNorm)
_SPREAD_OPS = (ir.Upsample, ir.DepthToSpace)
#: The ops whose value a producer may write in place (:func:`_scattered`).
_PLACED_OPS = (*_SPREAD_OPS, ir.Pad)


def reshape_root(graph, name):
    """The value that ``name`` is a (chain of) Reshape(s) of, or ``name``."""
    while isinstance(ir.node(graph, name).op, ir.Reshape):
        name = ir.node(graph, name).inputs[0]
    return name


def demand(op, axis):
    """Conventional baseline: ``(step, lead, trail)`` that Conv or ConvTranspose ``op`` needs of
    its input's array along ``axis`` (lead/trail zero rows; negative: rows it does not read)."""
    kernel = op.weight.shape[2 + axis]
    dilation = op.dilations[axis]
    if isinstance(op, ir.ConvTranspose):
        return (op.strides[axis], dilation * (kernel - 1) - op.pads[axis],
                dilation * (kernel - 1) - op.pads[2 + axis] + op.output_padding[axis])
    return 1, op.pads[axis], op.pads[2 + axis]


def _fused_activation(graph, name):
    """The Activation fused into compute value ``name`` (possibly through Reshapes that keep
    the channel axis), or None: it must be the only reader, and nothing in between a model
    output."""
    outputs = set(graph.graph["outputs"])
    while True:
        users = ir.consumers(graph, name)
        if len(users) != 1 or name in outputs:
            return None
        user = ir.node(graph, users[0])
        if isinstance(user.op, ir.Reshape):
            name = users[0]
            continue
        if not isinstance(user.op, ir.Activation):
            return None
        per_channel = user.q is not None and user.q.table.shape[0] > 1
        if per_channel and user.shape[0] != ir.node(graph, name).shape[0]:
            return None
        return users[0]


def _compute_jobs(graph, order):
    """``{compute node: ComputeJob}`` of every Conv, ConvTranspose, Gemm, Add and InstanceNorm,
    in order."""
    return {name: ComputeJob(name, _fused_activation(graph, name))
            for name, n in order if isinstance(n.op, LAYER_OPS)}


def _unlowerable(graph, order, fused):
    """``(node, op, reason)`` of every node the back end cannot lower (``fused``: the
    activations fused into layers)."""
    problems = []
    for name, n in order:
        if isinstance(n.op, (ir.Input, *LAYER_OPS, ir.Reshape)) or name in fused:
            continue
        op = type(n.op).__name__
        if isinstance(n.op, _PLACED_OPS):
            shape = ir.node(graph, n.inputs[0]).shape
            if reshape_root(graph, n.inputs[0]) != n.inputs[0] or len(shape) != 3:
                problems.append((name, op, "input is not an image"))
            elif isinstance(n.op, ir.Pad) and n.op.mode == "reflect" and \
                    (max(n.op.pads[0::2]) >= shape[1] or max(n.op.pads[1::2]) >= shape[2]):
                # Each border row mirrors one row of the image, not a reflection of a border.
                problems.append((name, op, "reflect padding as wide as the image"))
        elif isinstance(n.op, ir.Concat):
            if n.op.axis != 0:
                problems.append((name, op, "concatenation along a spatial axis"))
        elif isinstance(n.op, ir.Activation):
            if reshape_root(graph, n.inputs[0]) != n.inputs[0]:
                problems.append((name, op, "standalone activation of a reshape"))
        else:
            problems.append((name, op, "not lowered by the back end yet"))
    return problems


def _operand_storages(graph, order):
    """``{Add: name of its operand storage}`` for every Add of two different values."""
    operands = {}
    for name, n in order:
        if isinstance(n.op, ir.Add) and n.inputs[0] != n.inputs[1]:
            storage = f"{name}:operands"
            while storage in graph:
                storage += "'"
            operands[name] = storage
    return operands


def _scattered(graph, placed, computes, luts):
    """``{value: Upsample, DepthToSpace or Pad}`` for each of ``placed`` whose input is the
    output of a Conv, ConvTranspose, InstanceNorm or standalone activation (``luts``) read by
    nothing else (not a model output): its producer writes the spread's (or Pad's) storage
    directly."""
    outputs = graph.graph["outputs"]
    by_value = {job.output for name, job in computes.items()
                if isinstance(ir.node(graph, name).op,
                              (ir.Conv, ir.ConvTranspose, ir.InstanceNorm))}
    by_value.update(luts)
    scattered = {}
    for spread in placed:
        value = ir.node(graph, spread).inputs[0]
        if value in by_value and value not in outputs and \
                ir.consumers(graph, value) == [spread]:
            scattered[value] = spread
    return scattered


def _stored_shapes(graph, computes, others, operands):
    """The shape each materialized value is stored in: a layer's output in its compute op's
    shape (an activation fused through a Reshape is a view of it), the ``others`` (model
    inputs, Concats, Upsamples, DepthToSpaces, Pads and standalone activations) in their own,
    an Add's operand storage as ``(2C, H, W)``."""
    shapes = {name: ir.node(graph, name).shape for name in others}
    shapes.update({job.output: ir.node(graph, name).shape for name, job in computes.items()})
    for add, storage in operands.items():
        channels, *pixels = ir.node(graph, add).shape
        shapes[storage] = (2 * channels, *pixels)
    return shapes


def _joined(graph, concats):
    """``{Concat: its only reader}`` for each Concat read by one activation with one table,
    neither a model output: the activation is folded into the Concat's inputs."""
    outputs = set(graph.graph["outputs"])
    joined = {}
    for concat in concats:
        readers = ir.consumers(graph, concat)
        if len(readers) != 1 or concat in outputs or readers[0] in outputs:
            continue
        reader = ir.node(graph, readers[0])
        if isinstance(reader.op, ir.Activation) and reader.q.table.shape[0] == 1:
            joined[concat] = readers[0]
    return joined


def _join_inputs(graph, order, concats, operands, stored_shapes, placed, joined):
    """``(slices, copies, requant)``: where the inputs of each join (a Concat, or an Add of two
    different values) go, with the activations ``joined`` to Concats (see the module
    docstring); ``copies`` maps a join to its :class:`~.types.JoinCopy` s."""
    inputs, outputs = set(graph.graph["inputs"]), set(graph.graph["outputs"])
    slices, copies, requant = {}, {}, {}
    for join, join_node in order:
        lut = None
        if join in concats:
            target, requants = join, join_node.q
            if join in joined:
                lut = ir.node(graph, joined[join]).q.table
                slices[joined[join]] = (join, 0)
        elif join in operands:
            target, requants = operands[join], (None, None)
        else:
            continue
        channel = 0
        for value, value_requant in zip(join_node.inputs, requants):
            direct = value in stored_shapes and value not in inputs and value not in outputs \
                and value not in slices and join_node.inputs.count(value) == 1 \
                and value not in placed \
                and not isinstance(ir.node(graph, value).op, ir.Reshape)
            if direct and (value_requant is not None or lut is not None):
                # Requantized or activated: only a layer output that nothing else reads, via
                # its LUT.
                direct = value not in concats and ir.consumers(graph, value) == [join]
                if direct:
                    requant[value] = Into(value_requant, lut)
            if direct:
                slices[value] = (target, channel)
            else:
                copies.setdefault(join, []).append(
                    JoinCopy(join, target, value, channel, value_requant, lut))
            channel += ir.node(graph, value).shape[0]
    return slices, copies, requant


def _reshaped_images(graph, order, stored_shapes, sliced, concats):
    """``(stored_shapes, problems)``: an image read through a reshape of a model input (the
    host lays it out) or of a vector (its producer writes each channel anywhere) is stored as
    that image; any other reshape that a Conv, ConvTranspose or Add reads would move data in
    HWC order."""
    shapes = dict(stored_shapes)
    inputs = graph.graph["inputs"]
    problems = []
    for name, n in order:
        if not isinstance(n.op, ir.Reshape):
            continue
        root = reshape_root(graph, name)
        if root not in shapes:
            continue
        users = [ir.node(graph, u).op for u in ir.consumers(graph, name)]
        if n.shape == shapes[root] or \
                not any(isinstance(u, (ir.Conv, ir.ConvTranspose, ir.Add)) for u in users):
            continue
        if root in sliced or root in concats:
            problems.append((name, "Reshape", "reshape of a concatenated tensor"))
            continue
        own = shapes[root]
        if own == ir.node(graph, root).shape and (root in inputs or math.prod(own[1:]) == 1):
            shapes[root] = n.shape
        else:
            problems.append((name, "Reshape", f"reshape {own} -> {n.shape} moves data in HWC "
                                              "order"))
    return shapes, problems


def _grids(graph, roots, stored_shapes, computes, slices, reorder):
    """``({root: Grid}, problems)``. Zero-free: every root dense. Conventional baseline: the
    padding and zero insertion that its Conv and ConvTranspose readers ask for, which must
    agree on the zero insertion."""
    demands = {root: [] for root in roots}
    if not reorder:
        for name in computes:
            n = ir.node(graph, name)
            if isinstance(n.op, (ir.Conv, ir.ConvTranspose)):
                root = locate(slices, reshape_root(graph, n.inputs[0]))[0]
                demands[root].append((name, [demand(n.op, axis) for axis in range(2)]))
    grids, problems = {}, []
    for root in roots:
        channels, height, width = (tuple(stored_shapes[root]) + (1, 1))[:3]
        readers = demands[root]
        steps = {tuple(needs[axis][0] for axis in range(2)) for _, needs in readers}
        if len(steps) > 1:
            why = f"reads {root!r} with another zero insertion than its other readers"
            problems += [(name, "ConvTranspose", why) for name, _ in readers]
        if len(steps) != 1:
            grids[root] = Grid.dense((channels, height, width))
            continue
        (step_h, step_w), = steps
        lead = [max(0, max(needs[axis][1] for _, needs in readers)) for axis in range(2)]
        trail = [max(0, max(needs[axis][2] for _, needs in readers)) for axis in range(2)]
        grids[root] = Grid(channels, height, width,
                           lead[0] + (height - 1) * step_h + 1 + trail[0],
                           lead[1] + (width - 1) * step_w + 1 + trail[1],
                           lead[0], lead[1], step_h, step_w)
    return grids, problems


def _jobs(order, computes, copies, placed, luts):
    """The jobs in graph order: the copies into each Concat or Add at its place (before the
    Add), each layer, each standalone activation, and the copies writing each Upsample,
    DepthToSpace and Pad."""
    jobs = []
    for name, n in order:
        jobs += copies.get(name, [])
        if name in computes:
            jobs.append(computes[name])
        if name in luts:
            jobs.append(LutJob(name))
        if name in placed:
            jobs.append(PadJob(name) if isinstance(n.op, ir.Pad) else SpreadJob(name))
    return tuple(jobs)


def assign(graph, reorder=True):
    """Pass 1: the :class:`~.types.Addressing` of a quantized IR graph.

    Raises
    ------
    UnsupportedError
        listing every node that cannot be lowered, all at once.
    """
    order = ir.topo_nodes(graph)
    inputs, outputs = list(graph.graph["inputs"]), list(graph.graph["outputs"])
    computes = _compute_jobs(graph, order)
    fused = {job.activation for job in computes.values() if job.activation is not None}
    problems = _unlowerable(graph, order, fused)
    concats = [name for name, n in order if isinstance(n.op, ir.Concat) and n.op.axis == 0]
    operands = _operand_storages(graph, order)
    placed = [name for name, n in order if isinstance(n.op, _PLACED_OPS)]
    joined = _joined(graph, concats)
    luts = [name for name, n in order if isinstance(n.op, ir.Activation) and name not in fused
            and name not in joined.values()]
    scattered = _scattered(graph, placed, computes, luts)
    produced = [job.output for job in computes.values()] + luts
    roots = inputs + [value for value in produced if value not in scattered] \
        + concats + list(operands.values()) + placed
    stored_shapes = _stored_shapes(graph, computes,
                                   [*inputs, *concats, *placed, *luts, *joined.values()],
                                   operands)
    slices, copies, requant = _join_inputs(graph, order, concats, operands, stored_shapes,
                                           placed, joined)
    stored_shapes, reshape_problems = _reshaped_images(graph, order, stored_shapes, slices,
                                                       concats)
    problems += reshape_problems
    roots = [root for root in roots if root not in slices]
    grids, grid_problems = _grids(graph, roots, stored_shapes, computes, slices, reorder)
    problems += grid_problems
    if problems:
        raise UnsupportedError(problems)

    output_roots = {o: locate(slices, reshape_root(graph, o))[0] for o in outputs}
    storages = {}
    for root in roots:
        output = root in output_roots.values()
        home = "dram" if output or root in inputs else "act"
        storages[root] = Storage(root, grids[root], output=output, home=home)
    return Addressing(storages, slices, operands, stored_shapes, requant, scattered,
                      {i: i for i in inputs}, output_roots,
                      _jobs(order, computes, copies, placed, luts))
