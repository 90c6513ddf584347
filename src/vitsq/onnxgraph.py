"""Producer and reader maps of an ONNX graph, shared by the quantization passes and the streaming
export (a leaf module: it imports nothing from vitsq)."""

from __future__ import annotations

from typing import Any


def producers(graph: Any) -> dict[str, Any]:
    """{tensor name: the node that makes it} of an ONNX graph."""
    return {o: n for n in graph.node for o in n.output}


def consumers(graph: Any) -> dict[str, list[Any]]:
    """{tensor name: the nodes that read it} of an ONNX graph."""
    out: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out
