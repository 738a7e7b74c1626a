"""Float passes keep the model's function and the IR's invariants."""

import numpy as np
import pytest

from flexigan.compiler import ir, macs, passes
from flexigan.compiler.evaluate import run_float
from flexigan.compiler.onnx_import import import_model
from tests.helpers import tiny_generator


def test_fold_affine_keeps_the_function_and_the_onnx_name():
    graph = import_model(tiny_generator())
    folded = passes.run_passes(graph)
    kinds = [type(n.op).__name__ for _, n in ir.topo_nodes(folded)]
    assert "Affine" not in kinds and "bn" in folded and "c1" not in folded
    feeds = {"z": np.random.default_rng(0).standard_normal((3, 4, 1, 1))}
    np.testing.assert_allclose(run_float(folded, feeds)["image"],
                               run_float(graph, feeds)["image"], rtol=1e-12)


def test_fold_affine_into_grouped_convtranspose():
    g = ir.new_graph(["x"], ["y"])
    ir.add_node(g, "x", ir.Input(), shape=(4, 3, 3))
    rng = np.random.default_rng(1)
    ir.add_node(g, "t", ir.ConvTranspose(rng.normal(size=(4, 3, 3, 3)), rng.normal(size=6),
                                         (2, 2), (1, 1, 1, 1), group=2), ["x"])
    ir.add_node(g, "y", ir.Affine(rng.normal(size=6), rng.normal(size=6)), ["t"])
    feeds = {"x": rng.normal(size=(2, 4, 3, 3))}
    folded = passes.fold_affine(g)
    assert list(folded.nodes) == ["x", "y"]
    np.testing.assert_allclose(run_float(folded, feeds)["y"],
                               run_float(g, feeds)["y"], rtol=1e-12)


def test_affine_after_a_shared_layer_is_not_folded():
    g = ir.new_graph(["x"], ["a", "b"])
    ir.add_node(g, "x", ir.Input(), shape=(2,))
    ir.add_node(g, "d", ir.Dense(np.ones((3, 2)), np.zeros(3)), ["x"])
    ir.add_node(g, "a", ir.Affine(np.full(3, 2.0), np.zeros(3)), ["d"])
    ir.add_node(g, "b", ir.Activation("relu"), ["d"])
    assert set(passes.fold_affine(g).nodes) == {"x", "d", "a", "b"}


def test_verify_names_the_broken_invariant():
    g = ir.new_graph(["x"], ["y"])
    ir.add_node(g, "x", ir.Input(), shape=(3, 4, 4))
    ir.add_node(g, "y", ir.Activation("relu"), ["x"], shape=(3, 4, 5))
    with pytest.raises(AssertionError, match=r"y: shape \(3, 4, 5\) != inferred \(3, 4, 4\)"):
        ir.verify(g)


def upsample_conv(rng, scales, kernel, pads, group=1, hw=(4, 5), outputs=("y",), **conv):
    """x (2*group channels) -> Upsample(scales) "u" -> Conv "y" (3*group channels)."""
    g = ir.new_graph(["x"], list(outputs))
    ir.add_node(g, "x", ir.Input(), shape=(2 * group, *hw))
    ir.add_node(g, "u", ir.Upsample(scales), ["x"])
    conv = ir.Conv(rng.normal(size=(3 * group, 2, *kernel)), rng.normal(size=3 * group),
                   pads=pads, group=group, **conv)
    ir.add_node(g, "y", conv, ["u"])
    return g


def upsample_then_conv(x, scales, conv):
    """numpy oracle: nearest upsampling by repetition, then a direct convolution."""
    u = x.repeat(scales[0], axis=2).repeat(scales[1], axis=3)
    top, left, bottom, right = conv.pads
    u = np.pad(u, ((0, 0), (0, 0), (top, bottom), (left, right)))
    cout, cin_g, kh, kw = conv.weight.shape
    n, cin, h, w = u.shape
    oh, ow = h - kh + 1, w - kw + 1
    y = np.zeros((n, cout, oh, ow))
    for co in range(cout):
        first = co // (cout // conv.group) * cin_g
        for i in range(kh):
            for j in range(kw):
                window = u[:, first:first + cin_g, i:i + oh, j:j + ow]
                y[:, co] += np.einsum("nchw,c->nhw", window, conv.weight[co, :, i, j])
    return y + conv.bias.reshape(1, -1, 1, 1)


@pytest.mark.parametrize("seed", range(12))
def test_fold_upsample_matches_upsampling_then_convolution(seed):
    rng = np.random.default_rng(seed)
    scales = tuple(int(s) for s in rng.integers(1, 4, 2))
    kernel = tuple(int(k) for k in rng.integers(1, 6, 2))
    pads = tuple(int(rng.integers(0, k)) for k in kernel * 2)
    group = int(rng.choice([1, 2]))
    g = upsample_conv(rng, scales, kernel, pads, group)
    folded = passes.fold_upsample(g)
    n = ir.node(folded, "y")
    assert list(folded.nodes) == ["x", "y"] and n.inputs == ("x",)
    assert isinstance(n.op, ir.ConvTranspose) and n.op.strides == scales
    x = rng.normal(size=(2, 2 * group, 4, 5))
    want = upsample_then_conv(x, scales, ir.node(g, "y").op)
    np.testing.assert_allclose(run_float(folded, {"x": x})["y"], want, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(run_float(g, {"x": x})["y"], want, rtol=1e-9, atol=1e-9)


def test_fold_upsample_x2_3x3_is_four_2x2_phases():
    g = upsample_conv(np.random.default_rng(0), (2, 2), (3, 3), (1, 1, 1, 1), hw=(8, 8))
    op = ir.node(passes.fold_upsample(g), "y").op
    assert op.weight.shape == (2, 3, 4, 4) and op.pads == (1, 1, 1, 1)
    # Per axis, 16 outputs meet 3 taps (46 of them inside the image) before, 2 (30 inside)
    # after: 9 taps per output pixel become 4.
    assert macs.total(macs.graph_macs(g)).useful == 2 * 3 * 46 * 46
    assert macs.total(macs.graph_macs(passes.fold_upsample(g))).useful == 2 * 3 * 30 * 30


@pytest.mark.parametrize("change", [
    dict(outputs=("y", "u")),                           # the Upsample is a model output
    dict(strides=(2, 2)),
    dict(dilations=(2, 2)),
    dict(pads=(3, 1, 1, 1)),                            # padding wider than the kernel
], ids=["output", "strided", "dilated", "wide padding"])
def test_fold_upsample_leaves_what_it_cannot_fold(change):
    change = {"pads": (1, 1, 1, 1), **change}
    g = upsample_conv(np.random.default_rng(2), (2, 2), (3, 3), **change)
    assert set(passes.fold_upsample(g).nodes) == {"x", "u", "y"}


def test_fold_upsample_leaves_an_upsample_read_twice():
    rng = np.random.default_rng(3)
    g = upsample_conv(rng, (2, 2), (3, 3), (1, 1, 1, 1), outputs=("y", "r"))
    ir.add_node(g, "r", ir.Activation("relu"), ["u"])
    assert set(passes.fold_upsample(g).nodes) == {"x", "u", "y", "r"}


def _pad_then_convs(mode="constant", value=0.0, readers=2):
    """x -> Pad (1, 2, 0, 1) -> ``readers`` 3x3 convs with pads (1, 0, 1, 0), added."""
    rng = np.random.default_rng(2)
    g = ir.new_graph(["x"], ["y"])
    ir.add_node(g, "x", ir.Input(), shape=(2, 5, 4))
    ir.add_node(g, "p", ir.Pad((1, 2, 0, 1), mode, value), ["x"])
    for k in range(readers):
        ir.add_node(g, f"c{k}", ir.Conv(rng.normal(size=(3, 2, 3, 3)), rng.normal(size=3),
                                        pads=(1, 0, 1, 0)), ["p"])
    ir.add_node(g, "y", ir.Add(), ["c0", f"c{readers - 1}"])
    return g


def test_fold_pad_makes_a_zero_pad_the_padding_of_its_convs():
    g = _pad_then_convs()
    folded = passes.fold_pad(g)
    assert "p" not in folded
    assert [ir.node(folded, c).op.pads for c in ("c0", "c1")] == [(2, 2, 1, 1)] * 2
    feeds = {"x": np.random.default_rng(3).standard_normal((2, 2, 5, 4))}
    np.testing.assert_allclose(run_float(folded, feeds)["y"], run_float(g, feeds)["y"],
                               rtol=1e-12)


@pytest.mark.parametrize("mode, value", [("constant", 0.5), ("reflect", 0.0), ("edge", 0.0)])
def test_fold_pad_leaves_other_pads(mode, value):
    assert "p" in passes.fold_pad(_pad_then_convs(mode, value))
