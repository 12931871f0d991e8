"""validate + analyze time for 100 and 1,000 nodes (goals: 50 ms median, 1 s), and its growth.

Cold: the per-layer inference cache is cleared before each run, and every block has its own sizes,
so every layer runs on the meta device (the worst case). Repeated blocks: cold, but the blocks are
identical, as in Transformer and ResNet stacks. Warm: the Build page's case, where an edit changes
one layer and the rest come from the cache.
"""

from __future__ import annotations

from bench.common import median_time, report
from studio import analysis
from studio.graph import parse_graph


def residual_mlp(n_nodes: int, width: int = 64, distinct: bool = True):
    """Input -> Linear -> [LayerNorm -> Linear(w_i) -> GELU -> Linear -> Add(skip)]* ... -> Linear(10)."""
    nodes = [{"id": "input", "type": "Input", "params": {"shape": [32]}},
             {"id": "stem", "type": "Linear", "params": {"out_features": width}}]
    edges = [{"source": "input", "target": "stem"}]
    prev, i = "stem", 0
    while len(nodes) < n_nodes - 1:
        hidden = width * 2 + (i if distinct else 0)  # distinct: every block is a new layer for the cache
        block = [(f"ln{i}", "LayerNorm", {}), (f"up{i}", "Linear", {"out_features": hidden}),
                 (f"act{i}", "GELU", {}), (f"down{i}", "Linear", {"out_features": width}), (f"add{i}", "Add", {})]
        src = prev
        for nid, t, p in block:
            nodes.append({"id": nid, "type": t, "params": p})
            edges.append({"source": src, "target": nid})
            src = nid
        edges.append({"source": prev, "target": f"add{i}"})
        prev, i = f"add{i}", i + 1
    nodes.append({"id": "head", "type": "Linear", "params": {"out_features": 10}})
    edges.append({"source": prev, "target": "head"})
    return parse_graph({"format": "studio.graph/1", "name": f"mlp{n_nodes}", "nodes": nodes, "edges": edges})


def cold(graph):
    analysis._infer.cache_clear()
    a = analysis.analyze(graph)
    assert a.ok, a.issues[:3]


def main() -> None:
    figures = {}
    for n, goal in ((100, 0.050), (1000, 1.0)):
        g = residual_mlp(n)
        t_cold = median_time(lambda g=g: cold(g), reps=5 if n == 100 else 3)
        t_warm = median_time(lambda g=g: analysis.analyze(g), reps=5)
        figures[n] = t_cold
        report(f"analyze {len(g.nodes)} nodes, cold", t_cold * 1000, f"<= {goal * 1000:.0f} ms", t_cold <= goal, " ms")
        report(f"analyze {len(g.nodes)} nodes, warm cache", t_warm * 1000, f"<= {goal * 1000:.0f} ms",
               t_warm <= goal, " ms")
    repeated = residual_mlp(100, distinct=False)  # identical blocks, as in a Transformer or ResNet stack
    t_rep = median_time(lambda: cold(repeated), reps=5)
    report(f"analyze {len(repeated.nodes)} nodes of repeated blocks, cold", t_rep * 1000, "<= 50 ms", t_rep <= 0.05,
           " ms")
    growth = figures[1000] / figures[100]
    report("growth 100 -> 1,000 nodes (linear is ~10)", growth, "<= 12", growth <= 12, "x")


if __name__ == "__main__":
    main()
