"""Spreading a layer's work over the groups: pieces, balance, round-robin merge."""

from dataclasses import dataclass

import numpy as np

from flexigan.compiler.schedule import (
    MIN_UNITS_PER_GROUP,
    balance,
    coalesce_loads,
    cut_pieces,
    merge_streams,
    merge_units,
)
from flexigan.hw.arch import isa


@dataclass(frozen=True)
class Unit:
    cost: int


def test_few_rows_are_cut_into_columns_too():
    # One work unit per piece, 22 output rows of 64 pixels, 16 groups: whole-row bands leave
    # some groups two rows and others one; row x column pieces share the pixels evenly.
    pieces = cut_pieces(22, 64, 1, 16)
    assert any(c1 - c0 < 64 for _, _, c0, c1 in pieces)
    covered = np.zeros((22, 64), int)
    for r0, r1, c0, c1 in pieces:
        covered[r0:r1, c0:c1] += 1
    assert (covered == 1).all()
    queues = balance([Unit((r1 - r0) * (c1 - c0)) for r0, r1, c0, c1 in pieces], 16)
    assert max(sum(u.cost for u in q) for q in queues) <= 1.1 * 22 * 64 / 16


def test_enough_units_leave_the_output_whole():
    assert cut_pieces(22, 64, MIN_UNITS_PER_GROUP * 16, 16) == ((0, 22, 0, 64),)


def test_balance_gives_the_largest_units_first_to_the_least_loaded_group():
    queues = balance([Unit(c) for c in (5, 1, 4, 3, 3)], 2)
    assert [[u.cost for u in q] for q in queues] == [[5, 3], [4, 3, 1]]


def test_merge_takes_one_run_per_group_per_round_with_its_loads():
    a = [("DMA_LOAD", {"n": 1}), ("RUN", {"n": 2}), ("RUN", {"n": 3})]
    b = [("RUN", {"n": 4}), ("DMA_LOAD", {"n": 5}), ("RUN", {"n": 6}), ("BARRIER", {})]
    merged = [operands.get("n", op) for op, operands in merge_streams([a, b])]
    assert merged == [1, 2, 4, 3, 5, 6, "BARRIER"]


def test_merge_with_costs_issues_runs_in_the_order_the_groups_start_them():
    # Group a's first RUN is long: group b's two short ones start before a's second.
    a = [("RUN", {"n": 1}), ("DMA_LOAD", {"n": 2}), ("RUN", {"n": 3})]
    b = [("RUN", {"n": 4}), ("RUN", {"n": 5}), ("RUN", {"n": 6})]
    merged = [operands["n"] for _, operands in merge_streams([a, b], [[10, 1], [2, 2, 2]])]
    assert merged == [1, 4, 5, 6, 2, 3]


def test_a_load_two_groups_share_comes_once_after_their_earlier_units():
    # Groups 0 and 1 share the load of their second units' tiles: group 1, whose first unit
    # is one RUN, waits for group 0's two before it (the load would overwrite their tiles).
    def run(n):
        return [("RUN", {"n": n})]

    shared = [("DMA_LOAD", {"n": "load"})]
    units = [[[run(1), run(2)], [run(3)]], [[run(4)], [run(5)]]]
    loads = [[[], shared], [[], shared]]
    merged = [operands["n"] for _, operands in merge_units(units, loads)]
    assert merged == [1, 4, 2, "load", 5, 3]


def _load(mask, ext, space=isa.Space.WGT, local=0, length=256, op="DMA_LOAD"):
    return (op, {"space": space, "group_mask": mask, "ext_addr": ("constants", ext),
                 "local_addr": local, "length": length})


def _run(mask):
    return ("RUN", {"group_mask": mask})


def test_loads_of_the_same_bytes_into_several_groups_become_one():
    code = [_load(0x1, 0), _load(0x1, 256, isa.Space.PARAM), _run(0x1),
            _load(0x2, 0), _load(0x2, 256, isa.Space.PARAM), _run(0x2),
            _load(0x4, 0, op="UOP_LOAD", space=isa.Space.UOP),
            _load(0x8, 0, op="UOP_LOAD", space=isa.Space.UOP)]
    assert coalesce_loads(code) == [
        _load(0x3, 0), _load(0x3, 256, isa.Space.PARAM), _run(0x1), _run(0x2),
        _load(0xc, 0, op="UOP_LOAD", space=isa.Space.UOP)]


def test_a_load_never_passes_an_instruction_of_its_groups_or_a_fence():
    code = [
        _load(0x1, 0), _run(0x3), _load(0x2, 0),               # group 1 runs in between
        _load(0x4, 0), ("BARRIER", {"group_mask": 0xf}), _load(0x8, 0),    # a fence
        _load(0x1, 0, local=8), _load(0x2, 0, local=16),       # another place
        _load(0x1, 0, length=128), _load(0x2, 0, length=256),  # other bytes
        ("DMA_LOAD", {"space": isa.Space.ACT, "ext_addr": ("inputs", 0), "local_addr": 0,
                      "length": 64}),
        ("DMA_LOAD", {"space": isa.Space.ACT, "ext_addr": ("inputs", 0), "local_addr": 0,
                      "length": 64}),                          # ACT: one memory, no groups
    ]
    merged = coalesce_loads(code)
    assert merged[:5] == [_load(0x1, 0), _run(0x3), _load(0x6, 0),
                          ("BARRIER", {"group_mask": 0xf}), _load(0x8, 0)]
    assert merged[5:] == code[6:]
