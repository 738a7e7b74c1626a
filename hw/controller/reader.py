"""The controller's AXI4 burst reader, shared by instruction fetch and DMA loads.

Both clients see the same port (:func:`read_client_signature`): burst commands out, beats in.
The DMA engine has the reader while it claims it, instruction fetch otherwise. Beats go to the
client whose command the reader took last, so the DMA engine claims the reader only once it is
idle (``busy`` low) and keeps the claim until its beats have all left.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from ..axi import AxiBurstReader, axi4_read_signature, burst_command_layout
from ..realign import beat_layout

__all__ = ["read_client_signature", "SharedReader"]


def read_client_signature(data_width):
    """A client of the burst reader, as the client sees it: commands of whole beats from a
    beat-aligned address (see :class:`~flexigan.hw.axi.AxiBurstReader`), and the beats."""
    return wiring.Signature({
        "cmd": Out(stream.Signature(burst_command_layout())),
        "beats": In(stream.Signature(beat_layout(data_width))),
    })


class SharedReader(wiring.Component):
    """An :class:`~flexigan.hw.axi.AxiBurstReader` with two clients, ``fetch`` and ``load``.

    Contract: while ``claim`` is high the reader takes commands from ``load`` only, otherwise
    from ``fetch`` only (the other client's ``cmd.ready`` is low). Beats leave on the ``beats``
    of the client whose command the reader took last: when ``claim`` rises only once the reader
    is not ``busy`` and falls only once the load's beats have left, each client gets exactly
    the beats of its own commands. ``start`` (with the reader idle) hands the beats to
    ``load``, as after a load. No added latency: this is the reader's timing. ``error``: an
    error response came since the last ``start`` (the reader's ``error``, which ``start``
    clears).

    Parameters
    ----------
    config : AcceleratorConfig

    Attributes
    ----------
    axi : Out(axi4_read_signature(addr_width=32, data_width=axi_data_width))
    fetch, load : In(read_client_signature(axi_data_width))
    claim : In(1)
    start : In(1)
    busy : Out(1)
        A command's beats have not all left.
    error : Out(1)
    """

    def __init__(self, config):
        self._config = config
        dw = config.axi_data_width
        super().__init__({
            "axi": Out(axi4_read_signature(addr_width=32, data_width=dw)),
            "fetch": In(read_client_signature(dw)),
            "load": In(read_client_signature(dw)),
            "claim": In(1),
            "start": In(1),
            "busy": Out(1),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.reader = reader = AxiBurstReader(self._config)
        connect(m, reader.axi, flipped(self.axi))
        m.d.comb += [self.busy.eq(reader.busy), self.error.eq(reader.error),
                     reader.clear.eq(self.start)]

        fetching = Signal()                 # the reader's last command was a fetch
        for client, selected in ((self.fetch, ~self.claim), (self.load, self.claim)):
            with m.If(selected):
                m.d.comb += [reader.cmd.valid.eq(client.cmd.valid),
                             reader.cmd.payload.eq(client.cmd.payload),
                             client.cmd.ready.eq(reader.cmd.ready)]
        with m.If(self.fetch.cmd.valid & self.fetch.cmd.ready):
            m.d.sync += fetching.eq(1)
        with m.If(self.load.cmd.valid & self.load.cmd.ready):
            m.d.sync += fetching.eq(0)
        with m.If(self.start):
            m.d.sync += fetching.eq(0)

        m.d.comb += self.fetch.beats.payload.eq(reader.o.payload)
        with m.If(fetching):
            m.d.comb += [self.fetch.beats.valid.eq(reader.o.valid),
                         reader.o.ready.eq(self.fetch.beats.ready)]
        with m.Else():
            m.d.comb += [self.load.beats.valid.eq(reader.o.valid),
                         self.load.beats.payload.eq(reader.o.payload),
                         reader.o.ready.eq(self.load.beats.ready)]
        return m
