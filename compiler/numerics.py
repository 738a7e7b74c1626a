"""A layer's integer constants in the form the machine reads them.

The quantizer (:mod:`flexigan.compiler.quant`) gives a compute node int8 weights, an int32 bias
and a :class:`~flexigan.compiler.quant.Requant`, and a fused activation a
:class:`~flexigan.compiler.quant.Lut`. POST computes
``sat8((acc * multiplier + ((1 << shift) >> 1)) >> shift)`` with ``acc`` started at the bias,
which is ``Requant.apply`` for a zero offset (the quantizer's offset is only used by standalone
Affine ops); the LUT is the activation's table. :class:`Post` packs them into PARAM entries and
LUT tables, per lane tile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..hw.arch.isa import PARAM_DTYPE
from ..hw.arch.numerics import NORM_WEIGHT
from . import ir

__all__ = ["Post", "NormPost", "post", "norm_post"]


@dataclass(frozen=True, eq=False)
class Post:
    """Constants of one layer: ``weight`` int8 in the IR op's layout, and per output channel
    ``bias`` (int32 values), ``multiplier`` (int16), ``shift``; ``lut`` is None or int8
    ``(1 or C, 256)``."""

    weight: np.ndarray
    bias: np.ndarray
    multiplier: np.ndarray
    shift: np.ndarray
    lut: np.ndarray | None

    def param_bytes(self, channels):
        """The PARAM entries of output ``channels`` (one per lane), as bytes."""
        entries = np.zeros(len(channels), PARAM_DTYPE)
        entries["bias"] = self.bias[channels]
        entries["multiplier"] = self.multiplier[channels]
        entries["shift"] = self.shift[channels]
        return entries.tobytes()

    def lut_bytes(self, channels):
        """The LUT tables of output ``channels``: one shared table, one per lane, or none."""
        if self.lut is None:
            return b""
        table = self.lut[:1] if self.lut.shape[0] == 1 else self.lut[channels]
        return np.ascontiguousarray(table, dtype=np.int8).tobytes()


@dataclass(frozen=True, eq=False)
class NormPost(Post):
    """The constants of an InstanceNorm's normalizing pass (docs/isa.md, InstanceNorm): the
    weight ``NORM_WEIGHT`` per channel, the LUT, and per channel the PARAM entries its
    statistics RUNs use: the sums' two entries (zero until NORM SAVE writes them) and the
    constants of :class:`~flexigan.compiler.quant.Norm` that NORM FINISH reads."""

    norm: object = None
    count: int = 0

    def param_bytes(self, channels):
        """Per channel, three PARAM entries: two for its sums, then its constants."""
        entries = np.zeros((len(channels), 3), PARAM_DTYPE)
        entries["bias"][:, 2] = self.norm.beta[channels]
        entries["multiplier"][:, 2] = self.norm.gain[channels]
        entries["shift"][:, 2] = self.norm.gain_shift[channels]
        return entries.tobytes()


def norm_post(graph, name, activation=None):
    """The :class:`NormPost` of InstanceNorm node ``name`` with its fused ``activation``."""
    n = ir.node(graph, name)
    channels = n.shape[0]
    zeros = np.zeros(channels, np.int64)
    lut = None if activation is None else ir.node(graph, activation).q.table
    weight = np.full((channels, 1, 1, 1), NORM_WEIGHT, np.int8)
    return NormPost(weight, zeros, zeros, zeros, lut, norm=n.q,
                    count=int(np.prod(n.shape[1:])))


def post(graph, compute, activation=None):
    """The :class:`Post` of compute node ``compute`` with its fused ``activation`` (a name or
    None)."""
    q = ir.node(graph, compute).q
    cout = q.bias.shape[0]
    requant = q.requant
    if np.any(requant.offset != 0):
        raise ValueError(f"{compute}: POST has no requantization offset; the quantizer gave "
                         f"a compute layer one")
    lut = None if activation is None else ir.node(graph, activation).q.table
    return Post(q.weight, q.bias, np.broadcast_to(requant.multiplier, (cout,)),
                np.broadcast_to(requant.shift, (cout,)), lut)
