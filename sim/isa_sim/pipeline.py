"""The timing of one RUN in an engine group's pipeline, and the crossbar's sharing of banks.

A group runs its RUNs through a pipeline of three stages, each overlapping the next RUN's
earlier stages:

- the **decoder** reads the micro-program, ``uop_count + DECODE_CYCLES`` cycles, while the
  previous RUN's taps are generated; it hands the RUN to the access engine when that is free;
- the **access engine** issues one tap per cycle to the lanes: a pixel takes ``passes x
  max(1, taps)`` cycles (an empty nest is one null step per pass), a pixel without MAC one
  cycle (the execute engine's). With the sparse core on, taps come in bundles (the steps of
  :class:`~flexigan.hw.agen.AddressGenerator`: where the innermost loop's ``act_stride`` is 1,
  up to ``bundle_width`` taps of one word, from the innermost level's start or a word's first
  byte; otherwise one tap) and a pass takes ``max(1, non-zero taps)`` cycles per bundle
  (:func:`access_cycles`). Between two RUNs it idles ``ACCESS_BUBBLE`` cycles;
- the **post-writer** requantizes and writes one lane per cycle: a pixel with POST and WRITE
  (or NORM SAVE) takes ``lanes`` cycles of it, with NORM FINISH ``NORM_FINISH_CYCLES`` per
  lane (:func:`post_cycles`), overlapped with later pixels' taps (a two-stage flow: the RUN
  ends after ``max over k`` of the first ``k`` pixels' access plus the last pixels' post;
  :meth:`RunFlow.end`).

A RUN that finds the group idle also pays the pipeline's fill and drain:
``ACCESS_FILL`` (fetch, sparse core, weight fetch; only with MAC), ``EXECUTE_FILL``
(lanes, job queue) and, with POST, ``POST_DRAIN`` (with NORM, ``NORM_DRAIN``); a RUN queued
behind another overlaps them, so a chain of RUNs pays them once. The access engine runs at
most ``AHEAD_PIXELS`` pixels ahead of the post-writer (:meth:`RunFlow.access_end`).

Crossbar: the access engine keeps the last word it read and reads the crossbar only when a
tap's word differs (the line is emptied at each RUN start), so a RUN asks each bank for its
reads (word changes along its pixel, pass, tap addresses) over its access cycles
(:func:`crossbar_reads`). A bank serves one word per cycle, shared max-min fairly (round robin)
among the streams of the groups still reading; a stream asking more than its share slows down
by the ratio (:func:`fair_slowdowns`). The cycle model (:mod:`.cycle_model`) decides which
streams share the banks when.

The constants (``DECODE_CYCLES`` ...) are those of :mod:`flexigan.hw.arch.timing`, measured on
the RTL group (:mod:`flexigan.hw.group`, tests/hw/test_group.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...hw.arch import isa
from ...hw.arch.timing import (
    ACCESS_FILL,
    AHEAD_PIXELS,
    EXECUTE_FILL,
    NORM_CARRY_CYCLES,
    NORM_DRAIN,
    NORM_FINISH_CYCLES,
    POST_DRAIN,
)

__all__ = ["RunWork", "RunFlow", "run_work", "post_cycles", "access_cycles", "crossbar_reads",
           "fair_slowdowns"]


@dataclass(frozen=True, eq=False)
class RunWork:
    """What one group's RUN asks of the group's pipeline and of the crossbar.

    Attributes
    ----------
    decode : int
        Decoder cycles besides ``DECODE_CYCLES``: one per micro-op.
    access : int64 array
        Access-engine cycles per pixel, at full crossbar speed.
    post : int
        Post-writer cycles per pixel (0: the RUN writes nothing).
    crossbar : float array or None
        Its reads per bank per access cycle; None for a RUN without MAC (it reads nothing).
    stream : tuple
        Its ACT address pattern: groups reading the same stream share a broadcast read.
    norm : bool
        Its pixel ends with NORM (it writes PARAM, not ACT).
    """

    decode: int
    access: np.ndarray
    post: int
    crossbar: np.ndarray | None
    stream: tuple
    norm: bool = False

    @property
    def fill(self):
        """Cycles from the access engine's start to the post-writer's, paid when the group
        was idle."""
        return EXECUTE_FILL + (ACCESS_FILL if self.crossbar is not None else 0)

    @property
    def drain(self):
        """Cycles from the last pixel's post to its last byte, paid when the group was idle."""
        if self.norm:
            return NORM_DRAIN
        return POST_DRAIN if self.post else 0


@dataclass(frozen=True, eq=False)
class RunFlow:
    """A RUN's pixels flowing through the access engine and the post-writer.

    Attributes
    ----------
    begin : int
        The cycle its access engine starts.
    work : RunWork
    floor : int
        When the group's earlier RUNs end.
    """

    begin: int
    work: RunWork
    floor: int

    def access_end(self, taps, end):
        """When its access engine is done with it, for the pixels' access cycles ``taps`` and
        its ``end``: not before the post-writer has at most AHEAD_PIXELS pixels left (the
        buffers between them hold no more: a post-bound RUN holds the access engine back)."""
        access = self.begin + int(np.ceil(taps.sum()))
        if not self.work.post:
            return access
        return max(access, end - self.work.drain - AHEAD_PIXELS * self.work.post)

    def end(self, taps):
        """When its last byte is written if its pixels take ``taps`` access cycles each (the
        work's ``access``, slowed down by the crossbar), after the group's earlier RUNs."""
        lanes = np.full(taps.size, self.work.post)
        flow = float(np.max(np.cumsum(taps) + np.cumsum(lanes[::-1])[::-1])) if taps.size \
            else 0.0
        return max(self.begin + int(np.ceil(flow)) + self.work.fill,
                   self.floor + int(lanes.sum())) + self.work.drain


def run_work(config, sparse, args, record):
    """The :class:`RunWork` of a group's RUN (its run registers ``args``) from what it did
    (:class:`~.semantics.RunRecord`)."""
    access = access_cycles(config, sparse, record)
    program = record.program
    stream = (args["act_offset"], args["rows"], args["cols"], program.act,
              program.act_taps.tobytes())
    return RunWork(args["uop_count"], access, post_cycles(program, record.lanes),
                   crossbar_reads(config, record, access), stream, program.norm is not None)


def post_cycles(program, lanes):
    """Post-writer cycles per pixel of a RUN: a lane per cycle for a WRITE or NORM SAVE
    (NORM_CARRY_CYCLES for a SAVE after ``CLEAR use_bias=1``: the bias is read and added
    first), NORM_FINISH_CYCLES per lane for NORM FINISH, 0 without either."""
    norm = program.norm
    if norm is not None and norm["step"] == isa.NormStep.FINISH:
        return NORM_FINISH_CYCLES * max(1, lanes)
    if norm is not None and any(op == isa.UopOp.CLEAR and fields["use_bias"]
                                for op, fields in program.body):
        return NORM_CARRY_CYCLES * max(1, lanes)
    return max(1, lanes) if program.writes or norm is not None else 0


def access_cycles(config, sparse, record):
    """Access-engine cycles of each pixel of a RUN: its MAC passes' (:func:`_pass_cycles`),
    or one (the execute engine's) for a RUN without MAC."""
    access = np.zeros(record.pixels.size, np.int64)
    for mac_pass in record.passes:
        access += _pass_cycles(config, sparse, record.program, mac_pass)
    if not record.passes:
        access[:] = 1
    return access


def _pass_cycles(config, sparse, program, mac_pass):
    """Access cycles of one MAC pass per pixel: a cycle per tap, or with the sparse core,
    ``max(1, non-zero taps)`` per bundle (the steps of the address generator)."""
    taps = program.act_taps.size
    if not taps:
        return 1                           # the null step of an empty nest
    if not sparse:
        return taps
    addresses = mac_pass.addresses
    count, stride = program.loops[-1].count, program.loops[-1].act_stride
    start = np.ones(addresses.shape, bool)
    if stride % (1 << config.act_addr_width) == 1:
        # A bundle starts with the innermost level, at a word's first byte, or after
        # bundle_width taps.
        at = np.arange(taps)
        reset = (at % count == 0)[None, :] | (addresses % config.axi_bytes == 0)
        since = at - np.maximum.accumulate(np.where(reset, at, 0), axis=1)
        start = since % config.bundle_width == 0
    bundle = np.cumsum(start.ravel()) - 1
    kept = np.bincount(bundle, weights=(mac_pass.activations != 0).ravel())
    pixel = np.repeat(np.arange(addresses.shape[0]), start.sum(axis=1))
    return np.bincount(pixel, weights=np.maximum(1, kept), minlength=addresses.shape[0]) \
        .astype(np.int64)


def crossbar_reads(config, record, access):
    """A RUN's crossbar reads per bank per access cycle (``access``: its cycles per pixel), or
    None for a RUN without MAC."""
    if not record.passes:
        return None
    reads = np.zeros(config.act_banks)
    taps = record.program.act_taps
    if taps.size:
        # The access engine reuses the last word it read: a read each time the word changes
        # along the RUN's (pixel, pass, tap) addresses.
        words = np.tile(record.pixels[:, None] + taps[None, :], (1, len(record.passes))) \
            .ravel() // config.axi_bytes
        new = np.ones(words.size, bool)
        new[1:] = words[1:] != words[:-1]
        banks = words[new] * config.axi_bytes // config.act_bank_bytes
        reads = np.bincount(banks, minlength=config.act_banks) / access.sum()
    return reads


def fair_slowdowns(demands):
    """Each stream's slowdown on banks that serve one access per cycle, shared max-min fairly
    (round-robin arbitration): ``demands[i, b]`` are stream ``i``'s accesses per cycle to
    bank ``b``; a stream slows down by its worst bank's demand over what it is granted."""
    slow = np.ones(len(demands))
    for demand in demands.T[demands.sum(axis=0) > 1]:
        left, order = 1.0, np.argsort(demand)
        for k, stream in enumerate(order):
            granted = min(demand[stream], left / (len(demand) - k))
            left -= granted
            if demand[stream] > granted:
                slow[stream] = max(slow[stream], demand[stream] / granted)
    return slow
