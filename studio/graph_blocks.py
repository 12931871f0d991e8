"""Blocks of format `studio.graph/2`: named, parameterised sub-graphs used as node types.

A block is a small graph of its own (`Block.body`, a `Graph` whose `Input` nodes carry no shape) with
declared parameters and their defaults (`Block.params`); inside it, a param value `"$name"` (the whole
value) takes the instance's value of `name`. This module parses and writes the `blocks` section and
substitutes parameters; studio.graph_expand turns a graph with instances into the flat graph that
analysis and compile use.

    >>> from studio.graph import parse_graph
    >>> g = parse_graph({"format": "studio.graph/2", "name": "t",
    ...     "blocks": {"mlp": {"params": {"width": 8}, "nodes": [
    ...         {"id": "x", "type": "Input"}, {"id": "fc", "type": "Linear", "params": {"out_features": "$width"}}],
    ...         "edges": [{"source": "x", "target": "fc"}]}},
    ...     "nodes": [{"id": "input", "type": "Input", "params": {"shape": [4]}},
    ...               {"id": "body", "type": "mlp", "repeat": 2, "params": {"width": 16}}],
    ...     "edges": [{"source": "input", "target": "body"}]})
    >>> g.blocks["mlp"].params, g.node("body").repeat
    ({'width': 8}, 2)
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field

from studio.errors import Issue
from studio.graph_ids import NODE_ID_RE, node_id_problem

_BLOCK_KEYS = {"description", "params", "nodes", "edges", "position"}
MAX_BLOCKS = 200
MAX_REPEAT = 1_000  # copies of one instance; the flat graph's size is checked on expansion too


@dataclass
class Block:
    """One block definition: its name (a node type), declared params with defaults, and its body."""

    name: str
    params: dict = field(default_factory=dict)  # name -> default value
    body: object = None  # a studio.graph.Graph: its nodes and edges (Inputs without shape)
    description: str = ""

    def to_dict(self) -> dict:
        d: dict = {}
        if self.description:
            d["description"] = self.description
        d["params"] = copy.deepcopy(self.params)
        d["nodes"] = [n.to_dict() for n in self.body.nodes]
        d["edges"] = [e.to_dict() for e in self.body.edges]
        return d

    @property
    def input_ids(self) -> list[str]:
        """The block's Input nodes, in node order: its inputs, as ports 0, 1, ..."""
        return [n.id for n in self.body.nodes if n.type == "Input"]

    def output_id(self) -> str | None:
        """The block's single node without an outgoing edge, or None when there is not exactly one."""
        sinks = self.body.sinks()
        return sinks[0] if len(sinks) == 1 else None

    def uses(self) -> list[str]:
        """Types of its nodes (blocks among them are the blocks it uses)."""
        return [n.type for n in self.body.nodes]


def _type_name(v: object) -> str:
    return "null" if v is None else type(v).__name__


def block_name_problem(name: object) -> str | None:
    """Why `name` cannot name a block, or None. (A palette type's name is refused on expansion,
    studio.graph_expand, which may import the palette: parsing does not import torch.)"""
    if not isinstance(name, str):
        return f"a block name must be a string, got {_type_name(name)}"
    problem = node_id_problem(name)
    if problem:
        return problem.replace("id ", "block name ", 1)
    return None


def parse_blocks(raw: object, issues: list[Issue], parse_body) -> dict[str, Block]:
    """The `blocks` section of a /2 document; each problem is added to `issues`, named `block 'x': ...`.

    `parse_body(raw_nodes, raw_edges, where, issues)` is studio.graph's parser of a node and edge list (a
    block's body is parsed like a document's, nested ids allowed); it returns the Graph."""
    if not isinstance(raw, dict):
        issues.append(Issue(None, f"blocks must be an object of named block definitions, got {_type_name(raw)}"))
        return {}
    if len(raw) > MAX_BLOCKS:
        issues.append(Issue(None, f"the document has {len(raw):,} blocks; at most {MAX_BLOCKS} are allowed"))
        return {}
    blocks: dict[str, Block] = {}
    for name, rb in raw.items():
        problem = block_name_problem(name)
        if problem:
            issues.append(Issue(None, f"blocks: {problem}"))
            continue
        where = f"block {name!r}: "
        if not isinstance(rb, dict):
            issues.append(Issue(None, f"{where}a block definition must be an object, got {_type_name(rb)}"))
            continue
        for k in sorted(set(rb) - _BLOCK_KEYS, key=str):
            issues.append(Issue(None, f"{where}unknown key {k!r}; allowed keys are {sorted(_BLOCK_KEYS)}"))
        params = rb.get("params", {}) or {}
        if not isinstance(params, dict):
            issues.append(Issue(None, f"{where}params must be an object of names and default values, "
                                      f"got {_type_name(params)}"))
            params = {}
        for p in params:
            if not NODE_ID_RE.match(p):
                issues.append(Issue(None, f"{where}parameter name {p!r} is not an identifier; use letters, "
                                          "digits and '_' (e.g. 'channels')"))
        description = rb.get("description", "")
        if not isinstance(description, str):
            issues.append(Issue(None, f"{where}description must be a string, got {_type_name(description)}"))
            description = ""
        before = len(issues)
        body = parse_body(rb.get("nodes"), rb.get("edges", []), where, issues)
        if len(issues) > before:
            continue
        body.name, body.description = name, description
        block = Block(name, copy.deepcopy(params), body, description)
        issues.extend(_definition_issues(block))
        blocks[name] = block
    return blocks


def _definition_issues(block: Block) -> list[Issue]:
    """What makes a parsed block unusable whatever its instances say (its Inputs and its output)."""
    where = f"block {block.name!r}: "
    out: list[Issue] = []
    inputs = [n for n in block.body.nodes if n.type == "Input"]
    if not inputs:
        out.append(Issue(None, f"{where}has no Input node; add one (it takes what feeds the instance)"))
    for n in inputs:
        if n.params:
            out.append(Issue(None, f"{where}Input {n.id!r} has params {sorted(n.params)}; a block's Input takes "
                                   "its shape from where the block is used: remove them"))
    if len(block.body.nodes) > 1 and len(block.body.sinks()) != 1:
        out.append(Issue(None, f"{where}has {len(block.body.sinks())} nodes without an outgoing edge "
                               f"({', '.join(block.body.sinks()[:6])}); a block has a single output"))
    return out


def is_ref(value: object) -> bool:
    """Whether a param value refers to a block parameter (`"$channels"`)."""
    return isinstance(value, str) and value.startswith("$") and len(value) > 1


def substitute(params: dict, values: dict) -> tuple[dict, list[tuple[str, str]]]:
    """`params` with each `"$name"` replaced by `values[name]`; and (param, name) for every name not in values."""
    out, missing = {}, []
    for k, v in params.items():
        if is_ref(v):
            ref = v[1:]
            if ref in values:
                out[k] = copy.deepcopy(values[ref])
            else:
                missing.append((k, ref))
                out[k] = v
        else:
            out[k] = v
    return out, missing


def params_json(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


__all__ = ["Block", "MAX_REPEAT", "block_name_problem", "is_ref", "parse_blocks", "substitute"]
