"""``flexigan run``: a compiled model on a board, driven over the board's UART bridge.

:class:`BoardEngine` is an engine (see :mod:`flexigan.engines`) whose machine is a board: per
frame it writes the memory image (the whole image for the first frame, the inputs after), sets
``bypass`` and ``base``, starts the program, polls ``status`` until END, and reads the outputs
and the hardware counters back. Its report has the ``isa`` engine's fields computed from the
counters, compared with the golden model and with the instruction-level simulator of the same
configuration. The port is any pyserial URL: ``/dev/ttyUSB0`` for a board,
``socket://127.0.0.1:PORT`` for the simulated one (:mod:`flexigan.boards.simulated`).
"""

from __future__ import annotations

import time

import numpy as np

from .compiler.program import tensor_addresses
from .engines import ENGINES, Engine, Run
from .errors import FlexiganError
from .host import BridgeClient
from .hw.arch.isa import COUNTER_NAMES
from .hw.arch.memory_map import MEMORY_BASE, register_map
from .hw.arch.registers import STATUS_DONE, STATUS_ERROR, stop_message
from .sim import golden, isa_sim

__all__ = ["BoardEngine", "open_port", "BAUD"]

#: The bridge's baud rate (the board files' :data:`flexigan.boards.build.BAUD`).
BAUD = 115_200
_REG = register_map()


def open_port(url, timeout=None):
    """The pyserial port of ``url``; a :class:`FlexiganError` when it cannot be opened.

    The read timeout (seconds) covers the bytes in flight (see
    :meth:`~flexigan.host.BridgeClient.write_bytes`): 2 s on a serial line, 60 s on a socket,
    where a simulated board runs far slower than a line.
    """
    if timeout is None:
        timeout = 60.0 if url.startswith("socket://") else 2.0
    try:
        import serial
    except ImportError:
        raise FlexiganError("running on a board needs pyserial: pip install pyserial") from None
    try:
        return serial.serial_for_url(url, baudrate=BAUD, timeout=timeout)
    except (serial.SerialException, ValueError, OSError) as exc:
        raise FlexiganError(f"cannot open the board's port {url}: {exc}") from None


class BoardEngine(Engine):
    """Runs the model on the board behind the pyserial URL ``port`` (opened when a run starts,
    through :func:`open_port`); a frame that does not reach END within ``timeout`` seconds
    fails."""

    name = "board"
    summary = "the accelerator on a board, over its UART bridge"

    def __init__(self, port, timeout=60.0):
        self.port, self.timeout = port, timeout
        self.client = None

    def run(self, model, inputs, options):
        program = model.program               # a bad folder fails before the port opens
        with open_port(self.port) as port:
            self.client = BridgeClient(port)
            try:
                return self._run(model, program, inputs, options)
            finally:
                self.client = None

    def _run(self, model, program, inputs, options):
        sparse = model.sparse if options.sparse is None else options.sparse
        isa = ENGINES["isa"].run(model, inputs, options)
        runs = program.runs(isa.report["batch"])
        frames, counted = [], {k: 0 for k in COUNTER_NAMES}
        for n in range(runs):
            image = program.frame(inputs, n)
            options.log(f"run {n + 1}/{runs}: loading {'the image' if n == 0 else 'inputs'}"
                        f" ...")
            self._load(program, image, whole=n == 0)
            memory, counters = self._execute(program, image, sparse)
            frames += [program.outputs(memory, f) for f in range(program.batch)]
            counted = {k: counted[k] + counters[k] for k in COUNTER_NAMES}
            options.log(f"run {n + 1}/{runs}: END after {counters['cycles']:,} cycles")
        outputs = {o: np.stack([f[o] for f in frames]) for o in program.layout["outputs"]}
        report = _report(model, inputs, isa, outputs, counted, sparse)
        return Run(outputs, {**report, "port": self.port})

    def _load(self, program, image, whole):
        spans = [(0, len(image))] if whole else \
            [_span(tensor_addresses(e, f)) for e in program.layout["inputs"].values()
             for f in range(program.batch)]
        for lo, hi in spans:
            lo, hi = lo - lo % 4, hi + -hi % 4
            chunk = image[lo:hi] + bytes(hi - lo - len(image[lo:hi]))
            self.client.write_bytes(MEMORY_BASE + lo, chunk)

    def _execute(self, program, image, sparse):
        """Start the loaded program, wait for END; (memory with the outputs, counters)."""
        client = self.client
        client.write_words(_REG["bypass"], [0 if sparse else 1])
        client.write_words(_REG["base"], [0])
        client.write_words(_REG["start"], [1])
        deadline = time.monotonic() + self.timeout
        while not (status := client.read_words(_REG["status"], 1)[0]) & STATUS_DONE:
            if status & STATUS_ERROR or time.monotonic() > deadline:
                break
        if status & STATUS_ERROR or not status & STATUS_DONE:
            pc = client.read_words(_REG["pc"], 1)[0]
            raise FlexiganError(stop_message(status, pc, f"within {self.timeout:g} s"))
        words = client.read_words(_REG[COUNTER_NAMES[0]], 2 * len(COUNTER_NAMES))
        counters = {name: words[2 * k] | words[2 * k + 1] << 32
                    for k, name in enumerate(COUNTER_NAMES)}
        memory = bytearray(len(image))
        for entry in program.layout["outputs"].values():
            lo, hi = _span(np.concatenate([tensor_addresses(entry, f).ravel()
                                           for f in range(program.batch)]))
            lo, hi = lo - lo % 4, hi + -hi % 4
            memory[lo:hi] = client.read_bytes(MEMORY_BASE + lo, hi - lo)[:len(memory) - lo]
        return bytes(memory), counters


def _span(addresses):
    return int(addresses.min()), int(addresses.max()) + 1


def _report(model, inputs, isa, outputs, counted, sparse):
    config = model.program.config
    expect = golden.run_int(model.qgraph, inputs)
    return {
        "engine": "board", "sparse": sparse,
        "bit_exact_vs_golden": all(np.array_equal(v, expect[o]) for o, v in outputs.items()),
        "bit_exact_vs_isa": all(np.array_equal(v, isa.outputs[o]) for o, v in outputs.items()),
        **isa_sim.figures(config, counted["cycles"], isa.report["macs_useful"],
                          counted["macs_issued"], counted["macs_skipped"],
                          counted["dma_bytes"]),
        "isa_cycles": isa.report["cycles"],
        "cycles_vs_isa": round(counted["cycles"] / isa.report["cycles"], 4)
        if isa.report["cycles"] else None,
        "counters": counted, "roofline": isa.report["roofline"],
        "layers_from": "isa", "layers": isa.report["layers"],
    }
