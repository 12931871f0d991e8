"""Shared fixtures: every test gets its own workspace, so nothing touches ./workspace."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _workspace(tmp_path, monkeypatch):
    ws = tmp_path / "workspace"
    monkeypatch.setenv("STUDIO_WORKSPACE", str(ws))
    return ws


def chain(*nodes, name="t"):
    """A graph document whose nodes (id, type, params) are connected in a line."""
    doc_nodes = [{"id": nid, "type": t, **({"params": p} if p else {})} for nid, t, p in nodes]
    edges = [{"source": a[0], "target": b[0]} for a, b in zip(nodes, nodes[1:], strict=False)]
    return {"format": "studio.graph/1", "name": name, "nodes": doc_nodes, "edges": edges}
