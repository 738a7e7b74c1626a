"""A board without the board: the board top under Verilator or Icarus, its UART on a TCP port.

:func:`serve` builds :class:`SimulatedBoard` for a configuration and runs the cocotb testbench
:mod:`flexigan.sim.tb.board`, which bridges it to ``127.0.0.1:PORT``. A host drives it exactly
as it drives a real board, with pyserial's URL ``socket://127.0.0.1:PORT`` (``flexigan run OUT
--port socket://127.0.0.1:PORT``).

:class:`SimulatedBoard` is the board top with the host's end of the serial line in the design:
a UART transmitter driving the top's ``rx`` pin and a receiver on its ``tx`` pin, each behind a
FIFO, so the testbench moves whole bytes (one clock cycle each) instead of toggling pins bit by
bit in Python; the line between them and the board top is the real 8N1 one.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from amaranth.hdl import Module
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out, connect

from ..errors import FlexiganError
from ..hw.uart import UartRx, UartTx
from ..sim.rtl import SIMULATORS, RtlTestError, output_to, run_cocotb
from .top import BoardTop

__all__ = ["DIVISOR", "LINE_FIFO", "TIMEOUT_BITS", "SimulatedBoard", "serve"]

#: Clock cycles per UART bit in simulation, where the line has no analogue errors: the least at
#: which the bridge commits a 255-word write frame before its byte queue overflows (docs/boards.md).
DIVISOR = 5
#: Bytes each direction of the host's end of the line holds.
LINE_FIFO = 512
#: The bridge's timeout in simulation, in bit times (a board's is 10,000): simulated cycles
#: are dear, and the host's frames arrive whole.
TIMEOUT_BITS = 1000


class SimulatedBoard(wiring.Component):
    """:class:`BoardTop` of ``config`` (its ``memory_bytes``, on one port when
    ``single_port_memory``, as on the board) with the host's UART in the design.

    Attributes
    ----------
    host_i : In(stream.Signature(8))
        Bytes the host sends; they leave on the line at its rate.
    host_o : Out(stream.Signature(8))
        Bytes the board sent, in order (a byte arriving with the FIFO full is lost, as on a
        real line).
    irq : Out(1)
    """

    def __init__(self, config, single_port_memory=False):
        self.top = BoardTop(config, config.memory_bytes, DIVISOR, single_port_memory,
                            TIMEOUT_BITS)
        super().__init__({"host_i": In(stream.Signature(8)), "host_o": Out(stream.Signature(8)),
                          "irq": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.top = top = self.top
        m.submodules.to_board = to_board = fifo.SyncFIFOBuffered(width=8, depth=LINE_FIFO)
        m.submodules.from_board = from_board = fifo.SyncFIFOBuffered(width=8, depth=LINE_FIFO)
        m.submodules.uart_tx = uart_tx = UartTx(DIVISOR)
        m.submodules.uart_rx = uart_rx = UartRx(DIVISOR)
        connect(m, wiring.flipped(self.host_i), to_board.w_stream)
        connect(m, to_board.r_stream, uart_tx.i)
        connect(m, uart_rx.o, from_board.w_stream)        # a full FIFO: the byte is lost
        connect(m, from_board.r_stream, wiring.flipped(self.host_o))
        m.d.comb += [top.rx.eq(uart_tx.tx), uart_rx.rx.eq(top.tx), self.irq.eq(top.irq)]
        return m


def serve(config, build_dir, *, simulator="verilator", port=0, connections=1,
          idle_seconds=600, single_port_memory=False, on_listen=print):
    """Run the simulated board until ``connections`` hosts have come and gone.

    ``on_listen(url)`` is called (from another thread) once the socket listens. The
    simulator's own output goes to ``build_dir/simulation.log``. Raises
    :class:`FlexiganError` when the simulation fails or no host comes within
    ``idle_seconds``.
    """
    if simulator not in SIMULATORS:
        raise FlexiganError(f"simulator {simulator!r} is not available (choose from: "
                            f"{', '.join(SIMULATORS)})")
    if config.memory_bytes is None:
        raise FlexiganError("the configuration names no board memory (memory_bytes): "
                            "compile for a board target")
    build_dir = Path(build_dir).resolve()
    port_file = build_dir / "port"
    port_file.unlink(missing_ok=True)
    done = threading.Event()
    watcher = threading.Thread(target=_announce, args=(port_file, done, on_listen), daemon=True)
    watcher.start()
    build_dir.mkdir(parents=True, exist_ok=True)
    try:
        with output_to(build_dir / "simulation.log"):
            run_cocotb(SimulatedBoard(config, single_port_memory),
                       test_module="flexigan.sim.tb.board", simulator=simulator,
                       build_dir=build_dir,
                       extra_env={"DIVISOR": DIVISOR, "PORT": port, "PORT_FILE": port_file,
                                  "CONNECTIONS": connections, "IDLE_SECONDS": idle_seconds})
    except RtlTestError as exc:
        raise FlexiganError(f"the simulated board stopped: {exc} (see "
                            f"{build_dir / 'simulation.log'})") from None
    finally:
        done.set()


def _announce(port_file, done, on_listen):
    while not done.is_set():
        if port_file.is_file():
            on_listen(f"socket://127.0.0.1:{int(port_file.read_text())}")
            return
        time.sleep(0.05)
