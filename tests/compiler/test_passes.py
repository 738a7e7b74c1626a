"""Float passes keep the model's function and the IR's invariants."""

import numpy as np
import pytest

from flexigan.compiler import ir, passes
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
