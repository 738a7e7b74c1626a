"""Spreading a layer's work over the groups: pieces, balance, round-robin merge."""

from dataclasses import dataclass

import numpy as np

from flexigan.compiler.schedule import MIN_UNITS_PER_GROUP, balance, cut_pieces, merge_streams


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
