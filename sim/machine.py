"""The simulated machine: the accelerator's Verilog with its external memory in the design.

:class:`Machine` is the top that :func:`flexigan.sim.rtl.run_programs` simulates: the
accelerator (module :data:`flexigan.hw.verilog.TOP`, the Verilog that ``flexigan compile`` writes
and caches per configuration, instantiated rather than elaborated again) behind an
:class:`~flexigan.sim.memory.ExternalMemory` of the configuration's latency. The accelerator
leaves reset a cycle after the machine (its reset is registered). The host's
AXI4-Lite port, ``irq`` and the memory's backdoor (``load``, ``dump``, ``rows``) are the ports.
"""

from amaranth.hdl import ClockSignal, Instance, Module, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from ..hw.accelerator import accelerator_signature
from ..hw.verilog import TOP
from .memory import ExternalMemory

__all__ = ["MACHINE", "MEMORY_BYTES", "memory_bytes", "Machine"]

#: The simulated machine's module name.
MACHINE = "flexigan_machine"
#: External memory of a configuration without ``memory_bytes`` (the ``sim`` target's, "as
#: much as the image needs"): enough for every example network's image.
MEMORY_BYTES = 1 << 24


def memory_bytes(config):
    """Bytes of the simulated external memory for ``config``: its ``memory_bytes`` rounded up
    to a power of two, or :data:`MEMORY_BYTES`."""
    if config.memory_bytes is None:
        return MEMORY_BYTES
    return 1 << (config.memory_bytes - 1).bit_length()


class Machine(wiring.Component):
    """``Accelerator(config)`` as Verilog module :data:`~flexigan.hw.verilog.TOP`, with its AXI4
    master on an :class:`ExternalMemory` of :func:`memory_bytes` and ``config.mem_latency``.

    Attributes
    ----------
    axil : In(axi4_lite_signature(...))
        The accelerator's register port.
    irq : Out(1)
    load, dump : In(1)
    rows : In(32)
        The memory's backdoor (see :class:`ExternalMemory`).
    """

    def __init__(self, config):
        self._config = config
        self._ports = accelerator_signature(config)
        super().__init__({"axil": self._ports.members["axil"], "irq": Out(1),
                          "load": In(1), "dump": In(1), "rows": In(32)})

    def elaborate(self, platform):
        m = Module()
        config = self._config
        m.submodules.memory = memory = ExternalMemory(memory_bytes(config),
                                                      config.axi_data_width, config.mem_latency)
        accelerator = self._ports.create()
        # The accelerator's reset through a register, as a board's reset synchronizer: then no
        # input of the accelerator follows a top-level input within a cycle, and Verilator does
        # not evaluate the engine groups' and scoreboards' blocks (built once for all their
        # instances, flexigan.sim.shared_modules) again at every clock edge: 26% more cycles/s
        # on the 16 x 8 machine (docs/user-guide.md, "RTL simulation").
        reset = Signal(init=1, reset_less=True)
        m.d.sync += reset.eq(ResetSignal())
        m.submodules.accelerator = Instance(TOP, i_clk=ClockSignal(), i_rst=reset,
                                            **_instance_ports(self._ports, accelerator))
        connect(m, accelerator.axi, memory.axi)
        connect(m, flipped(self.axil), accelerator.axil)
        m.d.comb += [self.irq.eq(accelerator.irq), memory.load.eq(self.load),
                     memory.dump.eq(self.dump), memory.rows.eq(self.rows)]
        return m


def _instance_ports(signature, interface):
    """``Instance`` keyword arguments binding the Verilog ports of a component of
    ``signature`` (``axi__read__araddr`` ...) to ``interface``'s signals."""
    return {f"{'o' if member.flow == Out else 'i'}_{'__'.join(map(str, path))}": value
            for path, member, value in signature.flatten(interface)}
