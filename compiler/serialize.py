"""Save and load IR graphs (float or quantized) as one ``.npz`` file.

The file holds every array of every node under a unique key and one JSON document,
``__graph__``, describing the nodes: the dataclass type of each op and quantization record
(restricted to flexigan's own IR and quantization modules, so loading never imports or runs
arbitrary code), their scalar fields, and references to the arrays.
"""

from __future__ import annotations

import dataclasses
import importlib
import json

import numpy as np

from ..errors import ModelError
from . import ir

__all__ = ["save_graph", "load_graph"]

_MODULES = ("flexigan.compiler.ir", "flexigan.compiler.quant")
FORMAT = "flexigan-ir/1"


def _encode(value, arrays, key):
    if isinstance(value, np.ndarray):
        arrays[key] = value
        return {"array": key}
    if dataclasses.is_dataclass(value):
        fields = {f.name: _encode(getattr(value, f.name), arrays, f"{key}.{f.name}")
                  for f in dataclasses.fields(value)}
        return {"type": f"{type(value).__module__}:{type(value).__qualname__}",
                "fields": fields}
    if isinstance(value, (tuple, list)):
        return {"tuple": [_encode(v, arrays, f"{key}.{i}") for i, v in enumerate(value)]}
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value


def _decode(value, arrays):
    if isinstance(value, dict):
        if "array" in value:
            return arrays[value["array"]]
        if "tuple" in value:
            return tuple(_decode(v, arrays) for v in value["tuple"])
        module, _, qualname = value["type"].partition(":")
        if module not in _MODULES:
            raise ModelError(f"IR file names a foreign type {value['type']!r}; refused")
        cls = getattr(importlib.import_module(module), qualname)
        return cls(**{k: _decode(v, arrays) for k, v in value["fields"].items()})
    return value


def save_graph(graph, path):
    """Write ``graph`` to ``path`` (an ``.npz`` file)."""
    arrays, nodes = {}, []
    for index, (name, n) in enumerate(ir.topo_nodes(graph)):
        nodes.append({"name": name, "node": _encode(n, arrays, f"n{index}")})
    doc = {"format": FORMAT, "graph": {k: v for k, v in graph.graph.items()}, "nodes": nodes}
    np.savez(path, __graph__=np.array(json.dumps(doc)), **arrays)


def load_graph(path):
    """Read a graph written by :func:`save_graph`, verified.

    Raises :class:`~flexigan.errors.ModelError` (one line) for a file that is missing,
    truncated, not such a graph, or whose graph breaks an IR invariant.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            doc = json.loads(str(data["__graph__"]))
            arrays = {k: data[k] for k in data.files if k != "__graph__"}
    except Exception as exc:  # zipfile, numpy and json each raise their own on a damaged file
        raise ModelError(f"cannot read compiled model {path}: {_reason(exc)}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise ModelError(f"{path} is not a {FORMAT} file (format {found!r})")
    try:
        graph = ir.new_graph()
        graph.graph.update(doc["graph"])
        for entry in doc["nodes"]:
            n = _decode(entry["node"], arrays)
            graph.add_node(entry["name"], node=n)
            for i in n.inputs:
                graph.add_edge(i, entry["name"])
        quantized = all(n.scale is not None for _, n in ir.topo_nodes(graph))
        return ir.verify(graph, quantized=quantized)
    except ModelError:
        raise
    except Exception as exc:  # a damaged document: missing keys, wrong types, broken graph
        raise ModelError(f"{path} is damaged ({_reason(exc)})") from None


def _reason(exc):
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
