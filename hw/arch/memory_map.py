"""The board top's address map, as data: where the host bridge sees memory and registers.

The host's 32-bit AXI byte addresses (:mod:`flexigan.host`) split on bit 31::

    0x0000_0000 .. memory_bytes - 1    on-chip memory, at the addresses the accelerator's
                                       program uses (the program image from byte 0)
    0x8000_0000 + register offset      the controller's register file (:func:`registers`)

The accelerator's own AXI4 master port sees only the memory, from byte 0.
"""

from .registers import register_addresses, registers

__all__ = ["MEMORY_BASE", "REGISTERS_BASE", "is_register", "register_map"]

#: Byte address of the on-chip memory's first byte, for the host and the accelerator alike.
MEMORY_BASE = 0x0000_0000
#: Byte address of the register file's first register (``start``); bit 31 selects registers.
REGISTERS_BASE = 0x8000_0000


def is_register(addr):
    """Whether the host's byte address ``addr`` is in the register file (else in memory)."""
    return bool(addr & REGISTERS_BASE)


def register_map():
    """Host byte address of each register of :func:`registers` (name -> address)."""
    return {name: REGISTERS_BASE + offset
            for name, offset in register_addresses(registers()).items()}
