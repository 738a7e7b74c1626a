"""IR files: a saved graph loads back equal, and a foreign type is refused."""

import json

import numpy as np
import pytest

from flexigan.compiler import ir, passes
from flexigan.compiler.onnx_import import import_model
from flexigan.compiler.serialize import load_graph, save_graph
from flexigan.errors import ModelError
from tests.helpers import tiny_generator


def test_float_graph_round_trips(tmp_path):
    graph = passes.run_passes(import_model(tiny_generator()))
    save_graph(graph, tmp_path / "g.npz")
    loaded = load_graph(tmp_path / "g.npz")
    assert loaded.graph["outputs"] == graph.graph["outputs"]
    for (name, a), (name2, b) in zip(ir.topo_nodes(graph), ir.topo_nodes(loaded)):
        assert name == name2 and type(a.op) is type(b.op)
        assert a.inputs == b.inputs and a.shape == b.shape
        if isinstance(a.op, ir.COMPUTE_OPS):
            np.testing.assert_array_equal(a.op.weight, b.op.weight)
            assert a.op.strides == b.op.strides and a.op.pads == b.op.pads


def test_foreign_types_and_garbage_are_refused(tmp_path):
    graph = import_model(tiny_generator())
    save_graph(graph, tmp_path / "g.npz")
    with np.load(tmp_path / "g.npz") as data:
        arrays = {k: data[k] for k in data.files}
    doc = json.loads(str(arrays["__graph__"]))
    doc["nodes"][1]["node"]["fields"]["op"]["type"] = "os:system"
    arrays["__graph__"] = np.array(json.dumps(doc))
    np.savez(tmp_path / "evil.npz", **arrays)
    with pytest.raises(ModelError, match="foreign type 'os:system'; refused"):
        load_graph(tmp_path / "evil.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ModelError, match="cannot read compiled model"):
        load_graph(tmp_path / "junk.npz")
