"""Write grids of images as PNG with the standard library only (no imaging dependency)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

__all__ = ["image_grid", "write_png"]


def image_grid(images, columns, pad=1, low=-1.0, high=1.0, zoom=1):
    """Tile ``images`` (N, C, H, W), C in (1, 3), into one uint8 (H', W', C) array.

    Values are mapped linearly from [low, high] to [0, 255]; each image is enlarged ``zoom``
    times by pixel repetition.
    """
    images = np.asarray(images, dtype=np.float64)
    n, c, h, w = images.shape
    if c not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, not {c}")
    scaled = np.clip((images - low) / (high - low), 0, 1) * 255
    scaled = scaled.repeat(zoom, axis=2).repeat(zoom, axis=3)
    h, w = h * zoom, w * zoom
    rows = -(-n // columns)
    grid = np.zeros((rows * (h + pad) + pad, columns * (w + pad) + pad, c), dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + k * (w + pad)
        grid[top:top + h, left:left + w] = scaled[i].transpose(1, 2, 0).round()
    return grid


def write_png(path, pixels):
    """Write a uint8 (H, W, 1 or 3) array as an 8-bit grey or RGB PNG."""
    pixels = np.asarray(pixels, dtype=np.uint8)
    h, w, c = pixels.shape
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(h))

    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", w, h, 8, 0 if c == 1 else 2, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
