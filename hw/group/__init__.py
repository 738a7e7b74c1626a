"""SIMD engine group: micro-sequencer, decoupled access and execute engines, lanes, post.

A group runs its RUNs in order. Each RUN flows through a pipeline of blocks joined by streams::

    RunQueue -> Decoder -+-> AddressGenerator -> ActFetch -> FIFO -> SparseCore -> WeightFetch
                         |                        (crossbar)                     (weight buffer)
                         |                                                             |
                         |                                                          FIFO
                         |                                                             v
                         +-----------------------> FIFO --------------------------> Execute
                                                                                 (lanes, CLEAR)
                                                                                       |
                                                                                  job FIFO
                                                                                       v
                                                                     PostWriter (PARAM, Post,
                                                                      crossbar write)

- the **RUN queue** (:mod:`.run_queue`) holds the RUNs from acceptance to completion and hands
  them to the decoder in order;
- the **decoder** (:mod:`.decoder`) reads the RUN's micro-program from the micro-op memory
  once, configures the address generator (access micro-ops) and hands the execute body to the
  execute engine;
- the **access engine** (address generator, activation fetch (:mod:`.act_fetch`) through the
  crossbar, zero skip, weight fetch (:mod:`.weight_fetch`)) runs ahead of the execute engine by
  up to ``fifo_depth`` steps per FIFO; it fetches up to
  :attr:`~flexigan.hw.arch.config.AcceleratorConfig.bundle_width` taps of one word per step
  where the innermost loop walks bytes, and the sparse core issues their non-zero ones one per
  cycle;
- the **execute engine** (:mod:`.execute`) feeds one step per cycle to the lanes and, at the end
  of each pixel, snapshots the accumulators into a job for the post-processor, so the next
  pixel's MACs overlap the current pixel's POST and WRITE;
- the **post-writer** (:mod:`.post_writer`) requantizes one lane per cycle and writes the bytes
  to ACT (a pixel's lanes that fall in one word as one write); a NORM pixel's job goes to its
  NORM writer (:mod:`.norm_writer`), which saves the lanes' sums to PARAM (SAVE) or makes each
  lane's normalizing PARAM entry from them with the bit-serial unit of :mod:`flexigan.hw.norm`
  (FINISH).

:class:`Group` (:mod:`.group`) joins them; :mod:`.layouts` holds the payloads between them.

Consecutive RUNs overlap too: the next RUN is decoded and its addresses generated while the
current one finishes. The execute body must have the form the compiler emits, ``[CLEAR] MAC* [POST
[WRITE] | NORM]`` (NOPs and access micro-ops anywhere), its MACs all with ``square`` or all without,
a MAC needs ``WGT.lane_stride == 1``, a NORM a RUN of one pixel and a NORM FINISH a ``count``
of at least 1; anything else sets the sticky ``error``
output (the RUN still completes, its results are unspecified).
"""

from .execute import JOB_DEPTH
from .group import Group
from .layouts import act_tag_layout, local_spaces, local_write_layout, slot_layout

__all__ = ["JOB_DEPTH", "local_spaces", "local_write_layout", "act_tag_layout", "slot_layout",
           "Group"]
