"""The global controller's loop: fetch each instruction, run its semantics, time it.

:func:`run` executes a memory image (global program at address 0) on an
:class:`~flexigan.hw.arch.config.AcceleratorConfig`, decoding with :mod:`flexigan.hw.arch.isa`,
exactly as docs/isa.md specifies: :mod:`.semantics` changes the :class:`~.state.MachineState`,
and :mod:`.cycle_model` times what it did. The numerics are bit-exact with the golden
interpreter (:func:`flexigan.sim.golden.run_int`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ...hw.arch import isa
from . import semantics
from .cycle_model import CycleModel
from .state import MachineState, ProgramError

__all__ = ["Result", "run"]


@dataclass
class Result:
    """What a run leaves: the memory, total cycles, and per-instruction traces.

    ``time[i]`` is the controller's clock after instruction ``i`` (for BARRIER its release,
    for END the end of all work); ``macs_issued``, ``macs_skipped`` and ``dram_bytes`` are per
    instruction; ``busy``/``stall`` are per group; ``dram_by_space`` splits the DMA bytes by
    on-chip memory (``ACT`` traffic is per frame, the rest is the model's constants);
    ``timeline`` holds the cycle model's ``runs`` and ``dmas``
    (:class:`~.cycle_model.CycleModel`).
    """

    memory: np.ndarray
    cycles: int
    time: np.ndarray
    macs_issued: np.ndarray
    macs_skipped: np.ndarray
    dram_bytes: np.ndarray
    busy: list
    stall: list
    runs: int
    counters: dict
    dram_by_space: dict
    timeline: dict


@functools.cache
def _decode_global(word):
    return isa.decode_global(word)


def _fetch(state, pc):
    """The global instruction at ``pc``, decoded."""
    word = int.from_bytes(state.memory[state.external(pc, isa.GLOBAL_BYTES)].tobytes(), "little")
    try:
        return _decode_global(word)
    except ValueError:
        raise ProgramError(f"bad global instruction at {pc:#x}") from None


def _counters(state, clock, instructions):
    """The performance counters (name -> value) after ``instructions`` instructions, as the
    hardware keeps them: modulo ``2 ** config.counter_bits``, zero if not in
    ``config.counters``."""
    counts = {"cycles": clock.now, "macs_issued": state.macs_issued,
              "macs_skipped": state.macs_skipped, "dma_bytes": state.dma_bytes,
              "busy_cycles": sum(clock.busy), "stall_cycles": sum(clock.stall),
              "runs": state.runs, "instructions": instructions}
    kept, bits = state.config.counters, state.config.counter_bits
    return {name: int(value) % (1 << bits) if name in kept else 0
            for name, value in counts.items()}


_DMA = {isa.GlobalOp.DMA_LOAD: semantics.dma_load, isa.GlobalOp.DMA_STORE: semantics.dma_store,
        isa.GlobalOp.UOP_LOAD: semantics.uop_load}


def _execute(state, clock, op, args, sparse, index):
    """Run instruction number ``index`` and book its time; return its MACs issued, its MACs
    skipped and its DMA bytes."""
    if op in _DMA:
        transfer = _DMA[op](state, args)
        clock.dma(transfer)
        return 0, 0, transfer.length
    if op == isa.GlobalOp.RUN:
        issued = skipped = 0
        for group in state.groups(args["group_mask"]):
            record = semantics.run(state, group, args, sparse)
            clock.run(group, args, record)
            issued += record.macs_issued
            skipped += record.macs_skipped
        state.runs += 1
        return issued, skipped, 0
    if op == isa.GlobalOp.ROUTE:
        semantics.route(state, args)
    elif op == isa.GlobalOp.BARRIER:
        clock.barrier(semantics.barrier(state, args))
    elif op == isa.GlobalOp.COUNTERS:
        clock.barrier(state.all_groups)             # the counters of all work so far
        if args["action"] == isa.CounterAction.RESET:
            clock.reset_counters()
        block = semantics.counters(state, args, _counters(state, clock, index + 1))
        if block is not None:
            clock.dma(block)            # END waits for the DMA engine to write the block
    elif op == isa.GlobalOp.END:
        clock.barrier(semantics.end(state))
    return 0, 0, 0


def run(image, config, sparse=True, max_instructions=10_000_000):
    """Execute the global program at address 0 of ``image`` until END.

    Parameters
    ----------
    image : bytes-like
        External memory; not modified (the result holds the memory after the run).
    config : AcceleratorConfig
    sparse : bool
        Whether the sparse core drops zero activations (cycles only; results are identical).
    max_instructions : int
        Instructions after which a program without END is a :class:`ProgramError`.

    Returns
    -------
    Result
    """
    state = MachineState.power_on(image, config)
    clock = CycleModel(config, sparse)
    times, issued, skipped, dram = [], [], [], []
    pc = 0
    while True:
        index = len(times)
        if index >= max_instructions:
            raise ProgramError(f"no END within {max_instructions} instructions")
        clock.fetch(index)
        op, args = _fetch(state, pc)
        pc += isa.GLOBAL_BYTES
        counts = _execute(state, clock, op, args, sparse, index)
        times.append(clock.issue(op, index))
        for trace, count in zip((issued, skipped, dram), counts):
            trace.append(count)
        if op == isa.GlobalOp.END:
            break
    return Result(state.memory, clock.now, np.array(times), np.array(issued), np.array(skipped),
                  np.array(dram), clock.busy, clock.stall, state.runs,
                  _counters(state, clock, len(times)),
                  {space.name: n for space, n in state.dma_bytes_by_space.items()},
                  {"runs": clock.runs, "dmas": clock.dmas})
