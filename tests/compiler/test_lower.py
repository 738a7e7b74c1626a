"""The back end: every lowered program runs bit-exact with the golden interpreter.

Each case builds a small ONNX model, quantizes it, lowers it (zero-free and conventional, on
the ``sim`` preset and on a tiny machine that forces stages, spills, per-segment tiles and lane
splits), runs it on the instruction-level simulator and compares with ``golden.run_int``.
"""


import numpy as np
import pytest
from onnx import helper

from flexigan.compiler import passes
from flexigan.compiler.lower import lower
from flexigan.compiler.program import load_program
from flexigan.errors import FitError, UnsupportedError
from flexigan.hw.arch import isa
from flexigan.sim import golden, isa_sim
from tests.helpers import (
    SIM,
    TINY,
    check_bit_exact,
    concat_model,
    conv_model,
    convt_model,
    make_model,
    prelu_conv1d_model,
    project_and_reshape_model,
    quantized,
    residual_model,
    spread_model,
    tiny_generator,
)

CASES = {
    "convt k3 s2 p1 op1 (tiny generator)": lambda: tiny_generator(),
    "convt k5 s2 p2 op1": lambda: convt_model(3, 5, (5, 4), [5, 5], strides=[2, 2],
                                         pads=[2, 2, 2, 2], output_padding=[1, 1]),
    "convt k4 s4": lambda: convt_model(4, 3, (3, 3), [4, 4], strides=[4, 4], act="Tanh"),
    "convt k3 s2 output_padding, asymmetric pads": lambda: convt_model(
        2, 4, (4, 5), [3, 3], strides=[2, 3], pads=[0, 1, 2, 0], output_padding=[1, 2]),
    "convt groups 2, dilation 2": lambda: convt_model(4, 6, (4, 4), [3, 2], strides=[2, 2],
                                                 group=2, dilations=[2, 3], pads=[1, 1, 0, 1]),
    "convt k1 s2 (outputs no tap reaches)": lambda: convt_model(
        3, 2, (3, 3), [1, 1], strides=[2, 2], output_padding=[1, 1], act=None),
    "convt of a 1x1 input (a Gemm)": lambda: convt_model(5, 7, (1, 1), [4, 4], act="Sigmoid"),
    "conv groups 3, stride 2, pads": lambda: conv_model(6, 9, (7, 6), [3, 3], group=3,
                                                   strides=[2, 2], pads=[1, 1, 1, 0]),
    "conv depthwise, dilation 2": lambda: conv_model(4, 4, (6, 6), [3, 3], group=4,
                                                dilations=[2, 2], pads=[2, 2, 2, 2]),
    "gemm, reshape to an image, flatten": project_and_reshape_model,
    "1-d convt with per-channel prelu": prelu_conv1d_model,
}


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    return quantized(CASES[request.param]())


@pytest.mark.parametrize("reorder", [True, False], ids=["zero-free", "conventional"])
@pytest.mark.parametrize("config", [SIM, TINY], ids=["sim", "tiny"])
def test_bit_exact_with_golden(case, config, reorder):
    check_bit_exact(*case, config=config, reorder=reorder)


def _frames(config, batch):
    """``config`` with ``batch`` times its activation memory: each frame of a batched program
    gets the ACT slice a batch-1 program has (the same stages and spills)."""
    return config.replace(act_bank_bytes=config.act_bank_bytes * batch)


@pytest.mark.parametrize("reorder", [True, False], ids=["zero-free", "conventional"])
@pytest.mark.parametrize("config", [SIM, TINY], ids=["sim", "tiny"])
def test_a_batched_program_is_bit_exact_with_golden_per_sample(case, config, reorder):
    # Two frames in one run, each in its own half of ACT (on TINY: more stages and spills
    # than at batch 1) and its own copy of the input, output and spill regions.
    program, _ = check_bit_exact(*case, config=config, reorder=reorder, batch=2)
    assert program.layout["batch"] == 2


def test_a_batched_program_loads_each_weight_tile_once_for_its_frames():
    qgraph, inputs = quantized(convt_model(16, 32, (4, 4), [4, 4], strides=[2, 2],
                                           pads=[1, 1, 1, 1]))
    single = lower(qgraph, SIM)
    batched, report = check_bit_exact(qgraph, {k: v.repeat(2, axis=0)
                                               for k, v in inputs.items()},
                                      sparse=False, batch=4)
    assert _weight_loads(batched) == _weight_loads(single)
    # Every frame runs the layer, in no more pieces than at batch 1 (the frames spread over
    # the groups as the pieces of one frame do).
    layer = batched.layout["layers"][0]
    assert 4 <= layer["runs"] <= 4 * single.layout["layers"][0]["runs"]
    assert sum(layer["mac_steps"]) == 4 * sum(single.layout["layers"][0]["mac_steps"])
    assert report["batch"] == 4 and report["program_batch"] == 4
    assert report["cycles_per_frame"] == round(report["cycles"] / 4, 1)


def test_a_batch_whose_frames_do_not_fit_says_so():
    with pytest.raises(FitError, match=r"at --batch 16 each frame has 128 of the target's "
                                       r"2048 bytes of activation memory"):
        lower(quantized(spread_model("shared"))[0], TINY, batch=16)


def test_batch_must_be_a_positive_integer():
    with pytest.raises(ValueError, match="batch must be a positive integer, not 0"):
        lower(quantized(tiny_generator())[0], SIM, batch=0)


def test_zero_free_issues_exactly_the_useful_macs():
    # Without zero skipping, every issued MAC of the zero-free program is a useful one, and the
    # conventional program issues the zero-insertion count.
    qgraph, inputs = quantized(CASES["convt k5 s2 p2 op1"]())
    _, report = check_bit_exact(qgraph, inputs, sparse=False)
    assert report["macs_issued"] == report["macs_useful"]
    _, conventional = check_bit_exact(qgraph, inputs, reorder=False, sparse=False)
    assert conventional["macs_issued"] == 2 * 3 * 5 * 5 * 5 * 10 * 8  # batch 2, taps x outputs


def test_uneven_phases_run_different_micro_programs_on_different_groups():
    # k=5, s=2: phases of 9, 6, 6 and 4 taps; each group's RUNs use its phase's programs.
    qgraph, inputs = quantized(CASES["convt k5 s2 p2 op1"]())
    program, _ = check_bit_exact(qgraph, inputs)
    taps_by_group = {}
    code = program.code
    for at in range(0, len(code), isa.GLOBAL_BYTES):
        op, a = isa.decode_global(int.from_bytes(code[at:at + isa.GLOBAL_BYTES], "little"))
        if op == isa.GlobalOp.UOP_LOAD:
            words = program.image[a["ext_addr"]:a["ext_addr"] + a["length"]]
            loops = [isa.decode_uop(int.from_bytes(words[i:i + 16], "little"))
                     for i in range(0, len(words), 16)]
            taps = np.prod([f["count"] for o, f in loops if o == isa.UopOp.LOOP
                            and f["level"] < 2])
            taps_by_group.setdefault(a["group_mask"], set()).add(int(taps))
    interior = {9, 6, 4}
    assert len(taps_by_group) > 1
    assert any(interior & t for t in taps_by_group.values())
    assert len({frozenset(t) for t in taps_by_group.values()}) > 1


def test_program_is_deterministic_and_survives_save_and_load(tmp_path):
    qgraph, inputs = quantized(tiny_generator())
    program = lower(qgraph, SIM)
    assert lower(qgraph, SIM).image == program.image
    program.save(tmp_path)
    loaded = load_program(tmp_path)
    assert loaded.image == program.image and loaded.layout == program.layout
    assert (tmp_path / "program.bin").read_bytes() == program.code
    assert "RUN group_mask=" in (tmp_path / "program.s").read_text()
    outputs, _ = isa_sim.simulate(loaded, inputs)
    np.testing.assert_array_equal(outputs["image"], golden.run_int(qgraph, inputs)["image"])


def test_reshape_and_flatten_cost_no_instructions():
    qgraph, _ = quantized(project_and_reshape_model())
    program = lower(qgraph, SIM)
    assert [layer["op"] for layer in program.layout["layers"]] == ["Gemm", "ConvTranspose",
                                                                    "Gemm"]
    assert program.layout["act_buffers"].keys() == {"r", "tr"}


def test_activation_memory_shortfall_names_the_layer():
    qgraph, _ = quantized(convt_model(4, 8, (8, 8), [4, 4], strides=[2, 2], pads=[1, 1, 1, 1]))
    small = TINY.replace(act_banks=1, act_bank_bytes=128)
    with pytest.raises(FitError, match=r"^layer 'y': needs \d+ bytes of activation memory, "
                                       r"the target has 128 \(short by \d+\)$"):
        lower(qgraph, small)


def test_weight_tile_shortfall_names_the_layer():
    qgraph, _ = quantized(convt_model(100, 8, (2, 2), [4, 4], strides=[2, 2], pads=[1, 1, 1, 1]))
    with pytest.raises(FitError, match=r"^layer 'y': a weight tile needs 400 bytes per lane, "
                                       r"the weight buffer holds 384 \(short by 16\)$"):
        lower(qgraph, TINY)


def _weight_loads(program):
    loads = []
    code = program.code
    for at in range(0, len(code), isa.GLOBAL_BYTES):
        op, a = isa.decode_global(int.from_bytes(code[at:at + isa.GLOBAL_BYTES], "little"))
        if op == isa.GlobalOp.DMA_LOAD and a["space"] == isa.Space.WGT:
            loads.append((a["local_addr"], a["length"]))
    return loads


@pytest.mark.parametrize("reorder", [True, False], ids=["zero-free", "conventional"])
def test_a_tile_larger_than_half_the_weight_buffer_takes_all_of_it(reorder):
    # 64 input channels x 4 taps (zero-free phase) or 16 taps (dense kernel) per lane: more
    # than half the buffer for every lane, so the tile fills the whole buffer, single
    # buffered, rather than running on fewer lanes.
    qgraph, inputs = quantized(convt_model(64, 8, (4, 4), [4, 4], strides=[2, 2],
                                           pads=[1, 1, 1, 1]))
    taps = 4 if reorder else 16
    config = TINY.replace(weight_bytes=taps * 64 * 4, act_bank_bytes=8192)
    program, report = check_bit_exact(qgraph, inputs, config=config, reorder=reorder,
                                      sparse=False)
    assert program.layout["layers"][0]["lanes_per_tile"] == 4
    assert set(_weight_loads(program)) == {(0, config.weight_bytes)}
    assert report["macs_issued"] == (report["macs_useful"] if reorder else
                                     2 * 8 * 64 * 16 * 8 * 8)


def test_a_1x1_output_whose_lane_tile_fills_the_weight_buffer_is_not_broadcast():
    # Conventional, the 4x4 kernel over 8 channels is 128 bytes per lane: three lanes take all
    # of TINY's 384 bytes, more than the half a broadcast layer's scatter load fills.
    qgraph, inputs = quantized(conv_model(8, 16, (2, 2), [4, 4], act="Relu", strides=[2, 2],
                                          pads=[1, 1, 1, 1]))
    program, _ = check_bit_exact(qgraph, inputs, config=TINY, reorder=False)
    assert (0, TINY.weight_bytes) in _weight_loads(program)
    assert all(at + length <= TINY.weight_bytes for at, length in _weight_loads(program))


def test_unsupported_ops_are_listed_together():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Concat", ["c", "c"], ["s"], axis=2),
             helper.make_node("Relu", ["s"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=[0, 1, 3, 2]),
             helper.make_node("Relu", ["t"], ["y"])]
    model = make_model(nodes, [("x", ["N", 2, 3, 3])], [("y", ["N", "c", "h", "w"])],
                       {"w": rng.normal(size=(2, 2, 1, 1))})
    qgraph, _ = quantized(model)
    with pytest.raises(UnsupportedError) as err:
        lower(qgraph, SIM)
    # The ReLU of the Concat is a standalone activation: a LUT pass, lowered.
    assert [(name, op) for name, op, _ in err.value.problems] == [
        ("s", "Concat"), ("t", "Transpose")]
    assert "spatial axis" in err.value.problems[0][2]


# --- Concat and residual Add ----------------------------------------------------------------


CONCAT_CASES = {
    "conv-relu + conv-relu -> concat -> conv": lambda: concat_model(),
    "concat with the model input": lambda: concat_model(skip_input=True),
    "u-net skip, nested concat": lambda: concat_model(unet=True),
}


@pytest.fixture(scope="module", params=list(CONCAT_CASES))
def concat_case(request):
    return quantized(CONCAT_CASES[request.param]())


@pytest.mark.parametrize("reorder", [True, False], ids=["zero-free", "conventional"])
@pytest.mark.parametrize("config", [SIM, TINY], ids=["sim", "tiny"])
@pytest.mark.parametrize("batch", [1, 2], ids=["batch-1", "batch-2"])
def test_concat_bit_exact_with_golden(concat_case, config, reorder, batch):
    check_bit_exact(*concat_case, config=_frames(config, batch), reorder=reorder, batch=batch)


def test_concat_of_layer_outputs_is_addressing():
    # Both producers write their channel slices of the concat: no copy layer, one buffer.
    qgraph, _ = quantized(concat_model())
    program = lower(qgraph, SIM)
    assert [layer["op"] for layer in program.layout["layers"]] == ["Conv"] * 3
    assert program.layout["act_buffers"].keys() == {"cat"}


ADD_CASES = ["block", "scales", "input skip, two blocks", "self", "input twice", "into concat"]


@pytest.fixture(scope="module", params=ADD_CASES)
def add_case(request):
    return quantized(residual_model(request.param))


@pytest.mark.parametrize("reorder", [True, False], ids=["zero-free", "conventional"])
@pytest.mark.parametrize("config", [SIM, TINY], ids=["sim", "tiny"])
@pytest.mark.parametrize("batch", [1, 2], ids=["batch-1", "batch-2"])
def test_residual_add_bit_exact_with_golden(add_case, config, reorder, batch):
    check_bit_exact(*add_case, config=_frames(config, batch), reorder=reorder, batch=batch)


def test_residual_add_is_addressing():
    # h's producer and the block's last conv write the two halves of the Add's operand buffer
    # (the block's first conv reads h there); the Add is two MAC steps per output value, and
    # its channels share one weight tile (loaded once per group, not once per channel).
    qgraph, inputs = quantized(residual_model("block"))
    program, report = check_bit_exact(qgraph, inputs, config=TINY, sparse=False)
    layers = program.layout["layers"]
    assert [layer["op"] for layer in layers] == ["Conv", "Conv", "Conv", "Add", "Conv"]
    assert program.layout["act_buffers"].keys() == {"br", "sr", "s:operands"}
    add = next(row for row in report["layers"] if row["op"] == "Add")
    assert add["macs_issued"] == 2 * 4 * 6 * 5 * 2      # taps x channels x pixels x batch
    code = program.code
    loads = 0
    for at in range(layers[3]["first"] * isa.GLOBAL_BYTES, layers[3]["last"] * isa.GLOBAL_BYTES,
                    isa.GLOBAL_BYTES):
        op, a = isa.decode_global(int.from_bytes(code[at:at + isa.GLOBAL_BYTES], "little"))
        loads += op == isa.GlobalOp.DMA_LOAD and a["space"] == isa.Space.WGT
    assert loads <= TINY.groups < 4


@pytest.mark.parametrize("kind, ops, buffers", [
    ("self", ["Conv", "Add", "Conv"], {"h", "s"}),
    ("input twice", ["Add", "Conv"], {"r"}),
    ("input skip, two blocks", ["Conv", "Conv", "Copy", "Add", "Conv", "Conv", "Add"],
     {"pr", "qr", "s1:operands", "s2:operands"}),
])
def test_add_of_one_value_reads_it_twice_and_a_model_input_is_copied(kind, ops, buffers):
    qgraph, _ = quantized(residual_model(kind))
    program = lower(qgraph, SIM)
    assert [layer["op"] for layer in program.layout["layers"]] == ops
    assert program.layout["act_buffers"].keys() == buffers


SPREAD_CASES = ["resize", "resize 3x2", "resize output", "input", "shared", "DCR", "CRD",
                "input CRD", "large resize", "large resize output", "large input", "large CRD",
                "large input CRD"]


#: The float passes without ``fold_upsample``: an Upsample stays in the IR, so these tests
#: exercise its lowering (tests/e2e/test_upsample_fold.py covers the folded pair).
UNFOLDED = (passes.fold_affine,)


@pytest.fixture(scope="module", params=SPREAD_CASES)
def spread_case(request):
    return quantized(spread_model(request.param), float_passes=UNFOLDED)


@pytest.mark.parametrize("reorder", [True, False], ids=["zero-free", "conventional"])
@pytest.mark.parametrize("config", [SIM, TINY], ids=["sim", "tiny"])
@pytest.mark.parametrize("batch", [1, 2], ids=["batch-1", "batch-2"])
def test_upsample_and_depth_to_space_bit_exact_with_golden(spread_case, config, reorder, batch):
    check_bit_exact(*spread_case, config=_frames(config, batch), reorder=reorder,
                    batch=batch)


def test_depth_to_space_is_addressing():
    # The producer scatters its channels over the blocks: no copy, no buffer of its own.
    for mode in ("DCR", "CRD"):
        qgraph, _ = quantized(spread_model(mode))
        program = lower(qgraph, SIM)
        assert [layer["op"] for layer in program.layout["layers"]] == ["Conv"] * 2
        assert program.layout["act_buffers"].keys() == {"u"}


def test_upsample_is_written_by_its_producer_and_copied_into_the_other_blocks():
    qgraph, _ = quantized(spread_model("resize"), float_passes=UNFOLDED)
    program = lower(qgraph, SIM)
    layers = program.layout["layers"]
    assert [layer["op"] for layer in layers] == ["Conv"] + ["Copy"] * 3 + ["Conv"]
    assert program.layout["act_buffers"].keys() == {"u"}
