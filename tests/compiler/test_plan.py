"""The plan's passes on small graphs: what each decides, and the check that catches a broken
plan between them."""

from dataclasses import replace

import pytest

from flexigan.compiler import ir
from flexigan.compiler.grid import Grid
from flexigan.compiler.lower import lower
from flexigan.compiler.plan import check, layers, memory, plan, storages
from flexigan.compiler.plan.types import JoinCopy
from flexigan.hw.arch import isa
from flexigan.hw.arch.config import AcceleratorConfig
from tests.helpers import (
    SIM,
    check_bit_exact,
    concat_model,
    convt_model,
    quantized,
    residual_model,
    unet_model,
)

#: A machine whose 2 KB of activation memory forces stages and spills on the models below.
SMALL = AcceleratorConfig(groups=3, lanes=4, act_banks=2, act_bank_bytes=1024, weight_bytes=384,
                          param_entries=16, uop_depth=24, axi_data_width=32, mem_latency=4,
                          burst_bytes=64)


@pytest.fixture(scope="module")
def large_convt():
    """A ConvTranspose from an 8x8 input to a 16x16 output: input and output in external
    memory, too large for SMALL's ACT in one stage."""
    return quantized(convt_model(4, 8, (8, 8), [4, 4], strides=[2, 2], pads=[1, 1, 1, 1]))[0]


@pytest.fixture(scope="module")
def residual_block():
    return quantized(residual_model("block"))[0]


def _built(qgraph, config, reorder=True):
    return layers.build(qgraph, storages.assign(qgraph, reorder), config.act_bytes,
                        config.lanes, reorder)


# --- pass 1: where values live ------------------------------------------------------------

def test_concat_of_layer_outputs_is_sliced_and_a_model_input_is_copied():
    where = storages.assign(quantized(concat_model())[0])
    assert where.slices == {"a": ("cat", 0), "b": ("cat", 3)}
    assert not [job for job in where.jobs if isinstance(job, JoinCopy)]
    assert where.locate("b") == ("cat", 3)

    # The model input is copied in, requantized to the Concat's scale.
    qgraph = quantized(concat_model(skip_input=True))[0]
    where = storages.assign(qgraph)
    assert where.slices == {"a": ("cat", 2)}
    copy, = [job for job in where.jobs if isinstance(job, JoinCopy)]
    assert (copy.join, copy.target, copy.value, copy.first_channel) == ("cat", "cat", "x", 0)
    assert copy.requant is ir.node(qgraph, "cat").q[0]


def test_conventional_baseline_stores_a_convtranspose_input_zero_inserted_and_padded():
    # k3 s2 p1 op1 on 4x4: one zero between pixels, 3-1-1 = 1 leading and 1+1 trailing rows.
    qgraph = quantized(convt_model(3, 2, (4, 4), [3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                                   output_padding=[1, 1]))[0]
    assert storages.assign(qgraph, reorder=True).storages["x"].grid == Grid.dense((3, 4, 4))
    grid = storages.assign(qgraph, reorder=False).storages["x"].grid
    assert grid == Grid(3, 4, 4, rows=10, cols=10, off_h=1, off_w=1, step_h=2, step_w=2)


# --- passes 2-4: layers, stages, buffers --------------------------------------------------

def test_each_storage_knows_the_layers_that_write_and_read_it(residual_block):
    # h's conv and the block's last conv write the halves of the Add's operand storage; the
    # block's first conv and the Add read it.
    p = _built(residual_block, SIM)
    operands = p.storage("s:operands")
    assert [p.layers[i].name for i in operands.writers] == ["h", "bc2"]
    assert [p.layers[i].name for i in operands.readers] == ["br", "sr"]
    assert p.storage("x").writers == () and p.storage("x").home == "dram"


def test_stages_cover_every_output_row_once_and_alternate_buffers(large_convt):
    p = plan(large_convt, SMALL)
    layer, = p.layers
    assert len(layer.stages) > 1
    rows = [r for stage in layer.stages for r in range(stage.first, stage.stop)]
    assert rows == list(range(16))
    for side in ("window", "staging"):
        used = [getattr(stage, side) for stage in layer.stages]
        assert used == [k % 2 for k in range(len(layer.stages))]
    first, second = layer.windows
    assert first.addr + first.size <= second.addr or second.addr + second.size <= first.addr


def test_passes_return_a_new_plan_and_leave_theirs_as_it_was(large_convt):
    built = _built(large_convt, SMALL)
    staged = memory.stage(built)
    allocated = memory.allocate(staged)
    assert built.layers[0].stages == () and built.layers[0].windows == ()
    assert staged.layers[0].stages and {b.addr for b in staged.layers[0].windows} == {None}
    assert None not in {b.addr for b in allocated.layers[0].windows}


def test_a_spilled_tensor_goes_through_dma():
    # y = conv_a(x) + conv_b(x) on SMALL: the Add's operands do not fit next to its output.
    qgraph = quantized(residual_model("scales"))[0]
    p = plan(qgraph, SMALL)
    spilled = p.storage("y:operands")
    assert spilled.home == "dram" and spilled.act_addr is None
    for i in spilled.writers:
        assert all(stage.staging is not None for stage in p.layers[i].stages)
    for i in spilled.readers:
        assert all(stage.window is not None for stage in p.layers[i].stages)

    program = lower(qgraph, SMALL)
    assert program.layout["spilled"] == ["y:operands"]
    start, size = program.layout["regions"]["spills"]
    code = program.code
    moves = {"DMA_STORE": set(), "DMA_LOAD": set()}
    for index, layer in enumerate(program.layout["layers"]):
        for at in range(layer["first"], layer["last"]):
            op, fields = isa.decode_global(int.from_bytes(
                code[at * isa.GLOBAL_BYTES:(at + 1) * isa.GLOBAL_BYTES], "little"))
            if op.name in moves and start <= fields["ext_addr"] < start + size:
                moves[op.name].add(index)
    # Its two writers each store their half, after loading the rows back (the other half);
    # its reader loads it.
    assert moves == {"DMA_STORE": set(spilled.writers),
                     "DMA_LOAD": set(spilled.writers) | set(spilled.readers)}


# --- the check ----------------------------------------------------------------------------

def test_check_rejects_an_overlapping_buffer(residual_block):
    p = plan(residual_block, SIM)
    # br (written by layer 1, read by layer 2) is live while the operand storage is.
    operands = p.storage("s:operands")
    moved = tuple(replace(s, act_addr=operands.act_addr) if s.name == "br" else s
                  for s in p.storages)
    with pytest.raises(AssertionError, match=r"^storage 'br' \(bytes 0\.\.120, layers 1\.\.2\) "
                                             r"overlaps storage 's:operands'"):
        check(replace(p, storages=moved))


def test_check_rejects_stages_that_skip_rows(large_convt):
    p = plan(large_convt, SMALL)
    layer, = p.layers
    short = replace(layer, stages=layer.stages[:1] + layer.stages[2:])
    with pytest.raises(AssertionError, match=r"^layer 'y': stages .* do not cover rows 0\.\.16"):
        check(replace(p, layers=(short,)))


def test_check_rejects_a_window_too_small_for_its_stage(large_convt):
    p = plan(large_convt, SMALL)
    layer, = p.layers
    small = replace(layer, windows=tuple(replace(b, size=b.size // 2) for b in layer.windows))
    with pytest.raises(AssertionError, match=r"^layer 'y': stage 0 needs \d+ bytes of window"):
        check(replace(p, layers=(small,)))


def test_check_rejects_two_layers_writing_the_same_bytes():
    p = plan(quantized(concat_model())[0], SIM)
    # b's conv writes channels 3..7 of cat; moved onto a's channels 0..2 (and beyond).
    b = p.layers[1]
    moved = replace(b, chan_addr=b.chan_addr - 3)
    with pytest.raises(AssertionError, match=r"^storage 'cat': byte 0 of its array is written 2 "
                                             r"times"):
        check(replace(p, layers=(p.layers[0], moved, p.layers[2])))


def test_a_fragmented_scratchpad_spills_a_tensor_live_at_the_layer_that_does_not_fit():
    # A U-Net's skips live from their down layer to their up layer: on 320 bytes of ACT the
    # tensors live at each layer fit by size, but first fit leaves no gap large enough for
    # one layer's; a tensor live there is spilled and the stages planned again.
    config = SMALL.replace(act_banks=1, act_bank_bytes=320)
    qgraph, inputs = quantized(unet_model(size=8))
    built = check(layers.build(qgraph, storages.assign(qgraph), config.act_bytes, config.lanes))
    with pytest.raises(memory.Fragmented):
        memory.allocate(check(memory.stage(built)))
    program, _ = check_bit_exact(qgraph, inputs, config=config)
    staged_only = {s.name for s in memory.stage(built).storages if s.home == "dram"}
    assert set(program.layout["spilled"]) - staged_only
