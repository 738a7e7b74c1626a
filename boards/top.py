"""The board top: the accelerator, its on-chip memory and the UART host bridge.

::

    rx, tx --> UartBridge --AXI4-Lite--> decode --+--> OnChipMemory.axil
                                                  +--> Accelerator.axil (registers)
               Accelerator.axi --AXI4--> OnChipMemory.axi           Accelerator.irq --> irq

The host's addresses follow :mod:`flexigan.hw.arch.memory_map`: bit 31 selects the register
file, else the memory. What is left for a board: a clock (PLL) and reset, the platform file
mapping ``rx``, ``tx`` and ``irq`` to pins, and the divisor for its clock and baud rate.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, connect

from ..hw.accelerator import Accelerator
from ..hw.arch.memory_map import REGISTERS_BASE
from ..hw.bridge import TIMEOUT_BITS, UartBridge
from ..hw.onchip import OnChipMemory

__all__ = ["BoardTop"]

#: The bit of the host's byte address that selects the register file (see the memory map).
_REGISTER_BIT = REGISTERS_BASE.bit_length() - 1
#: AXI4-Lite members of each direction, by their channels' prefixes.
_WRITE, _READ = ("aw", "w", "b"), ("ar", "r")


class BoardTop(wiring.Component):
    """An accelerator of ``config`` with ``memory_bytes`` of on-chip memory, run over a UART.

    Contract: the host (:class:`flexigan.host.BridgeClient`) writes the program image to memory
    from byte 0, writes ``base`` and ``start`` at the memory map's register addresses, polls
    ``status`` (or waits for ``irq``) and reads the outputs back from memory. The address
    decode serves one transaction per direction at a time (the bridge issues no more) and adds
    a cycle to each.

    Parameters
    ----------
    config : AcceleratorConfig
    memory_bytes : int
        A positive multiple of ``config.axi_data_width // 8``.
    divisor : int
        Clock cycles per UART bit (see :class:`flexigan.hw.bridge.UartBridge`).
    single_port_memory : bool
        The on-chip memory has one port (iCE40 SPRAM; see :class:`OnChipMemory`).
    timeout_bits : int
        The bridge's timeout for an incomplete frame, in bit times.

    Attributes
    ----------
    rx : In(1)
    tx : Out(1)
    irq : Out(1)
        The accelerator's: high from END until the next start.
    memory : OnChipMemory
    """

    def __init__(self, config, memory_bytes, divisor, single_port_memory=False,
                 timeout_bits=TIMEOUT_BITS):
        row_bytes = config.axi_data_width // 8
        if not isinstance(memory_bytes, int) or memory_bytes <= 0 or memory_bytes % row_bytes:
            raise ValueError(f"BoardTop memory_bytes must be a positive multiple of the AXI "
                             f"width ({row_bytes} bytes), not {memory_bytes!r}")
        self.accelerator = Accelerator(config)
        self.memory = OnChipMemory(memory_bytes, config.axi_data_width, single_port_memory)
        self.bridge = UartBridge(divisor, timeout_bits)
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "irq": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.accelerator = accelerator = self.accelerator
        m.submodules.memory = memory = self.memory
        m.submodules.bridge = bridge = self.bridge
        connect(m, accelerator.axi, memory.axi)
        m.d.comb += [bridge.rx.eq(self.rx), self.tx.eq(bridge.tx), self.irq.eq(accelerator.irq)]
        slaves = [memory.axil, accelerator.axil]      # in the order of the register bit
        _decode(m, bridge.axil, slaves, _WRITE, bridge.axil.awaddr[_REGISTER_BIT],
                bridge.axil.bvalid & bridge.axil.bready)
        _decode(m, bridge.axil, slaves, _READ, bridge.axil.araddr[_REGISTER_BIT],
                bridge.axil.rvalid & bridge.axil.rready)
        return m


def _decode(m, master, slaves, channels, select, done):
    """Route one direction of AXI4-Lite ``master`` to ``slaves[select]``.

    The slave is chosen when the address is offered (the master's valids are held back that
    cycle) and kept until ``done``, the handshake that ends the transaction, so a response is
    routed back by the choice its request made however the master's address changes meanwhile.
    """
    active, chosen = Signal(), Signal(range(len(slaves)))
    opening = getattr(master, f"{channels[0]}valid")
    with m.If(~active & opening):
        m.d.sync += [active.eq(1), chosen.eq(select)]
    with m.If(active & done):
        m.d.sync += active.eq(0)
    members = [(name, member) for name, member in master.signature.members.items()
               if name.startswith(channels)]
    for name, member in members:
        handshake = name.endswith(("valid", "ready"))
        upstream = getattr(master, name)
        for k, slave in enumerate(slaves):
            here = active & (chosen == k)
            if member.flow == Out:
                value = upstream & here if handshake else upstream
                m.d.comb += getattr(slave, name).eq(value)
            else:
                with m.If(here):
                    m.d.comb += upstream.eq(getattr(slave, name))
