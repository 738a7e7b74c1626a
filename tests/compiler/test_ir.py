"""The IR: building a graph, reading it in order, and verify() naming what is broken."""

import numpy as np
import pytest

from flexigan.compiler import ir


def _conv(cout, cin, kernel=3, **attrs):
    return ir.Conv(np.zeros((cout, cin, kernel, kernel)), np.zeros(cout), **attrs)


def _small_graph():
    """x (2, 8, 8) -> conv 4 pad 1 -> relu -> conv 3 stride 2 pad 1 = y; Concat(x, relu, x)."""
    graph = ir.new_graph(inputs=["x"], outputs=["y", "cat"])
    ir.add_node(graph, "x", ir.Input(), shape=(2, 8, 8))
    ir.add_node(graph, "c", _conv(4, 2, pads=(1, 1, 1, 1)), ["x"])
    ir.add_node(graph, "r", ir.Activation("relu"), ["c"])
    ir.add_node(graph, "y", _conv(3, 4, strides=(2, 2), pads=(1, 1, 1, 1)), ["r"])
    ir.add_node(graph, "cat", ir.Concat(axis=0), ["x", "r", "x"])
    return graph


def test_add_node_infers_the_shape_and_mirrors_operands_as_edges():
    graph = _small_graph()
    assert ir.node(graph, "c").shape == (4, 8, 8)
    assert ir.node(graph, "y").shape == (3, 4, 4)
    assert ir.node(graph, "cat").shape == (8, 8, 8)
    assert ir.node(graph, "cat").inputs == ("x", "r", "x")
    assert set(graph.predecessors("cat")) == {"x", "r"}
    assert ir.consumers(graph, "x") == ["c", "cat"]
    assert [n.shape for n in ir.inputs(graph, "y")] == [(4, 8, 8)]


def test_add_node_keeps_a_given_shape_as_integers():
    graph = ir.new_graph(inputs=["z"])
    ir.add_node(graph, "z", ir.Input(), shape=(np.int64(5),))
    assert ir.node(graph, "z").shape == (5,) and type(ir.node(graph, "z").shape[0]) is int


def test_topo_nodes_lists_producers_first_in_a_repeatable_order():
    graph = _small_graph()
    names = [name for name, _ in ir.topo_nodes(graph)]
    assert names == ["x", "c", "r", "cat", "y"]
    assert all(isinstance(n, ir.Node) for _, n in ir.topo_nodes(graph))


def test_replace_node_rewires_the_edges():
    graph = _small_graph()
    ir.replace_node(graph, "y", ir.Node(_conv(3, 2), ("x",), (3, 6, 6)))
    assert ir.node(graph, "y").inputs == ("x",)
    assert set(graph.predecessors("y")) == {"x"}
    assert ir.consumers(graph, "r") == ["cat"]


def test_verify_accepts_a_consistent_graph_and_returns_it():
    graph = _small_graph()
    assert ir.verify(graph) is graph


def _broken(how):
    graph = _small_graph()
    if how == "shape":
        graph.nodes["c"]["node"] = ir.Node(_conv(4, 2), ("x",), (4, 8, 8))  # no padding
    elif how == "edges":
        graph.add_edge("x", "y")
    elif how == "cycle":
        graph.add_edge("y", "c")
    elif how == "undeclared input":
        ir.add_node(graph, "z", ir.Input(), shape=(1,))
    elif how == "missing output":
        graph.graph["outputs"].append("w")
    elif how == "bias":
        graph.nodes["c"]["node"] = ir.Node(
            ir.Conv(np.zeros((4, 2, 3, 3)), np.zeros(5), pads=(1, 1, 1, 1)), ("x",), (4, 8, 8))
    return graph


@pytest.mark.parametrize("how, message", [
    ("shape", r"^c: shape \(4, 8, 8\) != inferred \(4, 6, 6\)$"),
    ("edges", r"^y: edges != inputs$"),
    ("cycle", r"^IR graph has a cycle$"),
    ("undeclared input", r"^z: Input not listed in graph inputs$"),
    ("missing output", r"^output w missing$"),
    ("bias", r"^c: bias shape \(5,\)$"),
])
def test_verify_rejects_a_broken_graph_naming_the_fault(how, message):
    with pytest.raises(AssertionError, match=message):
        ir.verify(_broken(how))


def test_verify_of_a_quantized_graph_asks_for_scales():
    with pytest.raises(AssertionError, match=r"^x: no positive scale$"):
        ir.verify(_small_graph(), quantized=True)
