"""What the board files share: the board design, the build with the pip-installed tools.

:class:`BoardDesign` puts the board top behind a board's PLL, UART and LED; a board file names
its resources and its PLL. :func:`build_board` runs the platform's build with the WebAssembly
Yosys and nextpnr (the yowasp packages) and reads nextpnr's report back;
:func:`connect_uart_and_led` joins the board top's ``rx``/``tx`` to the board's UART and its
``irq`` to an LED.
"""

import json
import os
import sysconfig
from pathlib import Path

from amaranth.hdl import ClockDomain, Elaboratable, Module
from amaranth.lib import io

from .top import BoardTop

__all__ = ["BoardDesign", "build_board", "connect_uart_and_led"]

#: The host bridge's baud rate on every board.
BAUD = 115_200


class BoardDesign(Elaboratable):
    """:class:`~flexigan.boards.top.BoardTop` of ``config`` and ``memory_bytes`` on a board,
    clocked at the PLL's achieved frequency nearest ``config.clock_mhz``; the UART divisor is
    for :data:`BAUD` at that clock.

    A board file subclasses it with ``OSCILLATOR`` (resource name, MHz), ``LED`` (the
    ``platform.request`` arguments of the LED ``irq`` lights), ``pll_mhz(f_in, f_out)`` (the
    achieved frequency) and ``clock(m, platform)`` (the PLL that drives ``sync``).
    """

    BAUD = BAUD

    def __init__(self, config, memory_bytes):
        self.clock_mhz = self.pll_mhz(self.OSCILLATOR[1], config.clock_mhz)
        self.divisor = round(self.clock_mhz * 1e6 / BAUD)
        self.top = BoardTop(config, memory_bytes, self.divisor)

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain()
        self.clock(m, platform)
        m.submodules.top = top = self.top
        connect_uart_and_led(m, top, platform.request("uart", dir="-"),
                             platform.request(*self.LED, dir="-"))
        return m


def connect_uart_and_led(m, top, uart, led):
    """Buffers between ``top`` (a :class:`~flexigan.boards.top.BoardTop`) and the board's
    ``uart`` and ``led`` resources (requested with ``dir="-"``)."""
    m.submodules.rx = rx = io.Buffer("i", uart.rx)
    m.submodules.tx = tx = io.Buffer("o", uart.tx)
    m.submodules.led = led = io.Buffer("o", led)
    m.d.comb += [top.rx.eq(rx.i), tx.o.eq(top.tx), led.o.eq(top.irq)]


def build_board(platform, board, out_dir, tools, do_program=False):
    """Place and route ``board`` on ``platform`` in ``out_dir`` with the pip-installed tools.

    ``tools`` are the environment variables that point Amaranth at them; the environment is
    restored afterwards. ``out_dir`` should be relative: the WebAssembly tools see only the
    current directory tree. Returns the bitstream's path and nextpnr's report as
    ``{"fmax": {clock: (achieved, constraint)}, "utilization": {cell: (used, available)}}``
    (MHz; cells by their primitive names).
    """
    saved = dict(os.environ)
    os.environ.update(tools)
    # The yowasp commands are installed next to this interpreter, which may not be on PATH.
    os.environ["PATH"] = sysconfig.get_path("scripts") + os.pathsep + os.environ.get("PATH", "")
    try:
        platform.build(board, name="top", build_dir=out_dir, do_program=do_program,
                       nextpnr_opts="--report report.json")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    out = Path(out_dir)
    report = json.loads((out / "report.json").read_text())
    bitstream = out / ("top.bit" if platform.family == "ecp5" else "top.bin")
    return bitstream, {
        "fmax": {clock: (value["achieved"], value["constraint"])
                 for clock, value in report["fmax"].items()},
        "utilization": {cell: (value["used"], value["available"])
                        for cell, value in report["utilization"].items()},
    }
