"""The accelerator: the global controller, the crossbar and the engine groups, as one top.

::

    host --AXI4-Lite--> Controller --AXI4--> external memory
                         |  |  |
            route, DMA --+  |  +-- RUN, DMA chunks, counters --> Group 0 .. G-1
                            v                                       |  ^
                         Crossbar (ACT banks) <---- act_rd/act_wr --+--+

No vendor primitives: the memories are :class:`amaranth.lib.memory.Memory`.
"""

from amaranth.hdl import Cat, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from .arch.registers import registers
from .axi import axi4_lite_signature, axi4_signature, register_addr_width
from .controller import Controller
from .crossbar import Crossbar
from .group import Group, act_tag_layout

__all__ = ["Accelerator", "accelerator_signature"]


def accelerator_signature(config):
    """The ports of ``Accelerator(config)`` (and of its Verilog module)."""
    return wiring.Signature({
        "axi": Out(axi4_signature(addr_width=32, data_width=config.axi_data_width)),
        "axil": In(axi4_lite_signature(addr_width=register_addr_width(registers()))),
        "irq": Out(1),
    })


class Accelerator(wiring.Component):
    """One accelerator instance of ``config``.

    Contract: the host loads the program image into external memory, writes the program's
    address to the ``base`` register (and ``bypass`` = 1 to disable zero skipping), writes
    ``start``; the accelerator runs the program as the instruction-level simulator does
    (:mod:`flexigan.sim.isa_sim`, bit-exact) and raises ``irq`` (and ``status`` done) at END.
    The register map is :func:`flexigan.hw.controller.registers`.

    Parameters
    ----------
    config : AcceleratorConfig

    Attributes
    ----------
    axi : Out(axi4_signature(addr_width=32, data_width=config.axi_data_width))
    axil : In(axi4_lite_signature(addr_width=...))
    irq : Out(1)
        High from END until the next start.
    """

    def __init__(self, config):
        self._config = config
        self._controller = Controller(config)
        super().__init__(accelerator_signature(config))

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        m.submodules.controller = ctrl = self._controller
        m.submodules.crossbar = xbar = Crossbar(cfg, act_tag_layout(cfg))
        connect(m, flipped(self.axi), ctrl.axi)
        connect(m, flipped(self.axil), ctrl.axil)
        connect(m, ctrl.act_rd, xbar.dma_rd)
        connect(m, ctrl.act_wr, xbar.dma_wr)
        connect(m, ctrl.route, xbar.route)
        m.d.comb += [self.irq.eq(ctrl.done), xbar.clear.eq(ctrl.clear)]
        busy, error = [], []
        for g in range(cfg.groups):
            m.submodules[f"group{g}"] = group = Group(cfg)
            connect(m, ctrl.run[g], group.run)
            connect(m, ctrl.dma[g], group.dma)
            connect(m, group.act_rd, xbar.rd[g])
            connect(m, group.act_wr, xbar.wr[g])
            m.d.comb += [
                ctrl.slots[g].eq(group.slots),
                ctrl.macs_issued[g].eq(group.macs_issued),
                ctrl.macs_skipped[g].eq(group.macs_skipped),
                ctrl.stalls[g].eq(xbar.stalls[g]),
                group.bypass.eq(ctrl.bypass),
                group.clear.eq(ctrl.clear),
            ]
            busy.append(group.busy)
            error.append(group.error)
        m.d.comb += [ctrl.group_busy.eq(Cat(busy)), ctrl.group_error.eq(Cat(error))]
        return m
