"""A compiled program: the external-memory image and the map of what lies where.

The image is what the accelerator's external memory holds before a frame: the global
instructions at address 0 (the controller starts there), then the :data:`REGIONS`: the
micro-programs, the constant tiles (weights, PARAM entries, LUTs), a zero region (for clearing
padded buffers), the model's input and output regions, spilled tensors and the
performance-counter block, each piece of data aligned to :data:`~flexigan.compiler.plan.ALIGN`.
The back end fills the regions through an :class:`ImageBuilder` and refers to their contents by
``(region, offset)`` until :meth:`ImageBuilder.link` lays them out. ``layout`` says where each
of those is, how a tensor's logical elements map to bytes of its region (a
:class:`~flexigan.compiler.grid.Grid`), and the per-layer schedule; it is plain JSON.

A folder written by :meth:`Program.save` holds ``program.bin`` (the global instructions),
``memory.bin`` (the whole image), ``program.s`` (the listing of both levels) and
``program.json`` (config and layout); :func:`load_program` reads it back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelError, UsageError
from ..hw.arch import isa
from ..hw.arch.config import AcceleratorConfig
from . import asm
from .grid import Grid
from .plan.memory import align

__all__ = ["Program", "load_program", "tensor_addresses", "ImageBuilder", "REGIONS"]

#: The regions of the image after the global program, in address order.
REGIONS = ("uops", "constants", "zeros", "inputs", "outputs", "spills", "counters")


def tensor_addresses(entry, frame=0):
    """Byte addresses (in the image) of a tensor's elements in frame ``frame`` of the batch, in
    logical order and shape.

    ``entry`` is one value of ``layout["inputs"]`` or ``layout["outputs"]``: its region
    ``addr`` (frame 0's), logical ``shape``, ``grid`` (see
    :class:`~flexigan.compiler.grid.Grid`) and ``frame_bytes`` (from one frame's copy to the
    next's).
    """
    offsets = Grid.from_dict(entry["grid"]).addresses()
    return entry["addr"] + frame * entry.get("frame_bytes", 0) + offsets.reshape(entry["shape"])


class ImageBuilder:
    """A memory image under construction: data in named :data:`REGIONS`, deduplicated by
    content, each piece aligned."""

    def __init__(self):
        self.regions = {}
        self.seen = {}

    def put(self, region, data):
        """Reference ``(region, offset)`` of ``data`` appended (once) to ``region``."""
        key = (region, data)
        if key not in self.seen:
            blob = self.regions.setdefault(region, bytearray())
            self.seen[key] = (region, len(blob))
            blob += data + bytes(align(len(data)) - len(data))
        return self.seen[key]

    def reserve(self, region, size):
        """Reference ``(region, offset)`` of ``size`` zero bytes appended to ``region``."""
        blob = self.regions.setdefault(region, bytearray())
        ref = (region, len(blob))
        blob += bytes(align(size))
        return ref

    def link(self, code):
        """Lay the image out: the global instructions ``code`` (``(op, operands)``, where an
        operand ``(region, offset)`` is a reference) encoded at address 0, then the regions.

        Returns
        -------
        image : bytes
        address : callable
            The address of a reference (an integer is its own address).
        layout : dict
            The layout's ``regions`` (name -> ``[addr, bytes]``, the code's and those of the
            regions used) and ``uop_programs`` (``[addr, micro-ops]`` of each micro-program).
        """
        base = {"code": 0}
        at = align(len(code) * isa.GLOBAL_BYTES)
        for name in REGIONS:
            base[name] = at
            at += len(self.regions.get(name, b""))

        def address(value):
            return base[value[0]] + value[1] if isinstance(value, tuple) else value

        image = bytearray(at)
        encoded = b"".join(asm.encode("global", op, **{k: address(v) for k, v in operands.items()})
                           for op, operands in code)
        image[:len(encoded)] = encoded
        for name in REGIONS:
            blob = self.regions.get(name, b"")
            image[base[name]:base[name] + len(blob)] = blob
        regions = {"code": [0, len(encoded)]}
        regions.update({name: [base[name], len(self.regions[name])]
                        for name in REGIONS if name in self.regions})
        uop_programs = [[base["uops"] + offset, len(data) // isa.UOP_BYTES]
                        for (region, data), (_, offset) in self.seen.items() if region == "uops"]
        return bytes(image), address, {"regions": regions, "uop_programs": sorted(uop_programs)}


@dataclass
class Program:
    """A compiled model for one :class:`~flexigan.hw.arch.config.AcceleratorConfig`.

    Attributes
    ----------
    config : AcceleratorConfig
    image : bytes
        The external-memory image; the global program starts at address 0.
    layout : dict
        JSON-able map: ``code`` (instruction count), ``batch`` (frames per run), ``regions``
        (name -> ``[addr, bytes]``), ``inputs``/``outputs`` (name -> ``addr``, ``shape``,
        ``scale``, ``grid``, ``frame_bytes``),
        ``counters`` (address of the COUNTERS block), ``layers`` (the schedule: per layer its
        name, op, instruction range ``[first, last)``, stages, work units and groups used).
    """

    config: AcceleratorConfig
    image: bytes
    layout: dict

    @property
    def batch(self):
        """Frames one run of the program computes (``flexigan compile --batch``)."""
        return self.layout.get("batch", 1)

    def runs(self, samples):
        """Runs of the program that compute ``samples`` samples; a
        :class:`~flexigan.errors.UsageError` unless they are a multiple of :attr:`batch`."""
        if samples % self.batch:
            raise UsageError(f"the program runs {self.batch} frames at once (compiled with "
                             f"--batch {self.batch}): give a multiple of {self.batch} samples, "
                             f"not {samples}")
        return samples // self.batch

    def frame(self, inputs_int8, n=0):
        """The image with run ``n``'s samples of ``inputs_int8`` (name -> ``(N, *shape)`` int8
        values), samples ``n*batch`` to ``(n+1)*batch - 1``, placed in the frames' input
        regions: what external memory holds before that run."""
        image = np.frombuffer(self.image, np.uint8).copy()
        for name, entry in self.layout["inputs"].items():
            for frame in range(self.batch):
                sample = np.asarray(inputs_int8[name][n * self.batch + frame])
                image[tensor_addresses(entry, frame)] = sample.astype(np.int8).view(np.uint8)
        return image.tobytes()

    def outputs(self, memory, frame=0):
        """The model's outputs (name -> int8 array) of frame ``frame`` of the batch in external
        ``memory`` after a run."""
        memory = np.frombuffer(bytes(memory), np.uint8)
        return {name: memory[tensor_addresses(entry, frame)].view(np.int8)
                for name, entry in self.layout["outputs"].items()}

    @property
    def code(self):
        """The global instructions (``program.bin``)."""
        return self.image[:self.layout["code"] * isa.GLOBAL_BYTES]

    def listing(self):
        """Assembly listing of the global program, then of every micro-program."""
        lines = [f"# flexigan program: {self.layout['code']} global instructions", ""]
        starts = {layer["first"]: layer for layer in self.layout["layers"]}
        for index, line in enumerate(asm.disassemble(self.code).splitlines()):
            if index in starts:
                layer = starts[index]
                lines.append(f"# layer {layer['name']} ({layer['op']})")
            lines.append(line)
        for addr, count in self.layout["uop_programs"]:
            lines += ["", f"# micro-program at {addr:#x}, {count} micro-ops"]
            lines += asm.disassemble(self.image[addr:addr + count * isa.UOP_BYTES],
                                     "uop").splitlines()
        return "\n".join(lines) + "\n"

    def save(self, folder):
        """Write ``program.bin``, ``memory.bin``, ``program.s`` and ``program.json``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "program.bin").write_bytes(self.code)
        (folder / "memory.bin").write_bytes(self.image)
        (folder / "program.s").write_text(self.listing())
        (folder / "program.json").write_text(json.dumps(
            {"config": self.config.to_dict(), "layout": self.layout}, indent=1) + "\n")


def load_program(folder):
    """The :class:`Program` saved in ``folder``; a :class:`~flexigan.errors.ModelError` (one
    line) when its files are missing, do not parse, or disagree (an image shorter than its
    layout)."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "program.json").read_text())
        program = Program(AcceleratorConfig(**meta["config"]),
                          (folder / "memory.bin").read_bytes(), meta["layout"])
        end = max(addr + size for addr, size in program.layout["regions"].values())
    except OSError as exc:
        raise ModelError(f"cannot read the program in {folder}: {exc.strerror} "
                         f"({exc.filename})") from None
    except Exception as exc:  # json, a missing key, a wrong type or a bad config
        text = " ".join(str(exc).split())
        raise ModelError(f"{folder / 'program.json'} is damaged ({type(exc).__name__}: "
                         f"{text}); compile again") from None
    if len(program.image) < end:
        raise ModelError(f"{folder / 'memory.bin'} holds {len(program.image)} bytes, its layout "
                         f"{end}; compile again")
    return program
