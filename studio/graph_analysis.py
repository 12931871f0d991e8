"""Analysis of a graph with blocks: the flat expansion analysed as any graph, plus totals per instance.

`analyze` (studio.analysis) hands a graph that uses blocks here. Its issues name full paths
(`layer2.1.add: ...`) since the flat graph's ids are the paths; issues found while expanding (a bad
`"$name"`, an unknown block parameter, a block that contains itself, `repeat` < 1) come first. Each
instance and each copy gets a NodeInfo of category "block" in `Analysis.instances`: the shape it outputs,
and the parameters, FLOPs and activation memory of everything inside it.
"""

from __future__ import annotations

from studio.analysis import Analysis, NodeInfo, analyze
from studio.graph import Graph
from studio.graph_expand import expand
from studio.layers import InSpec


def analyze_blocks(graph: Graph, **kwargs) -> Analysis:
    ex = expand(graph)
    if ex.fatal:
        a = Analysis(issues=list(ex.issues))
        a.expansion = ex
        return a
    a = analyze(ex.graph, **kwargs)  # the flat graph holds no blocks: the plain analysis
    a.issues = ex.issues + [i for i in a.issues if (i.node_id, i.param) not in ex.flagged]
    a.expansion = ex
    for inst in ex.instances.values():
        label = f"{inst.block} ×{inst.repeat}" if inst.repeat is not None else inst.block
        a.instances[inst.path] = _totals(a, inst.block, label, inst.inputs, inst.output, inst.members)
        if inst.repeat is not None:
            sources = inst.inputs
            for i, (copy_path, members) in enumerate(zip(inst.copies, inst.copy_members, strict=True)):
                a.instances[copy_path] = _totals(a, inst.block, f"{inst.block} [{i}]", sources,
                                                 inst.copy_outputs[i], members)
                sources = [inst.copy_outputs[i]]
    return a


def _totals(a: Analysis, block: str, label: str, inputs: list[str], output: str | None,
            members: list[str]) -> NodeInfo:
    infos = [a.nodes[m] for m in members if m in a.nodes]
    out = a.nodes.get(output) if output else None
    ins = tuple(InSpec(a.nodes[s].output_shape, a.nodes[s].dtype) for s in inputs
                if s in a.nodes and a.nodes[s].output_shape is not None)
    return NodeInfo(block, "block", label, ins, out.output_shape if out else None, out.dtype if out else None,
                    sum(i.params for i in infos), sum(i.flops for i in infos),
                    sum(i.activation_bytes for i in infos))


__all__ = ["analyze_blocks"]
