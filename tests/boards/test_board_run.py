"""`flexigan run` against the simulated board (`flexigan board-sim`: the board top under
Verilator, its UART on a TCP port), the bridge's framing errors and timeouts on the same
socket, and the one-line errors of a missing board."""

import contextlib
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import serial

from flexigan import cli
from flexigan.host import BridgeClient
from flexigan.hw.arch.bridge import CMD_READ, CMD_WRITE
from flexigan.report import write_report
from tests.helpers import EXAMPLES, save, tiny_generator

#: Hosts each simulated board serves before it stops (the tests below, in order).
CONNECTIONS = 2


def _run(capsys, *argv):
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def _start_board(folder, connections):
    """`flexigan board-sim folder` in its own process; (process, URL) once it listens."""
    # In a session of its own, so that stopping it stops the simulator it starts too.
    process = subprocess.Popen([sys.executable, "-m", "flexigan", "board-sim", str(folder),
                                "--connections", str(connections)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    for line in process.stdout:
        found = re.search(r"listens on (socket://127\.0\.0\.1:\d+)", line)
        if found:
            return process, found[1]
    process.wait()
    raise AssertionError(f"the simulated board did not start (exit status {process.returncode}"
                         f"; see {folder}/board_sim/simulation.log)")


def _stop(process):
    """Wait for the board to stop after its last host; kill it and its simulator if not."""
    try:
        process.wait(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """A compiled tiny generator on a one-group ULX3S board, and its simulated board."""
    root = tmp_path_factory.mktemp("board")
    model = save(tiny_generator(), root / "g.onnx")
    out = root / "out"
    assert cli.main(["compile", str(model), "-o", str(out), "--target", "ulx3s", "--groups",
                     "1", "--lanes", "2", "--no-rtl"]) == 0
    process, url = _start_board(out, CONNECTIONS)
    yield out, url
    _stop(process)


def test_run_on_the_simulated_board_is_bit_exact(board, tmp_path, capsys):
    out, url = board
    np.save(tmp_path / "z.npy", np.random.default_rng(3).standard_normal((2, 4, 1, 1)))
    status, text, err = _run(capsys, "run", str(out), "--port", url, "--input",
                             str(tmp_path / "z.npy"), "--output", str(tmp_path / "y.npy"))
    assert status == 0, err
    assert "bit-exact with the golden model: yes, with the instruction-level simulator: yes" \
        in text
    report = json.loads((out / "run_report.json").read_text())
    assert report["engine"] == "board" and report["port"] == url
    assert report["bit_exact_vs_golden"] and report["bit_exact_vs_isa"]
    assert np.load(tmp_path / "y.npy").shape == (2, 2, 4, 4)
    # The hardware's own cycle counter, against the model of the board's on-chip memory.
    assert report["cycles"] == report["counters"]["cycles"] > 0
    assert abs(report["cycles_vs_isa"] - 1) <= 0.05
    assert report["macs_issued"] > 0 and report["dram_bytes"] > 0


def test_a_garbled_frame_never_writes_and_the_bridge_recovers_after_its_timeout(board):
    _, url = board
    with serial.serial_for_url(url, timeout=60) as port:
        client = BridgeClient(port)
        client.write_words(0x100, [0x1111_1111, 0x2222_2222, 0x3333_3333, 0x4444_4444])
        # A frame that stops short: its two words must never reach memory.
        port.write(struct.pack(">BBI", CMD_WRITE, 4, 0x100 // 4) + bytes(8))
        time.sleep(2)       # quiet: the simulation runs past the bridge's timeout (1,000 bits)
        assert client.read_words(0x100, 4) == [0x1111_1111, 0x2222_2222, 0x3333_3333,
                                                0x4444_4444]
        # An unknown command: everything up to a quiet line is dropped, a complete write too.
        port.write(bytes([0x7F]) + struct.pack(">BBI", CMD_WRITE, 1, 0x100 // 4) + bytes(4))
        time.sleep(2)
        assert client.read_words(0x100, 1) == [0x1111_1111]
        port.write(struct.pack(">BBI", CMD_READ, 1, 0x104 // 4))
        assert struct.unpack(">I", port.read(4)) == (0x2222_2222,)


@pytest.mark.parametrize("port, fragment", [
    ("socket://127.0.0.1:1", "cannot open the board's port socket://127.0.0.1:1"),
    ("/dev/ttyUSB97", "cannot open the board's port /dev/ttyUSB97"),
])
def test_a_missing_board_is_one_line(board, tmp_path, capsys, port, fragment):
    out, _ = board
    np.save(tmp_path / "z.npy", np.zeros((1, 4, 1, 1)))
    status, _, err = _run(capsys, "run", str(out), "--port", port, "--input",
                          str(tmp_path / "z.npy"))
    assert status == 1
    assert err.count("\n") == 1 and fragment in err and "Traceback" not in err


def test_run_needs_a_board_target(tmp_path, capsys):
    model = save(tiny_generator(), tmp_path / "g.onnx")
    assert cli.main(["compile", str(model), "-o", str(tmp_path / "out"), "--no-rtl"]) == 0
    capsys.readouterr()
    for argv in (["board-sim", str(tmp_path / "out")],
                 ["run", str(tmp_path / "out"), "--port", "/dev/null", "--input", "z.npy"]):
        status, _, err = _run(capsys, *argv)
        assert status == 1 and "compiled for 'sim', a simulation target" in err


@pytest.mark.slow
def test_digits_generator_on_the_simulated_ulx3s(tmp_path, capsys):
    out = tmp_path / "digits"
    assert cli.main(["compile", str(EXAMPLES / "digits" / "generator.onnx"), "-o", str(out),
                     "--target", "ulx3s", "--groups", "1", "--lanes", "4", "--no-rtl"]) == 0
    process, url = _start_board(out, 1)
    try:
        np.save(tmp_path / "z.npy", np.random.default_rng(1).standard_normal((2, 16, 1, 1)))
        status, text, err = _run(capsys, "run", str(out), "--port", url, "--input",
                                 str(tmp_path / "z.npy"))
    finally:
        _stop(process)
    assert status == 0, err
    report = json.loads((out / "run_report.json").read_text())
    assert report["bit_exact_vs_golden"] and report["bit_exact_vs_isa"]
    assert abs(report["cycles_vs_isa"] - 1) <= 0.05
    page = write_report(out).read_text()
    assert f"{report['cycles']:,} for 2 sample(s)" in page and "frames/s" in page
    print(text)
