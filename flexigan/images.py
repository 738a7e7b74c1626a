"""Image outputs as pictures: a batch of images tiled into one PNG.

An output is image-shaped when it is ``(N, C, H, W)`` with 1 (grey) or 3 (RGB) channels. Its
values are read as a generator draws them: in [-1, 1] (tanh), or in [0, 1] when none is
negative (sigmoid); values outside are clipped.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from .files import atomic_file

__all__ = ["is_image", "grid", "write_grid"]

#: The largest tile a grid enlarges its images to, in pixels (small images are enlarged by an
#: integer factor up to it).
TILE_PIXELS = 64


def is_image(shape):
    """Whether an output of ``shape`` (batch first) is a batch of grey or RGB images."""
    return len(shape) == 4 and shape[1] in (1, 3) and min(shape[2:]) > 1


def grid(images, columns=None, zoom=None, pad=1):
    """Tile ``images`` ``(N, C, H, W)`` into one uint8 picture, ``(H', W')`` for grey images or
    ``(H', W', 3)`` for RGB, ``columns`` to a row (about a square by default), each pixel
    enlarged ``zoom`` times (up to :data:`TILE_PIXELS` by default), with ``pad`` black pixels
    around every image."""
    images = np.asarray(images, np.float64)
    if not is_image(images.shape):
        raise ValueError(f"images must be of shape (N, 1 or 3, H, W), not {images.shape}")
    n, _, h, w = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    zoom = zoom or max(1, TILE_PIXELS // max(h, w))
    low = -1.0 if images.min() < 0 else 0.0
    pixels = (np.clip((images - low) / (1 - low), 0, 1) * 255).round().astype(np.uint8)
    pixels = pixels.transpose(0, 2, 3, 1).repeat(zoom, axis=1).repeat(zoom, axis=2)
    pixels = np.pad(pixels, ((0, -n % columns), (pad, 0), (pad, 0), (0, 0)))
    rows, h, w, c = len(pixels) // columns, *pixels.shape[1:]
    tiled = pixels.reshape(rows, columns, h, w, c).transpose(0, 2, 1, 3, 4)
    tiled = np.pad(tiled.reshape(rows * h, columns * w, c), ((0, pad), (0, pad), (0, 0)))
    return tiled[..., 0] if c == 1 else tiled


def write_grid(path, images):
    """Write the :func:`grid` of ``images`` to the PNG ``path``, whole or not at all."""
    with atomic_file(path) as f:
        Image.fromarray(grid(images)).save(f, format="PNG")
