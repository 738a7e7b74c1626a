"""AcceleratorConfig: the single source of the accelerator's shape, and the named presets.

Everything that sizes hardware — the compiler's tiling, the instruction simulator's cycle model
and the RTL — reads one frozen :class:`AcceleratorConfig`, passed explicitly. Every size derived
from it is a property here, and every check on it runs when it is made, so a config that exists
is one the compiler, the simulators and the RTL all accept. The fixed structure that does not
vary with the config (queue depths, RUN slots) is named here too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from amaranth.utils import ceil_log2

from . import isa
from .timing import ONCHIP_MEM_LATENCY

__all__ = ["AcceleratorConfig", "PRESETS", "preset", "BUNDLE", "RUN_SLOTS", "FETCH_INSNS",
           "FETCH_INSNS_MAX", "QUEUE_INSNS", "DMA_QUEUE", "MAX_SEGMENT_UOPS", "RUN_COUNTERS"]

#: Most taps in one access step (the sparse core's look-ahead).
BUNDLE = 4
#: RUNs a group holds: the one executing and those queued behind it (the controller waits
#: when all are taken).
RUN_SLOTS = 4
#: Fewest and most instructions read per fetch (at least one AXI beat): a fetch reads about
#: what the bus moves in one memory latency, so that the latency costs at most half its time.
FETCH_INSNS = 2
FETCH_INSNS_MAX = 8
#: Instructions the controller's prefetch queue holds (at least two fetches).
QUEUE_INSNS = 4
#: DMA instructions queued ahead of the DMA engine (the default of
#: :attr:`AcceleratorConfig.dma_queue`).
DMA_QUEUE = 8
#: Longest micro-program the compiler emits for one RUN (a segment's), in micro-ops.
MAX_SEGMENT_UOPS = 12


@dataclass(frozen=True)
class AcceleratorConfig:
    """Shape of one accelerator instance.

    Parameters
    ----------
    groups : int
        SIMD engine groups; each runs its own micro-program (MIMD across groups).
    lanes : int
        MAC lanes per group; each lane owns one output channel, the activation is broadcast.
    data_width, acc_width : int
        Activation/weight width and accumulator width in bits (int8 / int32).
    act_banks, act_bank_bytes : int
        Activation scratchpad banks behind the crossbar, and the bytes in each.
    weight_bytes : int
        Weight buffer per group, in bytes; half of it is filled while the other half is used.
    param_entries : int
        Per-group post-processing parameter memory (bias, multiplier, shift per channel).
    uop_depth : int
        Micro-op memory depth per group, in micro-ops.
    fifo_depth : int
        Depth of the FIFOs between each group's access and execute engines.
    axi_data_width : int
        External memory data width in bits (bytes per cycle = axi_data_width / 8).
    mem_latency : int
        External memory latency in cycles per burst.
    burst_bytes : int
        Largest DMA burst; each burst pays ``mem_latency`` once.
    clock_mhz : float
        Target clock, used only to turn cycles into time in reports.
    memory_bytes : int or None
        Bytes of memory the accelerator's AXI master reaches on the target (a board's on-chip
        memory, which holds the whole image: program, weights and activations); ``None``: as
        much as the image needs (the simulation target's external memory).
    counters : tuple of str
        The performance counters the hardware keeps, of :data:`isa.COUNTER_NAMES`; the others
        read zero. ``flexigan run`` reads ``cycles``, ``macs_issued``, ``macs_skipped`` and
        ``dma_bytes``.
    counter_bits : int
        Bits the performance counters keep, 32 to 64: each counts modulo ``2 ** counter_bits``
        and reads (register or COUNTERS block) as 64 bits with the rest zero. 32 bits hold
        three minutes of cycles at 20 MHz and halve the counters' flip-flops.
    dma_queue : int
        DMA instructions queued ahead of the DMA engine (issue waits when it is full). Eight
        fill block RAM on an iCE40 (seven EBR for 103-bit entries); two are flip-flops.
    dma_realigners : int
        2: the DMA engine realigns loads and stores each with its own shifter; 1: with one
        between them (they never overlap), behind a multiplexer.
    fetch_queue : int or None
        Instructions the prefetch queue holds, at least two; ``None``: two fetches' worth (see
        :attr:`queue_insns`). A queue of two fetches one instruction at a time.
    """

    groups: int = 16
    lanes: int = 8
    data_width: int = 8
    acc_width: int = 32
    act_banks: int = 16
    act_bank_bytes: int = 16384
    weight_bytes: int = 32768
    param_entries: int = 1024
    uop_depth: int = 64
    fifo_depth: int = 8
    axi_data_width: int = 512
    mem_latency: int = 32
    burst_bytes: int = 4096
    clock_mhz: float = 200.0
    memory_bytes: int | None = None
    counters: tuple = isa.COUNTER_NAMES
    counter_bits: int = 64
    dma_queue: int = DMA_QUEUE
    dma_realigners: int = 2
    fetch_queue: int | None = None

    def __post_init__(self):
        self._check_counters()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "counters" or f.name in ("memory_bytes", "fetch_queue") and value is None:
                continue
            if f.name == "clock_mhz":
                ok = isinstance(value, (int, float)) and value > 0
            else:
                ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
            if not ok:
                raise ValueError(f"AcceleratorConfig.{f.name} must be a positive "
                                 f"{'number' if f.name == 'clock_mhz' else 'integer'}, "
                                 f"not {value!r}")
        if self.data_width != 8 or self.acc_width != 32:
            raise ValueError(f"only int8 data with int32 accumulators is supported, not "
                             f"data_width={self.data_width}, acc_width={self.acc_width}")
        if self.axi_data_width % 8 or self.axi_data_width & (self.axi_data_width - 1):
            raise ValueError(f"AcceleratorConfig.axi_data_width must be a power of two >= 8, "
                             f"not {self.axi_data_width!r}")
        if self.memory_bytes is not None and self.memory_bytes % self.axi_bytes:
            raise ValueError(f"AcceleratorConfig.memory_bytes must be a multiple of the AXI "
                             f"width ({self.axi_bytes} bytes), not {self.memory_bytes!r}")
        if self.groups > isa.MAX_GROUPS:
            raise ValueError(f"AcceleratorConfig.groups must be at most {isa.MAX_GROUPS} (a "
                             f"group mask has {isa.GROUP_MASK_BITS} bits), not {self.groups!r}")
        if self.param_entries // 2 < self.lanes:
            raise ValueError(f"AcceleratorConfig.param_entries must double-buffer the "
                             f"{self.lanes} lanes (at least {2 * self.lanes}), not "
                             f"{self.param_entries!r}")
        if not 32 <= self.counter_bits <= 64:
            raise ValueError(f"AcceleratorConfig.counter_bits must be from 32 to 64, not "
                             f"{self.counter_bits!r}")
        if self.dma_realigners not in (1, 2):
            raise ValueError(f"AcceleratorConfig.dma_realigners must be 1 or 2, not "
                             f"{self.dma_realigners!r}")
        if self.fetch_queue is not None and self.fetch_queue < 2:
            raise ValueError(f"AcceleratorConfig.fetch_queue must be at least 2 instructions, "
                             f"not {self.fetch_queue!r}")
        if self.uop_depth < MAX_SEGMENT_UOPS:
            raise ValueError(f"AcceleratorConfig.uop_depth must hold a segment's micro-program "
                             f"(at least {MAX_SEGMENT_UOPS}), not {self.uop_depth!r}")

    def _check_counters(self):
        """``counters`` as a tuple (a manifest holds a list), and only known names."""
        if isinstance(self.counters, str) or not all(isinstance(c, str) for c in self.counters):
            raise ValueError(f"AcceleratorConfig.counters must be a sequence of counter names, "
                             f"not {self.counters!r}")
        object.__setattr__(self, "counters", tuple(self.counters))
        unknown = [c for c in self.counters if c not in isa.COUNTER_NAMES]
        if unknown:
            raise ValueError(f"AcceleratorConfig.counters names no counter {unknown[0]!r}; "
                             f"choose from {', '.join(isa.COUNTER_NAMES)}")

    @property
    def total_lanes(self):
        """MAC lanes in the whole machine."""
        return self.groups * self.lanes

    @property
    def act_bytes(self):
        """On-chip activation memory in bytes."""
        return self.act_banks * self.act_bank_bytes

    @property
    def axi_bytes(self):
        """External memory bytes per cycle."""
        return self.axi_data_width // 8

    @property
    def lut_tables(self):
        """Activation tables per group: one per lane for each half of the double-buffered
        tile constants."""
        return 2 * self.lanes

    @property
    def bundle_width(self):
        """Most taps in one access step: :data:`BUNDLE`, or fewer when a word holds fewer
        bytes."""
        return min(BUNDLE, self.axi_bytes)

    @property
    def act_addr_width(self):
        """Bits of a byte address in the activation scratchpad."""
        return ceil_log2(self.act_bytes)

    @property
    def word_addr_width(self):
        """Bits of a word address in the activation scratchpad (words of ``axi_bytes``)."""
        return ceil_log2(self.act_bytes // self.axi_bytes)

    @property
    def wgt_addr_width(self):
        """Bits of a byte address in a group's weight buffer."""
        return ceil_log2(self.weight_bytes)

    @property
    def fetch_insns(self):
        """Instructions read per fetch: what the bus moves in ``mem_latency`` cycles, a power
        of two from :data:`FETCH_INSNS` to :data:`FETCH_INSNS_MAX`, and a whole AXI beat's
        worth at least. (Each fetch pays the latency once: with a 64-byte bus and a latency
        of 32, two instructions a fetch cost 16.5 cycles each, eight 4.5.)"""
        moved = self.mem_latency * self.axi_bytes // isa.GLOBAL_BYTES
        wanted = 1 << max(moved, 1).bit_length() - 1
        per_fetch = max(FETCH_INSNS, self.axi_bytes // isa.GLOBAL_BYTES,
                        min(wanted, FETCH_INSNS_MAX))
        if self.fetch_queue is None:
            return per_fetch
        # A set queue holds two fetches (or one, and at least an AXI beat's instructions).
        return max(1, self.axi_bytes // isa.GLOBAL_BYTES, min(per_fetch, self.fetch_queue // 2))

    @property
    def queue_insns(self):
        """Instructions the controller's prefetch queue holds: :attr:`fetch_queue`, or two
        fetches' worth and at least :data:`QUEUE_INSNS`; never less than a fetch."""
        if self.fetch_queue is not None:
            return max(self.fetch_queue, self.fetch_insns)
        return max(QUEUE_INSNS, 2 * self.fetch_insns)

    def local_units(self, space):
        """Units (see :func:`isa.unit_bytes`) of the on-chip memory ``space``: ACT for the
        whole machine, the others per group."""
        return {isa.Space.ACT: self.act_bytes, isa.Space.WGT: self.weight_bytes,
                isa.Space.PARAM: self.param_entries, isa.Space.LUT: self.lut_tables,
                isa.Space.UOP: self.uop_depth}[isa.Space(space)]

    def replace(self, **changes):
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        return dataclasses.asdict(self)


#: The counters ``flexigan run`` reads (its report's cycles, MACs and DMA bytes).
RUN_COUNTERS = ("cycles", "macs_issued", "macs_skipped", "dma_bytes")


#: Named presets. ``sim`` is a simulation-only machine large enough that compute dominates;
#: the board presets are sized to the devices (see docs/architecture.md, "Targets").
PRESETS = {
    "sim": AcceleratorConfig(),
    # ULX3S-85F, LFE5U-85F (83,640 LUT4, 208 DP16KD, 156 MULT18X18D): 4 x 16 = 64 lanes
    # (64 multipliers, 16 DP16KD of weights per group: one per lane), 4 x 16 KB activation
    # banks (32 DP16KD); the board top's 128 KB memory takes 64 more (docs/architecture.md).
    # 25 MHz: the accelerator alone routes at 31.25 MHz (nextpnr, speed 6; docs/architecture.md).
    "ulx3s": AcceleratorConfig(groups=4, lanes=16, act_banks=4, act_bank_bytes=16384,
                               weight_bytes=16384, param_entries=512, uop_depth=32,
                               axi_data_width=32, mem_latency=ONCHIP_MEM_LATENCY,
                               burst_bytes=512,
                               clock_mhz=25.0, memory_bytes=131072),
    # iCEBreaker, iCE40UP5K (5,280 LCs, 30 x 512 B EBR, 8 SB_MAC16, 4 x 32 KB SPRAM): the
    # smallest machine the examples compile for, 1 x 2 lanes, 2 x 1 KB activation banks (two
    # EBR each, as 256 x 32 bits; the digits generator runs in the same cycles as with 2 KB)
    # and 512 B of weights in EBR; the four SPRAMs are the board top's 128 KB memory
    # (program, weights, activations). Narrow counters and short queues shrink the controller;
    # it does not fit yet (docs/boards.md, "The iCEBreaker preset").
    "icebreaker": AcceleratorConfig(groups=1, lanes=2, act_banks=2, act_bank_bytes=1024,
                                    weight_bytes=512, param_entries=32, uop_depth=16,
                                    fifo_depth=4, axi_data_width=32,
                                    mem_latency=ONCHIP_MEM_LATENCY, burst_bytes=256,
                                    clock_mhz=12.0, memory_bytes=131072,
                                    counters=RUN_COUNTERS, counter_bits=32, dma_queue=2,
                                    dma_realigners=1, fetch_queue=2),
}


def preset(name):
    """The preset config ``name``; ``ValueError`` naming the choices otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; choose from {', '.join(PRESETS)}") \
            from None
