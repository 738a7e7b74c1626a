"""Progress of long work: a live display on a terminal, plain lines elsewhere, none with
--quiet; results and warnings print in every case."""

import io
import os
import select

import pytest

from flexigan import progress
from flexigan.cli import main
from flexigan.progress import Progress, task
from tests.helpers import EXAMPLES


def test_plain_lines_name_the_task_count_the_samples_and_time_it(monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_SECONDS", 0.0)
    lines = []
    with task(lines.append, "golden", 10) as advance:
        for done in (0, 4, 10):
            advance(done)
    assert lines[0] == "golden ..."
    assert lines[1].startswith("golden: 4 of 10 samples in 0 s; about ") and \
        lines[1].endswith(" left")
    assert len(lines) == 3 and lines[2].startswith("      golden: ") and lines[2].endswith(" s")


def test_a_failed_task_gives_no_time():
    lines = []
    with pytest.raises(KeyError), task(lines.append, "[3/8] lower"):
        raise KeyError("x")
    assert lines == ["[3/8] lower ..."]


def test_quiet_shows_no_task_but_every_line():
    stream = io.StringIO()
    shown = Progress(stream, quiet=True)
    with shown.task("[1/8] import"):
        shown("warning: something")
    assert stream.getvalue() == "warning: something\n"


def test_a_terminal_gets_a_live_display():
    leader, follower = os.openpty()
    with open(follower, "w") as terminal:
        shown = Progress(terminal)
        with shown.task("isa", 4) as advance:
            advance(4)
            shown("a line above the display")
    output = b""
    try:
        while select.select([leader], [], [], 0.2)[0]:
            output += os.read(leader, 1 << 16)
    except OSError:                             # EIO: the other end is closed, all read
        pass
    os.close(leader)
    text = output.decode(errors="replace")
    assert "isa" in text and "4/4" in text and "a line above the display" in text
    assert "\x1b[" in text                           # drawn, not printed as lines


def test_compile_quiet_prints_the_result_only(tmp_path, capsys):
    argv = ["compile", str(EXAMPLES / "digits/generator.onnx"), "--no-rtl", "-o"]
    assert main(["--quiet", *argv, str(tmp_path / "quiet")]) == 0
    quiet = capsys.readouterr().out.splitlines()
    assert len(quiet) == 1 and quiet[0].startswith("compiled ")
    assert main([*argv, str(tmp_path / "plain")]) == 0
    plain = capsys.readouterr().out.splitlines()
    assert plain[:2] == ["[1/8] import ...", "      [1/8] import: " + plain[1].split(": ")[1]]
    assert plain[-1].startswith("compiled ")
