"""Comparing runs: how one graph differs from another (`graph_diff`), which settings differ between
configs (`config_diff`), and a metric's best value (lowest for losses and errors, highest otherwise).

>>> config_diff([{"lr": 0.1, "epochs": 3}, {"lr": 0.01, "epochs": 3}])
{'lr': [0.1, 0.01]}
>>> best_value("val_loss", [0.5, 0.2, float("nan")]), best_value("val_accuracy", [0.5, 0.9])
(0.2, 0.9)
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from studio.graph import Graph, parse_graph


@dataclass
class GraphDiff:
    """How graph `b` differs from graph `a`."""

    added: list[str]
    removed: list[str]
    type_changed: list[tuple[str, str, str]]                 # (node_id, type in a, type in b)
    params_changed: list[tuple[str, str, object, object]]    # (node_id, param, value in a, value in b)
    edges_added: list[tuple[str, str]]
    edges_removed: list[tuple[str, str]]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.type_changed or self.params_changed or self.edges_added
                    or self.edges_removed)

    def lines(self) -> list[str]:
        """One human line per difference, e.g. "conv1: out_channels 8 -> 16"."""
        out = [f"+ {n} added" for n in self.added] + [f"- {n} removed" for n in self.removed]
        out += [f"{n}: type {a} -> {b}" for n, a, b in self.type_changed]
        out += [f"{n}: {p} {_show(a)} -> {_show(b)}" for n, p, a, b in self.params_changed]
        out += [f"+ edge {s} -> {t}" for s, t in self.edges_added]
        out += [f"- edge {s} -> {t}" for s, t in self.edges_removed]
        return out


_MISSING = "(default)"


def _show(v) -> str:
    return v if v == _MISSING else json.dumps(v)


def graph_diff(a: Graph | dict, b: Graph | dict) -> GraphDiff:
    """Nodes added, removed, whose type changed, and params changed from `a` to `b` (matched by node id);
    a param written in one graph only is compared with "(default)". Positions are ignored."""
    a = parse_graph(a) if isinstance(a, dict) else a
    b = parse_graph(b) if isinstance(b, dict) else b
    if a.uses_blocks or b.uses_blocks:  # compared layer by layer, by path (h.4.attn added by a repeat)
        from studio.graph_paths import flat_graph

        a, b = flat_graph(a), flat_graph(b)
    na, nb = {n.id: n for n in a.nodes}, {n.id: n for n in b.nodes}
    type_changed, params_changed = [], []
    for node_id in [n.id for n in b.nodes if n.id in na]:
        x, y = na[node_id], nb[node_id]
        if x.type != y.type:
            type_changed.append((node_id, x.type, y.type))
            continue
        for p in dict.fromkeys([*x.params, *y.params]):
            va, vb = x.params.get(p, _MISSING), y.params.get(p, _MISSING)
            if va != vb:
                params_changed.append((node_id, p, va, vb))
    ea = [(e.source, e.target) for e in a.edges]
    eb = [(e.source, e.target) for e in b.edges]
    return GraphDiff(added=[n for n in nb if n not in na], removed=[n for n in na if n not in nb],
                     type_changed=type_changed, params_changed=params_changed,
                     edges_added=[e for e in eb if e not in ea], edges_removed=[e for e in ea if e not in eb])


def config_diff(configs: list[dict]) -> dict[str, list]:
    """{setting: [value per config]} for the settings whose values are not all equal."""
    keys = list(dict.fromkeys(k for c in configs for k in c))
    out = {}
    for k in keys:
        values = [c.get(k, _MISSING) for c in configs]
        if any(v != values[0] for v in values[1:]):
            out[k] = values
    return out


LOWER_IS_BETTER = ("loss", "perplexity", "mae", "mse", "rmse")


def best_value(key: str, values: list[float]) -> float:
    """The best finite value of a metric: the minimum for losses and errors, the maximum otherwise."""
    finite = [v for v in values if v == v and abs(v) != float("inf")]
    if not finite:
        return float("nan")
    return min(finite) if key.endswith(LOWER_IS_BETTER) else max(finite)
