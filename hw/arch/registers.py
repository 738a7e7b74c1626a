"""The global controller's AXI4-Lite register map, as data.

A host (the cocotb testbench, a board's host bridge) needs the names, widths, access and
addresses of the registers, and the meaning of the ``status`` bits, without loading the
hardware; :class:`flexigan.hw.axi.AxiLiteRegisters` builds the register file from the same
fields.
"""

from dataclasses import dataclass

from . import isa

__all__ = ["ACCESS", "RegisterField", "register_addresses", "STATUS_BITS", "STATUS_BUSY",
           "STATUS_DONE", "STATUS_ERROR", "STATUS_BUS_ERROR", "registers", "stop_message"]

#: How the host and the design share a field (see :class:`RegisterField`).
ACCESS = ("rw", "ro", "strobe")
#: Bits of the ``status`` register, least significant first. ``error``: the program stopped
#: before END (an undefined opcode, a group's error or a bus error); ``bus_error``, with
#: ``error``: an AXI4 error response (SLVERR or DECERR) to a fetch or a DMA stopped it.
STATUS_BITS = ("busy", "done", "error", "bus_error")
STATUS_BUSY, STATUS_DONE, STATUS_ERROR, STATUS_BUS_ERROR = (1 << k
                                                            for k in range(len(STATUS_BITS)))


def stop_message(status, pc, limit):
    """The host's one line for a program that did not end well: ``status`` (the register, done
    or not), ``pc`` (the fetch address register) and ``limit`` (the wait, "within 60 s")."""
    if status & STATUS_BUS_ERROR:
        what = "stopped on a bus error (AXI SLVERR/DECERR)"
    elif status & STATUS_ERROR:
        what = "stopped with its error bit set (an undefined opcode or a group's error)"
    else:
        what = f"did not reach END {limit}"
    return f"the accelerator {what} at fetch address 0x{pc:x} (status 0x{status:x})"


@dataclass(frozen=True)
class RegisterField:
    """One field of a register map.

    Parameters
    ----------
    name : str
        Member name of the field's port.
    width : int
        1 to 64 bits; a field takes ``ceil(width / 32)`` consecutive 32-bit words, least
        significant first.
    access : str
        ``"rw"``: a register the host writes and reads back (port ``Out(width)``);
        ``"ro"``: a value the design drives (port ``In(width)``); reading its first word
        snapshots the upper words, so a 64-bit counter reads consistently low then high;
        ``"strobe"``: writing pulses the port (``Out(width)``) for one cycle with the written
        bits; reads return 0.
    """

    name: str
    width: int
    access: str

    def __post_init__(self):
        if not isinstance(self.width, int) or not 1 <= self.width <= 64:
            raise ValueError(f"RegisterField width must be an integer from 1 to 64, not "
                             f"{self.width!r}")
        if self.access not in ACCESS:
            raise ValueError(f"RegisterField access must be one of {ACCESS}, not "
                             f"{self.access!r}")

    @property
    def words(self):
        return (self.width + 31) // 32


def register_addresses(fields):
    """Byte address of each field's first word: fields in order, each on the next free word."""
    addresses, word = {}, 0
    for f in fields:
        addresses[f.name] = 4 * word
        word += f.words
    return addresses


def registers():
    """The global controller's register map, in address order.

    ``start`` (write 1): run the program at ``base``; ``status``: the :data:`STATUS_BITS`;
    ``base``: byte address of the global program; ``bypass``: 1 disables zero skipping
    (``--no-sparse``); ``pc``: address of the next instruction to fetch; then one 64-bit
    register per counter of :data:`isa.COUNTER_NAMES`.
    """
    return [RegisterField("start", 1, "strobe"), RegisterField("status", len(STATUS_BITS), "ro"),
            RegisterField("base", 32, "rw"), RegisterField("bypass", 1, "rw"),
            RegisterField("pc", 32, "ro"),
            *(RegisterField(name, 64, "ro") for name in isa.COUNTER_NAMES)]
