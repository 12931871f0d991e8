"""The graph document, formats `studio.graph/1` and `/2` (with blocks): parse, save, and walk it.

A graph is plain JSON (see DESIGN.md). This module checks the document's *structure* (keys,
types, ids, edges); whether the layers and shapes make sense is `studio.analysis`'s job.

    >>> g = parse_graph({"format": "studio.graph/1", "name": "tiny",
    ...     "nodes": [{"id": "input", "type": "Input", "params": {"shape": [4]}},
    ...               {"id": "fc", "type": "Linear", "params": {"out_features": 2}}],
    ...     "edges": [{"source": "input", "target": "fc"}]})
    >>> g.topological_order()
    ['input', 'fc']
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from studio.errors import GraphError, Issue
from studio.graph_ids import (  # noqa: F401 - ids are checked there; importable from here as before
    _NN_MODULE_ATTRS,
    _RESERVED_IDS,
    MAX_ID_LEN,
    NODE_ID_RE,
    _reserved_ids,
    node_id_problem,
    path_problem,
)

FORMAT = "studio.graph/1"
FORMAT_BLOCKS = "studio.graph/2"  # a /1 document that may also hold blocks (studio/graph_blocks.py)
FORMATS = (FORMAT, FORMAT_BLOCKS)
_DOC_KEYS = {"format", "name", "description", "nodes", "edges"}
_DOC_KEYS_BLOCKS = _DOC_KEYS | {"blocks"}
MAX_DEPTH = 16  # nesting of objects/lists anywhere in a document (a real one is 5 deep)
# Nodes and edges of one document: a 15 MB upload of 200,000 nodes took 34 s of server CPU to parse and
# analyse (and would be drawn on the canvas); real graphs, imported ResNets included, have hundreds.
MAX_NODES = 5_000
MAX_EDGES = 4 * MAX_NODES
MAX_INT = 2**63 - 1  # integers past int64 cannot be a size, a count or a position
_NODE_KEYS = {"id", "type", "params", "position", "frozen"}
_NODE_KEYS_BLOCKS = _NODE_KEYS | {"repeat"}
_EDGE_KEYS = {"source", "target", "port"}


@dataclass
class Node:
    id: str
    type: str
    params: dict = field(default_factory=dict)
    position: dict | None = None  # {"x": float, "y": float} on the canvas; no effect on the model
    frozen: bool = False  # its parameters are not trained (requires_grad False; it runs in eval mode)
    # Copies of a block instance chained one after the other (format /2); None: not repeated, and its
    # copy is not indexed (`layer4_0.conv1`), while any integer indexes them (`layer1.0.conv1`).
    repeat: int | None = None

    def to_dict(self) -> dict:
        d: dict = {"id": self.id, "type": self.type}
        if self.params:
            d["params"] = copy.deepcopy(self.params)
        if self.repeat is not None:
            d["repeat"] = self.repeat
        if self.position is not None:
            d["position"] = dict(self.position)
        if self.frozen:
            d["frozen"] = True
        return d


@dataclass
class Edge:
    source: str
    target: str
    port: int | None = None  # orders the inputs of multi-input nodes (Concat)

    def to_dict(self) -> dict:
        d: dict = {"source": self.source, "target": self.target}
        if self.port is not None:
            d["port"] = self.port
        return d


@dataclass
class Graph:
    name: str
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    description: str = ""
    # Reusable sub-graphs by name (format /2): studio.graph_blocks.Block; a node whose type is a block's
    # name is an instance of it. studio.graph_expand.expand gives the flat graph with dotted ids.
    blocks: dict = field(default_factory=dict)

    @property
    def uses_blocks(self) -> bool:
        """Whether the document needs format /2 (it holds blocks or a repeated node)."""
        return bool(self.blocks) or any(n.repeat is not None for n in self.nodes)

    # ---- document ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d: dict = {"format": FORMAT_BLOCKS if self.uses_blocks else FORMAT, "name": self.name}
        if self.description:
            d["description"] = self.description
        if self.blocks:
            d["blocks"] = {name: block.to_dict() for name, block in self.blocks.items()}
        d["nodes"] = [n.to_dict() for n in self.nodes]
        d["edges"] = [e.to_dict() for e in self.edges]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def copy(self) -> Graph:
        return parse_graph(self.to_dict())

    # ---- lookups ----------------------------------------------------------------------------
    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

    def has_node(self, node_id: str) -> bool:
        return any(n.id == node_id for n in self.nodes)

    def inputs_of(self, node_id: str) -> list[str]:
        """Source ids feeding `node_id`, ordered by `port`, then by edge order."""
        return self.input_map()[node_id]

    def input_map(self) -> dict[str, list[str]]:
        """Every node's ordered input ids, in one pass (inputs_of for all nodes)."""
        incoming: dict[str, list[tuple[int, int, str]]] = {n.id: [] for n in self.nodes}
        ported = {e.target for e in self.edges if e.port is not None}
        for i, e in enumerate(self.edges):
            incoming[e.target].append((e.port if e.port is not None else i, i, e.source))
        return {nid: [src for _, _, src in (sorted(lst) if nid in ported else lst)]
                for nid, lst in incoming.items()}

    def outputs_of(self, node_id: str) -> list[str]:
        return [e.target for e in self.edges if e.source == node_id]

    def sinks(self) -> list[str]:
        sources = {e.source for e in self.edges}
        return [n.id for n in self.nodes if n.id not in sources]

    def topological_order(self) -> list[str]:
        """Node ids so that every edge goes forward (Kahn, stable in document order).

        Raises GraphError naming the nodes on a cycle.
        """
        indeg = {n.id: 0 for n in self.nodes}
        succ: dict[str, list[str]] = {n.id: [] for n in self.nodes}
        for e in self.edges:
            indeg[e.target] += 1
            succ[e.source].append(e.target)
        position = {n.id: i for i, n in enumerate(self.nodes)}
        ready = sorted((nid for nid, d in indeg.items() if d == 0), key=position.__getitem__)
        order: list[str] = []
        import heapq

        heap = [(position[n], n) for n in ready]
        heapq.heapify(heap)
        while heap:
            _, nid = heapq.heappop(heap)
            order.append(nid)
            for t in succ[nid]:
                indeg[t] -= 1
                if indeg[t] == 0:
                    heapq.heappush(heap, (position[t], t))
        if len(order) != len(self.nodes):
            stuck = [n.id for n in self.nodes if indeg[n.id] > 0]
            raise GraphError(
                [Issue(nid, "is on a cycle; a model's graph must not loop back, remove one of the edges "
                            f"between {', '.join(stuck[:6])}") for nid in stuck]
            )
        return order


# ---- parsing ------------------------------------------------------------------------------------

def _type_name(v: object) -> str:
    return "null" if v is None else type(v).__name__


def parse_graph(doc: object) -> Graph:
    """Build a Graph from a decoded JSON document, or raise GraphError listing every problem."""
    issues: list[Issue] = []
    if not isinstance(doc, dict):
        raise GraphError(f"a graph document must be a JSON object, got {_type_name(doc)}")
    for key, limit in (("nodes", MAX_NODES), ("edges", MAX_EDGES)):  # before anything walks them
        if isinstance(doc.get(key), list) and len(doc[key]) > limit:
            raise GraphError(f"the document has {len(doc[key]):,} {key}; a graph may have at most {limit:,}; "
                             "split the model into smaller graphs")
    problem = value_problem(doc)
    if problem:
        raise GraphError(problem)
    fmt = doc.get("format")
    with_blocks = fmt == FORMAT_BLOCKS
    keys = _DOC_KEYS_BLOCKS if with_blocks else _DOC_KEYS
    for k in sorted(set(doc) - keys, key=str):
        hint = "; blocks need format 'studio.graph/2'" if k == "blocks" else ""
        issues.append(Issue(None, f"unknown key {k!r} in the document; allowed keys are {sorted(keys)}{hint}"))
    if fmt not in FORMATS:
        issues.append(Issue(None, f"format is {fmt!r}; expected {FORMAT!r} (or {FORMAT_BLOCKS!r} with blocks)"))
    name = doc.get("name", "untitled")
    if not isinstance(name, str):
        issues.append(Issue(None, f"name must be a string, got {_type_name(name)}"))
        name = "untitled"
    description = doc.get("description", "")
    if not isinstance(description, str):
        issues.append(Issue(None, f"description must be a string, got {_type_name(description)}"))
        description = ""

    blocks: dict = {}
    if with_blocks and "blocks" in doc:
        from studio.graph_blocks import parse_blocks

        blocks = parse_blocks(doc["blocks"], issues, _parse_block_body)
    nodes = parse_nodes(doc.get("nodes"), issues, repeat=with_blocks)
    edges = parse_edges(doc.get("edges", []), {n.id for n in nodes}, issues)
    if issues:
        raise GraphError(issues)
    return Graph(name=name, nodes=nodes, edges=edges, description=description, blocks=blocks)


def _parse_block_body(raw_nodes: object, raw_edges: object, where: str, issues: list[Issue]) -> Graph:
    """A block's nodes and edges (studio.graph_blocks): parsed as a document's, with `repeat` and nested ids."""
    nodes = parse_nodes(raw_nodes, issues, repeat=True, where_prefix=where, nested=True)
    return Graph("block", nodes, parse_edges(raw_edges, {n.id for n in nodes}, issues, where_prefix=where))


def parse_nodes(raw_nodes: object, issues: list[Issue], *, repeat: bool = False, where_prefix: str = "",
                label_prefix: str = "", nested: bool = False) -> list[Node]:
    """The nodes of a document (or of a block, with `where_prefix` naming it), each problem added to `issues`.

    `repeat` allows the format /2 key `repeat`; `label_prefix` is put before node ids in issues."""
    nodes: list[Node] = []
    allowed = _NODE_KEYS_BLOCKS if repeat else _NODE_KEYS
    if not isinstance(raw_nodes, list):
        issues.append(Issue(None, f"{where_prefix}nodes must be a list of node objects, got {_type_name(raw_nodes)}"))
        raw_nodes = []
    seen: set[str] = set()
    for i, rn in enumerate(raw_nodes):
        where = f"{where_prefix}nodes[{i}]"
        if not isinstance(rn, dict):
            issues.append(Issue(None, f"{where} must be an object, got {_type_name(rn)}"))
            continue
        nid = rn.get("id")
        label = (label_prefix + nid if isinstance(nid, str) and NODE_ID_RE.match(nid) and len(nid) <= MAX_ID_LEN
                 else None)
        for k in sorted(set(rn) - allowed, key=str):
            hint = "; repeat needs format 'studio.graph/2'" if k == "repeat" else ""
            issues.append(Issue(label, f"unknown key {k!r} in {where}; allowed keys are {sorted(allowed)}{hint}"))
        problem = node_id_problem(nid, nested=nested)
        if problem:
            issues.append(Issue(label, f"{where}: {problem}"))
            continue
        if nid in seen:
            issues.append(Issue(label, f"duplicate node id {nid!r}; every node needs its own id"))
            continue
        seen.add(nid)
        ntype = rn.get("type")
        if not isinstance(ntype, str):
            issues.append(Issue(label, "type must be a string naming a layer (e.g. 'Linear'), "
                                       f"got {_type_name(ntype)}"))
            continue
        params = rn.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, dict):
            issues.append(Issue(label, f"params must be an object, got {_type_name(params)}"))
            continue
        position = rn.get("position")
        if position is not None:
            if (not isinstance(position, dict) or set(position) - {"x", "y"}
                    or not all(isinstance(position.get(a), (int, float)) and not isinstance(position.get(a), bool)
                               for a in ("x", "y"))):
                issues.append(Issue(label, f"position must be {{'x': number, 'y': number}}, got {position!r}"[:300]))
                position = None
            else:
                position = {"x": position["x"], "y": position["y"]}
        frozen = rn.get("frozen", False)
        if not isinstance(frozen, bool):
            issues.append(Issue(label, f"frozen must be true or false, got {_type_name(frozen)} {frozen!r}"[:200]))
            frozen = False
        count = rn.get("repeat")
        if count is not None and (not isinstance(count, int) or isinstance(count, bool)):
            issues.append(Issue(label, f"repeat must be an integer >= 1 (copies chained one after the other), "
                                       f"got {_type_name(count)} {count!r}"[:200]))
            count = None
        nodes.append(Node(nid, ntype, copy.deepcopy(params), position, frozen, count))
    return nodes


def parse_edges(raw_edges: object, seen: set[str], issues: list[Issue], *, where_prefix: str = "",
                label_prefix: str = "") -> list[Edge]:
    """The edges between the node ids `seen`, each problem added to `issues`."""
    edges: list[Edge] = []
    if not isinstance(raw_edges, list):
        issues.append(Issue(None, f"{where_prefix}edges must be a list of edge objects, got {_type_name(raw_edges)}"))
        raw_edges = []
    pairs: set[tuple[str, str]] = set()
    for i, re_ in enumerate(raw_edges):
        where = f"{where_prefix}edges[{i}]"
        if not isinstance(re_, dict):
            issues.append(Issue(None, f"{where} must be an object, got {_type_name(re_)}"))
            continue
        for k in sorted(set(re_) - _EDGE_KEYS, key=str):
            issues.append(Issue(None, f"unknown key {k!r} in {where}; allowed keys are {sorted(_EDGE_KEYS)}"))
        src, dst, port = re_.get("source"), re_.get("target"), re_.get("port")
        bad = False
        for role, v in (("source", src), ("target", dst)):
            if not isinstance(v, str):
                issues.append(Issue(None, f"{where}.{role} must be a node id string, got {_type_name(v)}"))
                bad = True
            elif v not in seen:
                issues.append(Issue(label_prefix + v if NODE_ID_RE.match(v) and len(v) <= MAX_ID_LEN else None,
                                    f"{where} refers to {role} node {v[:64]!r}, which does not exist"))
                bad = True
        if port is not None and (not isinstance(port, int) or isinstance(port, bool) or port < 0):
            issues.append(Issue(label_prefix + dst if isinstance(dst, str) and dst in seen else None,
                                f"{where}.port must be a non-negative integer, got {port!r}"[:200]))
            bad = True
        if bad:
            continue
        if src == dst:
            issues.append(Issue(label_prefix + src, "has an edge to itself; a layer cannot feed itself"))
            continue
        if (src, dst) in pairs:
            issues.append(Issue(label_prefix + dst, f"has two edges from {src!r}; connect each pair once"))
            continue
        pairs.add((src, dst))
        edges.append(Edge(src, dst, port))
    return edges


def value_problem(doc: object) -> str | None:
    """Why a decoded document holds a value no graph can use, or None: a non-finite number (NaN or
    Infinity), an integer past int64, or nesting deeper than MAX_DEPTH. Walked without recursion, so a
    hostile document cannot exhaust the stack; checked before anything else reads the document."""
    stack: list[tuple[object, str, int]] = [(doc, "document", 0)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, bool) or value is None or isinstance(value, str):
            continue
        if isinstance(value, int):
            if not -MAX_INT <= value <= MAX_INT:
                digits = len(str(abs(value))) if value.bit_length() < 10_000 else "thousands of"
                return (f"{where} is an integer of {digits} digits, past the 64-bit range (|n| <= {MAX_INT}); "
                        "use a realistic number")
        elif isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                return f"{where} is {value!r}; every number in a graph must be finite (no NaN or Infinity)"
        elif isinstance(value, (dict, list)):
            if depth >= MAX_DEPTH:
                return f"{where} is nested more than {MAX_DEPTH} levels deep; a graph document is a few levels deep"
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for k, v in items:
                stack.append((v, f"{where}[{k!r}]"[:120], depth + 1))
        else:
            return f"{where} is a {type(value).__name__}, which JSON does not have"
    return None


def _refuse_constant(name: str):
    raise GraphError(f"the file holds {name}; every number in a graph must be finite (no NaN or Infinity)")


def loads_graph(text: str | bytes) -> Graph:
    """Parse graph JSON text; malformed JSON becomes a GraphError with the line and column."""
    try:
        doc = json.loads(text, parse_constant=_refuse_constant)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f" at line {e.lineno}, column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
        raise GraphError(f"the file is not valid JSON{where}: {getattr(e, 'msg', e)}") from None
    except ValueError:  # an integer literal past Python's digit limit (4,300 digits)
        raise GraphError("the file holds an integer literal thousands of digits long; numbers in a graph fit in "
                         f"64 bits (|n| <= {MAX_INT}): fix that number") from None
    except RecursionError:
        raise GraphError("the JSON document is nested too deeply to read") from None
    return parse_graph(doc)


def load_graph(path: str | os.PathLike) -> Graph:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise GraphError(f"cannot read graph file {str(path)!r}: {e.strerror or e}") from None
    return loads_graph(data)


def save_graph(graph: Graph, path: str | os.PathLike) -> None:
    """Write atomically (temp file + rename): a crash never leaves a half-written graph."""
    atomic_write_text(path, graph.to_json() + "\n")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
