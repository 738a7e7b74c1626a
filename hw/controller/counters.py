"""The performance counters, and the block of them that COUNTERS STORE writes.

The counters are those of :data:`isa.COUNTER_NAMES`, defined as the instruction-level
simulator defines them: ``cycles`` counts from ``start``; ``macs_issued``/``macs_skipped``
sum the groups' counters; ``dma_bytes`` sums the lengths of DMA_LOAD, DMA_STORE and UOP_LOAD;
``busy_cycles`` sums the cycles each group holds a RUN; ``stall_cycles`` sums the groups'
crossbar stalls; ``runs`` counts RUN instructions; ``instructions`` counts executed
instructions (COUNTERS STORE counts itself). COUNTERS RESET zeroes all but ``cycles`` and
``instructions``, as the simulator does.

A configuration may keep fewer and narrower counters (``config.counters``,
``config.counter_bits``): each counts modulo ``2 ** counter_bits`` and shows as
:data:`COUNTER_BITS` bits, the rest zero, and a counter not kept reads zero. Those constant
bits cost nothing: synthesis removes them, the register file's copies of them and the
counters that feed nothing.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from ..arch import isa
from ..arch.timing import POST_DRAIN

__all__ = ["COUNTER_BITS", "counters_layout", "issue_events_signature", "Counters"]

#: Bits of each counter as the registers and the stored block show it.
COUNTER_BITS = 64


def counters_layout():
    """Every counter, in the order of :data:`isa.COUNTER_NAMES`: the layout of the block
    COUNTERS STORE writes (8 little-endian bytes each) and of the registers."""
    return data.StructLayout({name: unsigned(COUNTER_BITS) for name in isa.COUNTER_NAMES})


def issue_events_signature():
    """What the issue stage tells the counters each cycle, as the issue stage sees it: an
    instruction issued, a RUN issued, a DMA of ``payload`` bytes issued, COUNTERS RESET,
    COUNTERS STORE."""
    return wiring.Signature({
        "instruction": Out(1),
        "run": Out(1),
        "dma_bytes": Out(stream.Signature(unsigned(24), always_ready=True)),
        "reset": Out(1),
        "store": Out(1),
    })


class Counters(wiring.Component):
    """The performance counters (see the module docstring).

    Contract: ``start`` zeroes every counter (those the groups and the crossbar keep through
    ``clear``); ``cycles`` then counts the cycles ``running`` is high. ``values`` shows the
    counters, updated the cycle after an event. On ``events.store`` (COUNTERS STORE issued)
    the block takes the values of that cycle, with ``instructions`` counting the store itself;
    from the next cycle ``block`` shows its first ``axi_data_width`` bits, and each word taken
    (``block.ready``) moves it to the next. ``clear`` is high with ``start`` and
    ``events.reset``: the groups and the crossbar zero their counters on it.

    Parameters
    ----------
    config : AcceleratorConfig

    Attributes
    ----------
    running, start : In(1)
    events : In(issue_events_signature())
    group_busy : In(groups)
    macs_issued, macs_skipped, stalls : In(data.ArrayLayout(64, groups))
        The groups' and the crossbar's counters (their low ``counter_bits`` are used).
    values : Out(counters_layout())
    block : Out(stream.Signature(axi_data_width, always_valid=True))
    clear : Out(1)
    """

    def __init__(self, config):
        self._config = config
        g = config.groups
        super().__init__({
            "running": In(1),
            "start": In(1),
            "events": In(issue_events_signature()),
            "group_busy": In(g),
            "macs_issued": In(data.ArrayLayout(COUNTER_BITS, g)),
            "macs_skipped": In(data.ArrayLayout(COUNTER_BITS, g)),
            "stalls": In(data.ArrayLayout(COUNTER_BITS, g)),
            "values": Out(counters_layout()),
            "block": Out(stream.Signature(config.axi_data_width, always_valid=True)),
            "clear": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        groups, bits = self._config.groups, self._config.counter_bits
        events = self.events
        count = {name: Signal(bits, name=f"count_{name}")
                 for name in ("cycles", "dma_bytes", "busy_cycles", "runs", "instructions")}
        live = dict(count)
        for name, port in (("macs_issued", self.macs_issued), ("macs_skipped", self.macs_skipped),
                           ("stall_cycles", self.stalls)):
            live[name] = _registered_sum(m, [port[g][:bits] for g in range(groups)], name)
        for name in self._config.counters:
            m.d.comb += self.values[name].eq(live[name])
        m.d.comb += self.clear.eq(self.start | events.reset)

        with m.If(self.running):
            m.d.sync += count["cycles"].eq(count["cycles"] + 1)
        busy_now = sum(self.group_busy[g] for g in range(groups))
        m.d.sync += count["busy_cycles"].eq(count["busy_cycles"] + busy_now)
        with m.If(self.clear):
            for name in ("dma_bytes", "busy_cycles", "runs"):
                m.d.sync += count[name].eq(0)
        with m.If(events.dma_bytes.valid):
            m.d.sync += count["dma_bytes"].eq(count["dma_bytes"] + events.dma_bytes.payload)
        with m.If(events.run):
            m.d.sync += count["runs"].eq(count["runs"] + 1)
        with m.If(events.instruction):
            m.d.sync += count["instructions"].eq(count["instructions"] + 1)
        with m.If(self.start):
            m.d.sync += [count["cycles"].eq(0), count["instructions"].eq(0)]
        stored = Signal(counters_layout())
        m.d.comb += stored.eq(self.values)
        if "instructions" in self._config.counters:
            m.d.comb += stored.instructions.eq((count["instructions"] + 1)[:bits])
        self._block(m, stored)
        return m

    def _block(self, m, stored):
        """The block, loaded from ``stored`` on a store and shifted out a word at a time (a
        multiplexer of its words was a long path). Only the words that can be nonzero are
        shifted: the zero words (of counters not kept, or above ``counter_bits`` on a bus
        narrower than 64 bits) take no flip-flops, told apart by the word's number."""
        dw, cfg = self._config.axi_data_width, self._config
        block = stored.as_value()
        words = [block[k:k + dw] for k in range(0, len(block), dw)]
        nonzero = [k for k, word in enumerate(words)
                   if any(isa.COUNTER_NAMES[b // COUNTER_BITS] in cfg.counters
                          and b % COUNTER_BITS < cfg.counter_bits
                          for b in range(k * dw, k * dw + len(word)))]
        shifted = Signal(sum(len(words[k]) for k in nonzero))
        number = Signal(range(len(words)))       # the word on ``block``
        shifts = Const(sum(1 << k for k in nonzero), len(words)).bit_select(number, 1)
        m.d.comb += self.block.payload.eq(Mux(shifts, shifted[:dw], 0))
        with m.If(self.events.store):
            m.d.sync += [shifted.eq(Cat(words[k] for k in nonzero)), number.eq(0)]
        with m.Elif(self.block.ready):
            m.d.sync += number.eq(number + 1)
            with m.If(shifts):
                m.d.sync += shifted.eq(shifted >> dw)


def _registered_sum(m, values, name):
    """The sum of ``values`` (of equal widths, modulo their width), as a tree of registered
    pairwise sums (one carry chain between registers): it lags the values by
    ``ceil(log2(len(values)))`` cycles, at least one. COUNTERS waits for idle groups, and a
    group's last count precedes its RUN's end by the post-writer's drain
    (:data:`~flexigan.hw.arch.timing.POST_DRAIN`, more than the four cycles of 16 groups), so
    the stored block does not lag."""
    assert max(1, ceil_log2(len(values))) < POST_DRAIN, "the counters' sums lag too far"
    level = 0
    while True:
        sums = []
        for k in range(0, len(values), 2):
            total = Signal(len(values[0]), name=f"total_{name}_{level}_{k // 2}")
            m.d.sync += total.eq(sum(values[k:k + 2]))
            sums.append(total)
        if len(sums) == 1:
            return sums[0]
        values, level = sums, level + 1
