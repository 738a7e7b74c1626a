"""What the compiler knows of the groups' memories (compiler/memories.py): the loads that put
tiles, PARAM tables and a shared LUT into several groups at once."""

from types import SimpleNamespace

from flexigan.compiler.memories import Memories
from flexigan.compiler.program import ImageBuilder
from flexigan.hw.arch import isa
from flexigan.hw.arch.config import AcceleratorConfig

CONFIG = AcceleratorConfig(groups=4, lanes=2, weight_bytes=256, param_entries=16)


def _tile(n, weights=8, entries=2, lut=b""):
    return SimpleNamespace(key=n, weights=bytes([n]) * weights,
                           params=bytes([n]) * entries * isa.PARAM_BYTES, lut=lut)


def test_the_tiles_of_several_groups_load_in_one_dma_each_group_at_its_own_place():
    memories, code = Memories(CONFIG, ImageBuilder()), []
    tiles = [_tile(n) for n in range(4)]
    places = memories.load_tiles(list(enumerate(tiles)), code)
    spaces = [(operands["space"], operands["group_mask"], operands["length"])
              for _, operands in code]
    assert spaces == [(isa.Space.WGT, 0b1111, 32), (isa.Space.PARAM, 0b1111, 64)]
    assert [p.wgt_base for p in places.values()] == [0, 8, 16, 24]
    assert [p.param_base for p in places.values()] == [0, 2, 4, 6]
    # Loaded: asking again loads nothing; the next tiles go into the other half.
    assert memories.load_tiles(list(enumerate(tiles)), code) == places and len(code) == 2
    later = memories.load_tiles([(0, _tile(9))], code)
    assert later[0].half == 1 and later[0].wgt_base == CONFIG.weight_bytes // 2


def test_scattered_tiles_sit_at_the_same_place_in_each_group():
    # A broadcast layer's: each group's own tile, one scatter DMA per memory.
    memories, code = Memories(CONFIG, ImageBuilder()), []
    places = memories.load_tiles([(1, _tile(1, 6)), (3, _tile(3, 6))], code, scatter=True)
    assert [(p.wgt_base, p.param_base) for p in places.values()] == [(0, 0), (0, 0)]
    chunk = max(CONFIG.axi_bytes, 2 * isa.PARAM_BYTES)
    assert [(op["space"], op["group_mask"], op["chunk"]) for _, op in code] == \
        [(isa.Space.WGT, 0b1010, CONFIG.axi_bytes), (isa.Space.PARAM, 0b1010, chunk)]
    # The next unit's tiles go into the other half.
    later = memories.load_tiles([(1, _tile(5, 6)), (3, _tile(7, 6))], code, scatter=True)
    assert {p.wgt_base for p in later.values()} == {CONFIG.weight_bytes // 2}


def test_a_stage_s_param_entries_load_as_one_table_and_a_shared_lut_once():
    memories = Memories(CONFIG, ImageBuilder())
    queues = [[SimpleNamespace(tile=_tile(2 * g + u, entries=1)) for u in range(2)]
              for g in range(4)]
    code = memories.param_tables(queues, False, [[0, 1], [2, 3]])
    assert [(op["space"], op["group_mask"], op["length"]) for _, op in code] == \
        [(isa.Space.PARAM, 0b1111, 8 * isa.PARAM_BYTES)]
    assert memories.param_tables(queues, False, [[0, 1], [2, 3]]) == []
    lut = bytes(range(256))
    first = memories.load_shared_lut(lut)
    assert len(first) == 1 and first[0][1]["group_mask"] == 0b1111
    assert memories.load_shared_lut(lut) == []
    # The next table goes into the other half of the tables: it loads while the RUNs read
    # this one.
    other = memories.load_shared_lut(bytes(256))
    assert other[0][1]["local_addr"] != first[0][1]["local_addr"]
