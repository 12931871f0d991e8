"""Shared fixtures: every test gets its own workspace, so nothing touches ./workspace."""

from __future__ import annotations

import os
import time

import pytest

# No warm spare workers (studio.runs.spare) unless a test asks for them: spares outlive the page that
# started them, and every other test counts its own processes. Servers the browser tests start inherit this.
os.environ.setdefault("STUDIO_SPARE_WORKER", "0")


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


def wait_until(predicate, what: str, seconds: float = 240.0, poll: float = 0.05):
    """predicate()'s first truthy value, polled until `seconds` pass (then AssertionError naming `what`).
    For processes the test does not control (workers, spares, sweeps); never a measure of speed."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")
