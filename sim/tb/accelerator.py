"""Accelerator testbench: runs programs on the RTL of :class:`flexigan.hw.accelerator.Accelerator`.

The pytest side (:func:`flexigan.sim.rtl.run_programs`) writes a manifest, ``JOBS`` in the
environment: a JSON list of jobs, each ``{"image": path, "out": folder, "sparse": bool}``. For
each job the test loads the image at address 0 of the AXI RAM (the rest zero), writes the
``bypass`` and ``base`` registers over AXI4-Lite, writes ``start`` and waits for ``irq``; then it
reads ``status`` and the counters over AXI4-Lite and writes ``memory.bin`` (the external memory,
the image's length) and ``counters.json`` (the counter registers and the cycles the host saw)
to the job's folder, with ``status``, ``pc``, ``seconds`` and ``cpu_seconds`` (the wall and
processor time from ``start`` to ``irq``). A job that does not end (raise ``irq``) within
``MAX_CYCLES`` fails the test; one that ends with the error bit set does not (the pytest side
reads its status).

Other parameters: ``RAM_SIZE`` (bytes), ``PAUSE`` (AXI pause probability), ``STALL`` (the
longest run of pauses), ``SEED``,
``FAULTS`` (``"lo,hi,resp"``: the memory answers SLVERR 2 or DECERR 3 there).
"""

import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.triggers import ClockCycles

from flexigan.hw.arch.isa import COUNTER_NAMES
from flexigan.hw.arch.registers import register_addresses, registers

from . import AxiTB, env_faults, env_float, env_int, write_job

__all__ = ["AcceleratorTB"]

#: Cycles between looks at ``irq``.
POLL = 32


def env_str(name):
    try:
        return os.environ[name]
    except KeyError:
        raise KeyError(f"the testbench needs environment variable {name}") from None


class AcceleratorTB(AxiTB):
    """Memory and host for the accelerator; :meth:`run_program` runs one image."""

    def __init__(self, dut):
        super().__init__(dut, registers=register_addresses(registers()),
                         ram_size=env_int("RAM_SIZE"), pause=env_float("PAUSE", 0.0),
                         stall=env_int("STALL", 1), seed=env_int("SEED", 0),
                         faults=env_faults())
        self.max_cycles = env_int("MAX_CYCLES", 10_000_000)

    async def run_program(self, image, sparse):
        """Run ``image``; the memory after it (the image's length), counters, status and
        pc."""
        self.ram.write(0, bytes(image) + bytes(self.ram.size - len(image)))
        await self.write_register("bypass", 0 if sparse else 1)
        await self.write_register("base", 0)
        started, cpu = time.perf_counter(), time.process_time()
        await self.write_register("start", 1)
        while self.dut.irq.value:          # the previous program's END
            await ClockCycles(self.dut.clk, 1)
        waited = 0
        while not self.dut.irq.value:
            if waited >= self.max_cycles:
                pc = await self.read_register("pc")
                status = await self.read_register("status")
                raise AssertionError(f"the accelerator did not reach END within {waited} "
                                     f"cycles (fetch address {pc:#x}, status {status:#x})")
            await ClockCycles(self.dut.clk, POLL)
            waited += POLL
        seconds = time.perf_counter() - started, time.process_time() - cpu
        status = await self.read_register("status")
        pc = await self.read_register("pc")
        counters = {name: await self.read_register(name, words=2) for name in COUNTER_NAMES}
        memory = self.ram.read(0, len(image))
        return memory, counters, status, pc, seconds


@cocotb.test()
async def runs_programs(dut):
    """Every job of the manifest, one after the other, on one reset."""
    tb = AcceleratorTB(dut)
    await tb.reset()
    jobs = json.loads(Path(env_str("JOBS")).read_text())
    for job in jobs:
        image = Path(job["image"]).read_bytes()
        memory, counters, status, pc, seconds = await tb.run_program(image, job["sparse"])
        write_job(job, memory, counters, status, pc, seconds)
