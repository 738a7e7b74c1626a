"""The simulated board (:class:`flexigan.boards.simulated.SimulatedBoard`) behind a TCP socket.

The test listens on ``127.0.0.1:PORT`` (0: any free port) and writes the port it got to
``PORT_FILE``; a host connects with pyserial's ``socket://127.0.0.1:PORT`` (``flexigan run``).
Bytes from the host go into the design's ``host_i`` stream (its UART sends them to the board
top's ``rx`` pin); bytes of ``host_o`` (decoded from the top's ``tx`` pin) go back to the host.
The test ends when the host disconnects (after ``CONNECTIONS`` connections, default 1) or, with
no host, after ``IDLE_SECONDS`` of wall time.

Simulated time runs only as fast as the host talks: while nothing moves, the simulation
advances ``IDLE_CYCLES`` per millisecond of waiting for the host, so the accelerator runs while
the host polls it. The host writes each frame at once, so its bytes are never split by such a
step (which is shorter than the simulated bridge's timeout, 1,000 bit times).
"""

import os
import queue
import socket
import threading
import time
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, Timer

from . import CLOCK_NS, env_float, env_int

__all__ = ["Line"]

#: Clock cycles the simulation advances per wait for the host.
IDLE_CYCLES = 2048


class Line:
    """The TCP end of the line: a listener thread, and a queue of the host's bytes."""

    def __init__(self, port, connections):
        self.server = socket.create_server(("127.0.0.1", port))
        self.port = self.server.getsockname()[1]
        self.incoming = queue.Queue()
        self.client = None
        self.closed = threading.Event()
        threading.Thread(target=self._serve, args=(connections,), daemon=True).start()

    def _serve(self, connections):
        for _ in range(connections):
            client, _ = self.server.accept()
            self.client = client
            while data := _receive(client):
                self.incoming.put(data)
            self.client = None
            client.close()
        self.server.close()
        self.closed.set()

    def send(self, data):
        client = self.client
        if client is not None:
            try:
                client.sendall(bytes(data))
            except OSError:
                pass                          # the host went away; its reads time out


def _receive(client):
    try:
        return client.recv(65536)
    except OSError:
        return b""


async def _pump(dut, line, byte_cycles):
    """Move bytes between the host and the design until the host has come and gone.

    Signals are read and driven at falling edges, where they are settled: a byte is handed
    over at the rising edge between two steps. When nothing can move, the handshakes are
    dropped and the simulation runs on for a while in one step.
    """
    pending = bytearray()
    await FallingEdge(dut.clk)
    while not (line.closed.is_set() and not pending):
        if not pending:
            try:
                pending += line.incoming.get(timeout=0 if dut.host_o__valid.value else 0.001)
            except queue.Empty:
                pass
        into = bool(pending) and bool(dut.host_i__ready.value)
        out = bool(dut.host_o__valid.value)
        dut.host_i__valid.value = into
        dut.host_i__payload.value = pending[0] if into else 0
        dut.host_o__ready.value = out
        if into or out:
            byte = int(dut.host_o__payload.value) if out else None
            await Timer(CLOCK_NS, unit="ns")
            if into:
                del pending[0]
            if out:
                line.send([byte])
        else:            # the line is busy with what the FIFO holds, or the host is quiet
            await Timer((16 * byte_cycles if pending else IDLE_CYCLES) * CLOCK_NS, unit="ns")


@cocotb.test()
async def serve(dut):
    """Bridge the board's UART to TCP until the host has come and gone."""
    # In C: a Python clock would cost two callbacks per cycle.
    cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns", impl="gpi").start())
    dut.host_i__valid.value = 0
    dut.host_o__ready.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    line = Line(env_int("PORT", 0), env_int("CONNECTIONS", 1))
    port_file = Path(os.environ["PORT_FILE"])
    port_file.with_suffix(".tmp").write_text(f"{line.port}\n")
    os.replace(port_file.with_suffix(".tmp"), port_file)
    idle_limit = env_float("IDLE_SECONDS", 600.0)
    started = time.monotonic()
    while line.client is None and not line.closed.is_set():
        if time.monotonic() - started > idle_limit:
            raise AssertionError(f"no host connected within {idle_limit:.0f} s")
        time.sleep(0.01)
        await Timer(IDLE_CYCLES * CLOCK_NS, unit="ns")
    await _pump(dut, line, 10 * env_int("DIVISOR"))
