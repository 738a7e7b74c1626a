"""Phase-locked loops that make the ``sync`` domain of a board from its oscillator.

:func:`ice40_pll` and :func:`ecp5_pll` choose the dividers for an input and a wanted frequency
the way the vendor-neutral tools do (``icepll`` and ``ecppll`` of Project IceStorm and Project
Trellis): search every legal divider setting and keep the closest output. :class:`ICE40PLL` and
:class:`ECP5PLL` instantiate the primitive with them; both drive ``sync`` from the PLL output and
hold ``sync`` in reset until the PLL reports lock (a reset synchronizer, so reset leaves
``sync`` on a clock edge). The parent defines ``sync`` (``m.domains.sync = ClockDomain()``), as
Amaranth 0.6 will require of a domain its siblings use. No clock constraint is added: nextpnr
derives the output's from the primitive's dividers, while a constraint on the PLL's net would
be dropped (Yosys renames it).
"""

import math
from dataclasses import dataclass

from amaranth.hdl import ClockSignal, Elaboratable, Instance, Module, Signal
from amaranth.lib.cdc import ResetSynchronizer

__all__ = ["ICE40Params", "ECP5Params", "ice40_pll", "ecp5_pll", "ICE40PLL", "ECP5PLL"]


@dataclass(frozen=True)
class ICE40Params:
    """SB_PLL40 dividers in simple feedback:
    ``f_out = f_in * (divf + 1) / ((divr + 1) * 2**divq)``."""
    divr: int
    divf: int
    divq: int
    filter_range: int
    f_out: float            # MHz, achieved


@dataclass(frozen=True)
class ECP5Params:
    """EHXPLLL dividers, CLKOP fed back: ``f_out = f_in / clki_div * clkfb_div``,
    VCO ``= f_out * clkop_div``."""
    clki_div: int
    clkfb_div: int
    clkop_div: int
    f_out: float            # MHz, achieved
    f_vco: float            # MHz


def _check(name, value, low, high):
    if not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name} must be a frequency in MHz from {low} to {high}, not {value!r}")


def _reject_far(family, f_in, f_out, achieved):
    # Both searches return the nearest setting; a wanted clock it misses by over 1 % is one
    # the PLL cannot make (outside the VCO range divided by the output dividers).
    if abs(achieved - f_out) > 0.01 * f_out:
        raise ValueError(f"{family} PLL cannot make f_out={f_out!r} MHz from {f_in!r} MHz "
                         f"(nearest {achieved:.3f} MHz)")


def ice40_pll(f_in, f_out):
    """The SB_PLL40 setting whose output is nearest ``f_out`` MHz from ``f_in`` MHz (icepll's
    search: PFD 10-133 MHz, VCO 533-1066 MHz, DIVQ 1-6). ValueError if it misses by over 1 %."""
    _check("ice40_pll f_in", f_in, 10, 133)
    _check("ice40_pll f_out", f_out, 8, 275)
    best = None
    for divr in range(16):
        f_pfd = f_in / (divr + 1)
        if not 10 <= f_pfd <= 133:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533 <= f_vco <= 1066:
                continue
            for divq in range(1, 7):
                achieved = f_vco / 2 ** divq
                if best is None or abs(achieved - f_out) < abs(best[0] - f_out):
                    best = (achieved, divr, divf, divq, f_pfd)
    achieved, divr, divf, divq, f_pfd = best
    _reject_far("iCE40", f_in, f_out, achieved)
    # icepll's loop filter range for the phase detector frequency.
    filter_range = 1 + sum(f_pfd >= edge for edge in (17, 26, 44, 66, 101))
    return ICE40Params(divr, divf, divq, filter_range, achieved)


def ecp5_pll(f_in, f_out):
    """The EHXPLLL setting whose CLKOP is nearest ``f_out`` MHz from ``f_in`` MHz (ecppll's
    search: PFD 3.125-400 MHz, VCO 400-800 MHz; ties go to the VCO nearest 600 MHz).
    ValueError if it misses by over 1 %."""
    _check("ecp5_pll f_in", f_in, 8, 400)
    _check("ecp5_pll f_out", f_out, 3.125, 400)
    best = None
    for clki_div in range(1, 129):
        f_pfd = f_in / clki_div
        if not 3.125 <= f_pfd <= 400:
            continue
        for clkfb_div in range(1, 81):
            achieved = f_pfd * clkfb_div
            for clkop_div in range(max(1, math.ceil(400 / achieved)),
                                   min(128, math.floor(800 / achieved)) + 1):
                f_vco = achieved * clkop_div
                key = (abs(achieved - f_out), abs(f_vco - 600))
                if best is None or key < best[0]:
                    best = (key, ECP5Params(clki_div, clkfb_div, clkop_div, achieved, f_vco))
    params = best[1]
    _reject_far("ECP5", f_in, f_out, params.f_out)
    return params


class ICE40PLL(Elaboratable):
    """An SB_PLL40_PAD on the oscillator's pin (``pad``: the clock resource requested with
    ``dir="-"``) making ``sync`` at ``f_out`` MHz from ``f_in`` MHz.

    Attributes
    ----------
    params : ICE40Params
    """

    def __init__(self, pad, f_in, f_out):
        self.pad = pad
        self.f_in = f_in
        self.params = ice40_pll(f_in, f_out)

    def elaborate(self, platform):
        m = Module()
        clk, lock = _clock_and_lock(m)
        p = self.params
        m.submodules.pll = Instance(
            "SB_PLL40_PAD",
            p_FEEDBACK_PATH="SIMPLE", p_DIVR=p.divr, p_DIVF=p.divf, p_DIVQ=p.divq,
            p_FILTER_RANGE=p.filter_range,
            io_PACKAGEPIN=self.pad.io, i_RESETB=1, i_BYPASS=0,
            o_PLLOUTGLOBAL=clk, o_LOCK=lock)
        return m


class ECP5PLL(Elaboratable):
    """An EHXPLLL making ``sync`` at ``f_out`` MHz from the clock ``clk_in`` of ``f_in`` MHz.

    Attributes
    ----------
    params : ECP5Params
    """

    def __init__(self, clk_in, f_in, f_out):
        self.clk_in = clk_in
        self.f_in = f_in
        self.params = ecp5_pll(f_in, f_out)

    def elaborate(self, platform):
        m = Module()
        clk, lock = _clock_and_lock(m)
        p = self.params
        m.submodules.pll = Instance(
            "EHXPLLL",
            # ecppll's loop filter and charge pump settings and its CPHASE, and the frequencies
            # for timing.
            a_FREQUENCY_PIN_CLKI=f"{self.f_in:g}", a_FREQUENCY_PIN_CLKOP=f"{p.f_out:g}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
            p_CLKI_DIV=p.clki_div, p_CLKFB_DIV=p.clkfb_div, p_CLKOP_DIV=p.clkop_div,
            p_CLKOP_CPHASE=(p.clkop_div - 1) // 2, p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            i_CLKI=self.clk_in, i_CLKFB=clk, i_RST=0, i_STDBY=0, i_PHASESEL0=0,
            i_PHASESEL1=0, i_PHASEDIR=0, i_PHASESTEP=0, i_PHASELOADREG=0, i_PLLWAKESYNC=0,
            i_ENCLKOP=0, o_CLKOP=clk, o_LOCK=lock)
        return m


def _clock_and_lock(m):
    """The PLL output that clocks ``sync``, and the lock signal that holds it in reset while
    low."""
    clk = Signal()
    lock = Signal()
    m.d.comb += ClockSignal("sync").eq(clk)
    m.submodules.reset_sync = ResetSynchronizer(~lock, domain="sync")
    return clk, lock
