"""What long work tells the user while it runs: each task's name, how far it is, its time.

The commands hand a :class:`Progress` to the flow as its ``log``: called with a line, it
prints the line (results and warnings, always); :func:`task` runs a piece of long work under
it — a compile step, a batch of samples, a simulator build, a synthesis tool. On a terminal a
task is a live line (rich): a spinner or a bar, the samples done, the time elapsed and left;
elsewhere (CI logs, pipes) it is plain lines: the task's name as it starts, a line every
:data:`PLAIN_SECONDS` for a counted one, and its time as it ends. ``quiet`` shows no task at
all. Any other callable passed as ``log`` (``print``, ``list.append`` in tests) gets the plain
lines. Progress goes to stdout with the results: stderr carries the one-line error alone.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as _Live
from rich.text import Text

__all__ = ["Progress", "task", "PLAIN_SECONDS"]

#: How often a counted task says how far it is in plain lines, in seconds.
PLAIN_SECONDS = 5.0


class Progress:
    """Prints lines to ``stream`` (stdout by default) and shows :func:`task` s: live on a
    terminal, plain lines elsewhere, none when ``quiet``."""

    def __init__(self, stream=None, quiet=False):
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.live = None                # the rich display while a task runs on a terminal
        self.running = 0

    def __call__(self, line):
        if self.live is not None:
            self.live.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=self.stream, flush=True)

    @contextlib.contextmanager
    def task(self, what, total=None):
        """Run the ``with`` block as the task ``what`` (of ``total`` samples when counted);
        yields a function to call with the samples done."""
        if self.quiet:
            yield lambda done: None
        elif not self.stream.isatty():
            with _plain(self, what, total) as advance:
                yield advance
        else:
            with self._live(what, total) as advance:
                yield advance

    @contextlib.contextmanager
    def _live(self, what, total):
        if self.live is None:
            # The display writes to its own copy of the terminal: a simulator run sends the
            # process's stdout to a transcript meanwhile (flexigan.sim.rtl.output_to).
            terminal = os.fdopen(os.dup(self.stream.fileno()), "w")
            self.live = _Live(SpinnerColumn(), TextColumn("{task.description}"),
                              _Counted(BarColumn()), _Counted(MofNCompleteColumn()),
                              TimeElapsedColumn(), _Counted(TextColumn("left")),
                              _Counted(TimeRemainingColumn()), console=Console(file=terminal),
                              redirect_stdout=False, redirect_stderr=False)
            self.live.start()
        self.running += 1
        ident = self.live.add_task(what, total=total, counted=total is not None)
        try:
            yield lambda done: self.live.update(ident, completed=done)
        finally:
            self.live.update(ident, completed=total or 0, total=total or 0)
            self.live.stop_task(ident)
            self.running -= 1
            if not self.running:
                self.live.stop()
                self.live.console.file.close()
                self.live = None


class _Counted(ProgressColumn):
    """A column shown for counted tasks only (a bar has nothing to show for a compile
    step)."""

    def __init__(self, column):
        super().__init__()
        self.column = column

    def render(self, task):
        return self.column.render(task) if task.fields["counted"] else Text("")


@contextlib.contextmanager
def _plain(log, what, total):
    """A task as plain lines through ``log``."""
    log(f"{what} ...")
    start = last = time.monotonic()

    def advance(done):
        nonlocal last
        now = time.monotonic()
        if now - last < PLAIN_SECONDS or not done or done >= total:
            return
        last = now
        left = (now - start) / done * (total - done)
        log(f"{what}: {done:,} of {total:,} samples in {now - start:.0f} s; "
            f"about {_duration(left)} left")

    yield advance
    log(f"      {what}: {time.monotonic() - start:.2f} s")


def _duration(seconds):
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else \
        f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def task(log, what, total=None):
    """The task ``what`` shown through ``log``: a :class:`Progress`'s own, plain lines for
    any other callable (see :meth:`Progress.task`)."""
    return log.task(what, total) if isinstance(log, Progress) else _plain(log, what, total)
