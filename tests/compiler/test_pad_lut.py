"""Pad and standalone activations in the back end: copies and LUT passes, bit-exact.

A Pad's producer writes its interior in place (or a copy does), its border is copied from the
image (reflect, edge) or filled with its value (constant); a zero Pad read only by Convs is
their padding. An activation that cannot be fused into its producer is a LUT pass: an
identity copy through the activation's table. Every case runs on the instruction-level
simulator against ``golden.run_int``, zero-free and conventional, on the ``sim`` preset and
on the tiny machine.
"""

import pytest

from flexigan.compiler.lower import lower
from tests.helpers import (
    SIM,
    TINY,
    check_bit_exact,
    lut_model,
    pad_model,
    quantized,
    unet_model,
)

PAD_CASES = ["reflect 1", "reflect 3", "edge", "zero", "constant", "input", "zero output"]
LUT_CASES = ["concat", "skip", "residual", "input", "prelu", "reflect"]


@pytest.fixture(scope="module", params=PAD_CASES)
def pad_case(request):
    return quantized(pad_model(request.param))


@pytest.fixture(scope="module", params=LUT_CASES)
def lut_case(request):
    return quantized(lut_model(request.param))


@pytest.mark.parametrize("reorder", [True, False], ids=["zero-free", "conventional"])
@pytest.mark.parametrize("config", [SIM, TINY], ids=["sim", "tiny"])
def test_pad_bit_exact_with_golden(pad_case, config, reorder):
    check_bit_exact(*pad_case, config=config, reorder=reorder)


@pytest.mark.parametrize("reorder", [True, False], ids=["zero-free", "conventional"])
@pytest.mark.parametrize("config", [SIM, TINY], ids=["sim", "tiny"])
def test_standalone_activation_bit_exact_with_golden(lut_case, config, reorder):
    check_bit_exact(*lut_case, config=config, reorder=reorder)


@pytest.mark.parametrize("reorder", [True, False], ids=["zero-free", "conventional"])
@pytest.mark.parametrize("config", [SIM, TINY], ids=["sim", "tiny"])
def test_a_pix2pix_style_unet_bit_exact_with_golden(config, reorder):
    # examples/pix2pix's structure at a toy size: standalone LeakyReLUs of the skips'
    # sources, standalone ReLUs of the concatenations, a 1x1 innermost level.
    check_bit_exact(*quantized(unet_model(size=8)), config=config, reorder=reorder)


def _ops(model):
    return [layer["op"] for layer in lower(quantized(model)[0], SIM).layout["layers"]]


def test_a_zero_pad_before_a_conv_is_its_padding():
    # Folded into the conv's pads: no copy, no fill, no buffer of its own.
    assert _ops(pad_model("zero")) == ["Conv", "Conv"]


@pytest.mark.parametrize("kind, ops", [
    # The producer writes the interior: one copy per border row, then per border column.
    ("reflect 1", ["Conv"] + ["Copy"] * 4 + ["Conv"]),
    ("reflect 3", ["Conv"] + ["Copy"] * 9 + ["Conv"]),
    ("edge", ["Conv"] + ["Copy"] * 6 + ["Conv"]),
    # A model input is copied into the interior first.
    ("input", ["Copy"] * 13 + ["Conv"]),
    # A constant border is filled, a side at a time.
    ("constant", ["Conv"] + ["Fill"] * 4 + ["Conv"]),
    ("zero output", ["Conv"] + ["Fill"] * 3),
])
def test_the_producer_writes_a_pads_interior_and_copies_write_its_border(kind, ops):
    assert _ops(pad_model(kind)) == ops


@pytest.mark.parametrize("kind, ops", [
    ("skip", ["Conv", "Copy", "Conv", "Add"]),
    ("residual", ["Conv", "Copy", "Add", "Copy", "Conv", "Add"]),
    ("input", ["Copy", "Conv"]),
    # The LUT pass writes the Pad's interior in place; four copies its border.
    ("reflect", ["Conv", "Copy", "Copy", "Copy", "Copy", "Copy", "Conv", "Add"]),
])
def test_a_standalone_activation_is_one_lut_pass(kind, ops):
    assert _ops(lut_model(kind)) == ops


def test_the_activation_of_a_concat_is_folded_into_its_producers():
    # The Concat's only reader: each producer's LUT applies it (after the Concat's
    # requantization) as it writes its slice; no pass of its own, no storage of its own.
    program = lower(quantized(lut_model("concat"))[0], SIM)
    assert [layer["op"] for layer in program.layout["layers"]] == ["Conv"] * 3
    assert program.layout["act_buffers"].keys() == {"cat"}
    # A per-channel table (PReLU) is a LUT pass; the model input is copied in.
    assert _ops(lut_model("prelu")) == ["Conv", "Copy", "Copy", "Conv"]


def test_a_copy_reads_only_the_channels_of_its_lane_tile():
    # The PReLU pass of the 8-channel Concat on TINY's 4 lanes: each lane tile reads only its
    # own channels (block-diagonal), 8 MAC steps per pixel in all, where a dense 8x8 identity
    # would take 8 per pixel for each of its two lane tiles (16).
    program = lower(quantized(lut_model("prelu"))[0], TINY)
    copy, = [layer for layer in program.layout["layers"] if layer["name"] == "p"]
    assert sum(copy["mac_steps"]) == 6 * 5 * 8
