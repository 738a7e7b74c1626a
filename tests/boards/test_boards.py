"""Board files: PLL dividers against icepll/ecppll, elaboration for each board, and (slow)
`flexigan synth` of a ULX3S-85F through Yosys and nextpnr to a bitstream."""

import json
import time
from pathlib import Path

import pytest

from flexigan import flow
from flexigan.boards import icebreaker, ulx3s
from flexigan.boards.pll import ecp5_pll, ice40_pll
from flexigan.hw.arch.config import preset
from flexigan.report import write_report
from flexigan.synth import synth
from tests.helpers import EXAMPLES

BOARDS = [icebreaker, ulx3s]


def tiny_config(board, **changes):
    """The board's preset shrunk to one group of two lanes and small buffers (the board top's
    on-chip memory needs a bus at least 32 bits wide)."""
    tiny = dict(groups=1, lanes=2, act_banks=2, act_bank_bytes=1024, weight_bytes=512,
                param_entries=64, uop_depth=16, burst_bytes=64, axi_data_width=32)
    return preset(board.PRESET).replace(**{**tiny, **changes})


@pytest.mark.parametrize("f_in, f_out, expected", [
    # icepll -i 12 -o 24 / -o 12 / -o 48
    (12, 24, (0, 63, 5, 1)),
    (12, 12, (0, 63, 6, 1)),
    (12, 48, (0, 63, 4, 1)),
])
def test_ice40_pll_matches_icepll(f_in, f_out, expected):
    params = ice40_pll(f_in, f_out)
    assert (params.divr, params.divf, params.divq, params.filter_range) == expected
    achieved = f_in * (params.divf + 1) / ((params.divr + 1) * 2 ** params.divq)
    assert achieved == params.f_out
    assert abs(achieved - f_out) <= 0.01 * f_out


@pytest.mark.parametrize("f_in, f_out, expected", [
    # ecppll -i 25 -o 50 / -o 100 / -i 12 -o 16 (as in olofk/serv's servant/ecp5_evn_pll.v)
    (25, 50, (1, 2, 12)),
    (12, 16, (3, 4, 37)),
    (25, 100, (1, 4, 6)),
])
def test_ecp5_pll_matches_ecppll(f_in, f_out, expected):
    params = ecp5_pll(f_in, f_out)
    assert (params.clki_div, params.clkfb_div, params.clkop_div) == expected
    achieved = f_in / params.clki_div * params.clkfb_div
    assert achieved == params.f_out
    assert 400 <= achieved * params.clkop_div <= 800
    assert abs(achieved - f_out) <= 0.01 * f_out


@pytest.mark.parametrize("search, f_in, f_out", [
    *[(ice40_pll, 12, f_out) for f_out in (16, 24, 33.3, 50, 66, 100)],
    *[(ecp5_pll, 25, f_out) for f_out in (25, 33.3, 50, 75, 100)],
])
def test_pll_outputs_within_one_percent(search, f_in, f_out):
    assert abs(search(f_in, f_out).f_out - f_out) <= 0.01 * f_out


def test_unreachable_frequency_is_named():
    with pytest.raises(ValueError, match=r"ice40_pll f_out must be .* not 1000"):
        ice40_pll(12, 1000)
    with pytest.raises(ValueError, match=r"ecp5_pll f_out must be .* not 2"):
        ecp5_pll(25, 2)
    # 25 MHz * CLKFB_DIV / CLKI_DIV with a phase detector of at least 3.125 MHz: 12.5 nearest.
    with pytest.raises(ValueError, match=r"ECP5 PLL cannot make f_out=12 MHz .*12.500"):
        ecp5_pll(25, 12)
    with pytest.raises(ValueError, match=r"ice40_pll f_in must be .* not 5"):
        ice40_pll(5, 24)


@pytest.mark.parametrize("board", BOARDS, ids=lambda board: board.PRESET)
def test_board_elaborates(board):
    config = tiny_config(board)
    top = board.Board(config.replace(memory_bytes=2048))
    assert top.divisor == round(top.clock_mhz * 1e6 / board.BAUD)
    plan = board.PLATFORM().build(top, name="top", do_build=False)
    primitive = "SB_PLL40_PAD" if board is icebreaker else "EHXPLLL"
    assert primitive in plan.files["top.il"]        # RTLIL, from the platform's prepare


@pytest.mark.slow
def test_flexigan_synth_builds_the_ulx3s_and_reuses_the_build(tmp_path, monkeypatch, capsys):
    # The tiny machine at 25 MHz, with the digits generator's image in 96 KB of block RAM.
    monkeypatch.setenv("FLEXIGAN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "digits"
    config = tiny_config(ulx3s, act_bank_bytes=4096, weight_bytes=1024, clock_mhz=25.0,
                         memory_bytes=98304)
    flow.compile_model(EXAMPLES / "digits" / "generator.onnx", out, config=config,
                       target="ulx3s", rtl=False, log=lambda line: None)
    start = time.monotonic()
    report = synth(out)
    elapsed = time.monotonic() - start
    assert Path(report["bitstream"]).stat().st_size > 0 and not report["cached"]
    assert report == json.loads((out / "synth_report.json").read_text())
    assert report["timing_met"] and min(report["fmax_mhz"].values()) >= 25
    assert report["device"] == "LFE5U-85F-6BG381C" and report["lanes"] == 2
    for name in ("lut", "ff", "dsp", "bram"):
        assert 0 < report["resources"][name]["used"] <= report["resources"][name]["available"]
    assert report["frames_per_second"] == round(25e6 / report["cycles_per_frame"], 2)
    assert set(report["seconds"]) == {"elaborate", "yosys", "nextpnr", "pack"}
    # flexigan report shows it: the resources' bars, Fmax against the clock, frames/s.
    page = write_report(out).read_text()
    assert page.count('<figure class="chart">') == 2          # the MACs, the resources
    assert "LFE5U-85F-6BG381C" in page and ">met<" in page
    assert f"{report['frames_per_second']:,}" in page
    # Another model on the same machine: the same board top, from the cache.
    again = tmp_path / "again"
    flow.compile_model(EXAMPLES / "digits" / "generator.onnx", again, config=config,
                       target="ulx3s", rtl=False, reorder=False, log=lambda line: None)
    second = synth(again)
    assert second["cached"] and second["resources"] == report["resources"]
    assert second["cycles_per_frame"] != report["cycles_per_frame"]
    print(f"ULX3S-85F tiny build: {elapsed:.0f} s, {capsys.readouterr().out}")
