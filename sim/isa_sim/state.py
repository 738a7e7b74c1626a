"""The machine state that the instructions act on, and the checks of every address they use.

:class:`MachineState` holds docs/isa.md's "Machine state" table for one
:class:`~flexigan.hw.arch.config.AcceleratorConfig`: external memory, the shared ACT scratchpad,
each group's WGT, PARAM, LUT and UOP memories, the crossbar routes, and the counters that count
what the instructions do (MACs, DMA bytes, RUNs). The counters of time (cycles, busy and stall
cycles) belong to the cycle model (:mod:`.cycle_model`). An address outside its memory is a
:class:`ProgramError`, raised before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...errors import FlexiganError
from ...hw.arch import isa
from ...hw.arch.config import AcceleratorConfig

__all__ = ["ProgramError", "MachineState", "check_run_addresses"]


class ProgramError(FlexiganError, ValueError):
    """The program does something the ISA does not define (bad opcode, address out of range):
    a corrupt or foreign program image, reported to the user as one line."""


@dataclass(eq=False)
class MachineState:
    """Every memory of the machine and the counters of what it did.

    Attributes
    ----------
    config : AcceleratorConfig
    memory : uint8 array
        External memory.
    act : int8 array
        The shared activation scratchpad, ``config.act_bytes``.
    wgt : int8 array
        ``(groups, weight_bytes)``: each group's weight buffer.
    param : PARAM_DTYPE array
        ``(groups, param_entries)``: each group's post-processing parameters.
    lut : int8 array
        ``(groups, lut_tables, LUT_BYTES)``: each group's activation tables.
    uop : object array of int
        ``(groups, uop_depth)``: each group's micro-op memory, one encoded micro-op per entry.
    route : list of (int, int)
        Per group, the first bank and the bank count its crossbar port reads.
    macs_issued, macs_skipped, dma_bytes, runs : int
        The counters of work (COUNTERS RESET zeroes them).
    dma_bytes_by_space : dict of Space to int
        DMA bytes per on-chip memory since the start (COUNTERS does not reset it).
    """

    config: AcceleratorConfig
    memory: np.ndarray
    act: np.ndarray
    wgt: np.ndarray
    param: np.ndarray
    lut: np.ndarray
    uop: np.ndarray
    route: list
    macs_issued: int = 0
    macs_skipped: int = 0
    dma_bytes: int = 0
    runs: int = 0
    dma_bytes_by_space: dict = field(default_factory=lambda: dict.fromkeys(isa.Space, 0))

    @classmethod
    def power_on(cls, image, config):
        """The machine as it starts: external memory holds a copy of ``image``, every on-chip
        memory is zero and every group reads all banks."""
        groups = config.groups
        uop = np.zeros((groups, config.uop_depth), dtype=object)
        uop[:] = 0
        return cls(config=config,
                   memory=np.frombuffer(bytearray(image), dtype=np.uint8).copy(),
                   act=np.zeros(config.act_bytes, np.int8),
                   wgt=np.zeros((groups, config.weight_bytes), np.int8),
                   param=np.zeros((groups, config.param_entries), isa.PARAM_DTYPE),
                   lut=np.zeros((groups, config.lut_tables, isa.LUT_BYTES), np.int8),
                   uop=uop,
                   route=[(0, config.act_banks)] * groups)

    def reset_counters(self):
        """COUNTERS RESET of the counters of work."""
        self.macs_issued = self.macs_skipped = self.dma_bytes = self.runs = 0

    # --- address checks --------------------------------------------------------------------

    def external(self, addr, length):
        """The slice of external memory ``[addr, addr + length)``, which must lie in it."""
        if addr + length > len(self.memory):
            raise ProgramError(f"external access [{addr:#x}, {addr + length:#x}) beyond the "
                               f"{len(self.memory)}-byte image")
        return slice(addr, addr + length)

    def local(self, space, addr, length):
        """The slice of units of ``space`` that ``length`` bytes from unit ``addr`` fill (a
        whole number of units, inside the memory)."""
        size, unit = self.config.local_units(space), isa.unit_bytes(space)
        if length % unit or addr + length // unit > size:
            raise ProgramError(f"{space.name} access of {length} bytes at {addr} does not fit "
                               f"{size} entries of {unit} bytes")
        return slice(addr, addr + length // unit)

    @property
    def all_groups(self):
        """Every group of the machine."""
        return list(range(self.config.groups))

    def groups(self, mask):
        """The groups set in a group mask, which must name no group beyond the machine's."""
        groups = [g for g in range(self.config.groups) if mask >> g & 1]
        if mask >> self.config.groups:
            raise ProgramError(f"group mask {mask:#x} names groups beyond {self.config.groups}")
        return groups


def check_run_addresses(name, addresses, size):
    """Every one of a RUN's ``name`` addresses (an integer array) must lie in ``[0, size)``."""
    if addresses.size and (addresses.min() < 0 or addresses.max() >= size):
        raise ProgramError(f"RUN {name} address {int(addresses.min())}.."
                           f"{int(addresses.max())} outside [0, {size})")
