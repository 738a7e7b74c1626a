"""The number of groups a program uses, chosen by the cycle model.

A small model can run quicker on fewer groups than the machine has: its layers are a few
hundred MAC steps each, and what a layer spread over every group costs in loads (a DMA per
cluster of groups and memory latency, its tiles for more groups) outweighs the MAC steps it
spreads. :func:`lower_quickest` lowers the model for the machine's groups and for halves of
them (16, 8, 4, 2, 1), runs each program in the instruction-level simulator's cycle model with
the sparse core off (the cycles do not depend on the data then) and keeps the quickest; so a
machine with more groups never runs a model slower than one with fewer. A candidate whose
compute bound (its lowered MACs over its lanes) is already above the best cycles so far is not
lowered: the large models, which want every group, pay for one more lowering at most.

This lives above the compiler (DESIGN.md: the compiler never imports a simulator).
"""

from __future__ import annotations

from .compiler.lower import lower
from .errors import FitError
from .sim import isa_sim

__all__ = ["candidate_groups", "lower_quickest"]


def candidate_groups(groups):
    """The group counts tried on a machine of ``groups``: it, then its halves down to 1."""
    counts = [groups]
    while counts[-1] > 1:
        counts.append(counts[-1] // 2)
    return counts


def _cycles(program):
    """Cycles of one run of ``program`` (all its frames), sparse off."""
    return isa_sim.run(program.image, program.config, sparse=False).cycles


def _compute_bound(program, groups):
    """Cycles ``program``'s lowered MACs need at least on ``groups`` groups."""
    macs = sum(layer["macs_useful"] for layer in program.layout["layers"]) * program.batch
    return macs / (groups * program.config.lanes)


def lower_quickest(qgraph, config, reorder=True, batch=1):
    """:func:`~flexigan.compiler.lower.lower` on the number of groups (of
    :func:`candidate_groups`) whose program the cycle model finds quickest (the most groups
    on a tie); its ``layout["groups_used"]`` says which."""
    best = lower(qgraph, config, reorder=reorder, batch=batch)
    fewer = candidate_groups(config.groups)[1:]
    if not fewer:
        return best
    best_cycles = _cycles(best)
    for groups in fewer:
        if _compute_bound(best, groups) >= best_cycles:
            break
        try:
            program = lower(qgraph, config, reorder=reorder, batch=batch, groups=groups)
        except FitError:
            continue
        cycles = _cycles(program)
        if cycles < best_cycles:
            best, best_cycles = program, cycles
    return best
