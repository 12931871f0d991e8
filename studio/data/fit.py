"""Does a graph fit a dataset? Set a graph's input from a dataset and list what does not fit.

`apply_dataset` writes the dataset's per-sample shape and dtype into the graph's Input node.
`check_graph_fits` compares a graph's analysis (studio.analysis) with a DatasetInfo and returns
issues in the studio's usual form: which node, which param, what was found, what was expected,
how to fix it.

    >>> issues = check_graph_fits(graph, analyze(graph), get_info("digits"))  # doctest: +SKIP
    >>> print(issues[0])                                                       # doctest: +SKIP
    fc: output (3,) does not fit dataset 'digits' (10 classes); expected (10,); set out_features=10
"""

from __future__ import annotations

from studio.data.types import DatasetInfo
from studio.errors import GraphError, Issue
from studio.graph import Graph, Node
from studio.layers import REGISTRY, LayerSpec


def _shape(shape) -> str:
    return str(tuple(shape))


def _spec(node: Node) -> LayerSpec | None:
    """The node's spec; None for a type the palette does not have (analysis reports it)."""
    return REGISTRY.get(node.type)


def _input_node(graph: Graph) -> str:
    inputs = [n.id for n in graph.nodes if n.type == "Input"]
    if len(inputs) != 1:
        found = ", ".join(inputs) or "none"
        raise GraphError(f"a graph needs exactly one Input node to take a dataset; found {len(inputs)} ({found})")
    return inputs[0]


def apply_dataset(graph: Graph, info: DatasetInfo) -> Graph:
    """A copy of `graph` whose Input node takes the dataset's samples (shape and dtype)."""
    out = graph.copy()
    node = out.node(_input_node(out))
    node.params = {**node.params, "shape": list(info.input_shape), "dtype": info.input_dtype}
    return out


def _what(info: DatasetInfo) -> str:
    if info.task == "classification":
        return f"{info.num_classes} classes"
    if info.task == "regression":
        return f"regression targets {_shape(info.target_shape)}"
    return f"a prediction over {info.num_classes} tokens at each of {info.input_shape[0]} positions"


def _fix_node(graph: Graph, output_id: str) -> str:
    """Walk back from the output through shape-keeping layers (LayerSpec.keeps_shape) to the layer that sets
    the size."""
    node_id = output_id
    seen = set()
    while node_id not in seen:
        seen.add(node_id)
        spec = _spec(graph.node(node_id))
        inputs = graph.inputs_of(node_id)
        if spec is None or not spec.keeps_shape or len(inputs) != 1:
            return node_id
        node_id = inputs[0]
    return output_id


def _output_issue(graph: Graph, info: DatasetInfo, output_id: str, out: tuple,
                  compare_last_only: bool) -> Issue | None:
    expected = info.output_shape
    if compare_last_only:  # the input differs: the other dimensions follow from it
        if len(out) == len(expected) and out[-1:] == expected[-1:]:
            return None
    elif out == expected:
        return None
    head = f"output {_shape(out)} does not fit dataset {info.id!r} ({_what(info)}); expected {_shape(expected)}"
    fix = _size_fix(graph, info, output_id, out, compare_last_only)
    if fix is not None:
        fix_id, size_param, value = fix
        where = "" if fix_id == output_id else f" on {fix_id!r}"
        return Issue(fix_id, f"{head}; set {size_param}={value}{where}", param=size_param)
    same_rank = len(out) == len(expected)
    if same_rank and (compare_last_only or out[:-1] == expected[:-1]):  # only the size differs
        return Issue(output_id, f"{head}; end the model with a Linear layer with out_features={expected[-1]}")
    if info.task == "regression" and len(expected) > 1 and same_rank:  # an image-like target (reconstruction)
        return Issue(output_id, f"{head}; make the last layers give {_shape(expected)}: out_channels sets the "
                                "channels, and kernel_size, stride, padding (and output_padding of "
                                "ConvTranspose2d) the spatial size")
    if len(out) > len(expected):
        how = ("reduce the extra dimensions before the last Linear (Flatten, SequencePool, or "
               "AdaptiveAvgPool2d then Flatten)")
        if info.task in ("sequence", "language_model"):
            how = f"keep one prediction per position: the output must be (T, V) = {_shape(expected)}"
        return Issue(output_id, f"{head}; {how}")
    if info.task in ("sequence", "language_model"):
        return Issue(output_id, f"{head}; keep the sequence dimension (return_sequences=True on RNNs, no "
                                f"SequencePool or Flatten) and end with Linear(out_features={expected[-1]})")
    return Issue(output_id, f"{head}; end the model with a Linear layer with out_features={expected[-1]}")


def _size_fix(graph: Graph, info: DatasetInfo, output_id: str, out: tuple,
              compare_last_only: bool) -> tuple[str, str, int] | None:
    """(node, param, value) when one param of the layer that sets the output's size makes the output fit:
    out_features of the last Linear for classes, out_channels of the last conv for image targets."""
    expected = info.output_shape
    fix_id = _fix_node(graph, output_id)
    fix_spec = _spec(graph.node(fix_id))
    size_param, size_dim = (fix_spec.size_param if fix_spec is not None else None) or (None, None)
    if len(out) != len(expected) or size_param is None:
        return None
    if (compare_last_only or out[:-1] == expected[:-1]) and size_dim == -1:  # only the size differs
        return fix_id, size_param, expected[-1]
    if info.task == "regression" and len(expected) > 1 and size_dim == 0 and out[1:] == expected[1:]:
        return fix_id, size_param, expected[0]
    return None


def fit_head(graph: Graph, analysis, info: DatasetInfo) -> tuple[Graph, str] | None:
    """A copy of `graph` whose output fits the dataset by one param change (the last Linear's
    out_features for the number of classes...), and what changed; None when the output fits already
    or needs more than one param (then `check_graph_fits` says what to do)."""
    output_id = getattr(analysis, "output_id", None) or next(iter(graph.sinks()), None)
    if output_id is None or analysis.output_shape is None or tuple(analysis.output_shape) == tuple(info.output_shape):
        return None
    fix = _size_fix(graph, info, output_id, tuple(analysis.output_shape), False)
    if fix is None:
        return None
    fix_id, param, value = fix
    out = graph.copy()
    node = out.node(fix_id)
    before = node.params.get(param, _spec(node).param(param).default)
    node.params = {**node.params, param: value}
    return out, f"{fix_id}.{param} {before} → {value}"


def check_graph_fits(graph: Graph, analysis, info: DatasetInfo, *, graph_issues: bool = True) -> list[Issue]:
    """Issues where the graph does not train on the dataset (empty when it fits): first the graph's
    own issues from the full analysis (a layer that breaks on the dataset's input is not a fit), then
    where its input or output does not fit the dataset. One check for Data, Build and Train.

    `analysis` is studio.analysis.Analysis for `graph` (its issues, input/output shapes and dtypes);
    `graph_issues=False` leaves the analysis' own issues out (for a caller that lists them already).
    """
    issues: list[Issue] = list(getattr(analysis, "issues", ())) if graph_issues else []
    graph = getattr(analysis, "flat", None) or graph  # a graph with blocks: its layers by path (layer4.1.fc)
    input_id = _input_node(graph)
    in_shape, in_dtype = analysis.input_shape, analysis.input_dtype
    input_differs = False
    if in_shape is not None and (tuple(in_shape) != tuple(info.input_shape) or in_dtype != info.input_dtype):
        input_differs = True
        param = "shape" if tuple(in_shape) != tuple(info.input_shape) else "dtype"
        issues.append(Issue(
            input_id,
            f"takes {_shape(in_shape)} {in_dtype} but dataset {info.id!r} has samples of "
            f"{_shape(info.input_shape)} {info.input_dtype}; use the dataset's input ('Use with current graph' "
            f"sets shape={list(info.input_shape)} and dtype={info.input_dtype!r})",
            param=param))

    output_id = getattr(analysis, "output_id", None) or next(iter(graph.sinks()), None)
    out = analysis.output_shape
    if output_id is not None and out is not None:
        issue = _output_issue(graph, info, output_id, tuple(out), input_differs)
        if issue is not None:
            issues.append(issue)
        last = _spec(graph.node(output_id))
        if info.task != "regression" and last is not None and last.outputs_probabilities:
            issues.append(Issue(
                output_id, f"the model ends in {last.type}, but the training loss (cross-entropy) expects logits, "
                           f"the raw scores; remove this {last.type}: the loss applies log-softmax itself and the "
                           "predicted classes stay the same", severity="warning"))

    if info.input_dtype == "int64" and info.num_classes is not None:
        vocab = info.num_classes if info.task != "classification" else len(info.vocab or ())
        for node in graph.nodes:
            spec = _spec(node)
            if spec is None or spec.vocab_param is None or not vocab:
                continue
            name = spec.vocab_param  # the param that bounds the token ids (LayerSpec.vocab_param)
            size = node.params.get(name, spec.param(name).default)
            if isinstance(size, int) and size < vocab:
                issues.append(Issue(
                    node.id, f"{name}={size} is smaller than the vocabulary of dataset {info.id!r} "
                             f"({vocab} tokens), so token ids up to {vocab - 1} would fail; set "
                             f"{name}={vocab}", param=name))
    return issues
