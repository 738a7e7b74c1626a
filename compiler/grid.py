"""Where each element of a stored tensor lies: the one definition of tensor addressing.

A tensor of logical shape ``(C, H, W)`` is stored as an HWC array of ``rows x cols`` pixels of
``C`` bytes (channel fastest). Usually the array is the tensor (``rows, cols == H, W``); the
conventional baseline stores a tensor spread out, with the padding and inserted zeros its
reader needs around and between the logical pixels. The plan places every tensor with a
:class:`Grid` (:mod:`flexigan.compiler.plan`), and the program's layout records the grids of
the model's inputs and outputs so that the host, the simulators and the tests find their bytes
(:func:`flexigan.compiler.program.tensor_addresses`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Grid"]


@dataclass(frozen=True)
class Grid:
    """Placement of a ``(C, H, W)`` tensor in an HWC array of ``rows x cols x C`` bytes.

    Logical pixel ``(h, w)`` sits at row ``off_h + h*step_h``, column ``off_w + w*step_w``; the
    other pixels of the array are zeros (the padding and inserted zeros of the conventional
    baseline). Channel is the fastest axis.
    """

    channels: int
    height: int
    width: int
    rows: int
    cols: int
    off_h: int = 0
    off_w: int = 0
    step_h: int = 1
    step_w: int = 1

    @classmethod
    def dense(cls, shape):
        """The grid of a tensor stored as it is: ``(C, H, W)``, or ``(C,)`` as ``(C, 1, 1)``."""
        channels, height, width = (tuple(shape) + (1, 1))[:3]
        return cls(channels, height, width, height, width)

    @classmethod
    def from_dict(cls, fields):
        """The grid whose :meth:`to_dict` is ``fields`` (as in a program's layout)."""
        return cls(**fields)

    def to_dict(self):
        return asdict(self)

    @property
    def shape(self):
        return (self.channels, self.height, self.width)

    @property
    def size(self):
        """Bytes of the array."""
        return self.rows * self.cols * self.channels

    @property
    def row_bytes(self):
        return self.cols * self.channels

    @property
    def gapped(self):
        """Whether the array holds zeros between or around the pixels."""
        return self.size != self.channels * self.height * self.width

    def row(self, h):
        """Array row of logical row ``h``."""
        return self.off_h + h * self.step_h

    def addr(self, c, h, w):
        """Byte offset of element ``(c, h, w)`` (integers or broadcastable arrays)."""
        return (self.row(h) * self.cols + self.off_w + w * self.step_w) * self.channels + c

    def addresses(self):
        """Byte offsets of every element, shape ``(C, H, W)`` (logical CHW order)."""
        c, h, w = np.ogrid[:self.channels, :self.height, :self.width]
        return self.addr(c, h, w)
