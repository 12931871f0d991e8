"""shrink-channels (studio.deploy.shrink): the pruned channels removed for a smaller dense graph, against the
prune-channels model (same channels zeroed in place) as the oracle; layers a merge or a second consumer
reads are kept whole with the reason; a prune-channels fine-tune shrinks to the same function."""

from __future__ import annotations

import pytest
import torch

from studio.analysis import analyze
from studio.compile import compile_graph
from studio.data import apply_dataset, get_info
from studio.deploy import make_variant
from studio.deploy.shrink import shrink_channels
from studio.errors import ExportError
from studio.graph import parse_graph
from studio.templates import load_template
from tests.conftest import chain, run_here, train_here


def _trained_like(graph, seed=0):
    """A compiled graph with random non-trivial weights and batch-norm statistics (eval mode)."""
    torch.manual_seed(seed)
    model = compile_graph(graph, seed=seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize("template,sizes", [
    ("mlp", {"fc1": (256, 128), "fc2": (128, 64), "fc3": (64, 32)}),
    ("seed_cnn_padded", {"conv1": (32, 16), "conv2": (64, 32), "fc1": (128, 64)}),
])
def test_shrunk_model_computes_what_prune_channels_computes_with_fewer_weights(template, sizes):
    graph = apply_dataset(load_template(template), get_info("digits"))
    model = _trained_like(graph)
    shrunk = shrink_channels(graph, model, 0.5)
    assert shrunk.channels == sizes
    assert analyze(shrunk.graph).ok and parse_graph(shrunk.graph.to_dict()).to_dict() == shrunk.graph.to_dict()
    for node_id, (_, after) in sizes.items():  # the graph says so (shapes re-inferred from it)
        assert analyze(shrunk.graph).nodes[node_id].output_shape[0] == after
    zeroed = make_variant(model, "prune-channels", sparsity=0.5).module
    x = torch.rand(8, *model.input_shape)
    with torch.no_grad():
        # same process, same kernels; only the matrix sizes differ (summation order): fp32 rounding
        torch.testing.assert_close(shrunk.model(x), zeroed(x), rtol=1e-5, atol=1e-6)
    before, after = (sum(p.numel() for p in m.parameters()) for m in (model, shrunk.model))
    assert after < 0.5 * before
    assert any(n.startswith("channels removed: ") for n in shrunk.notes)
    assert [n.id for n in graph.nodes] == [n.id for n in shrunk.graph.nodes]
    original = apply_dataset(load_template(template), get_info("digits"))
    assert graph.to_dict() == original.to_dict()  # the argument is unchanged


def test_layers_a_merge_or_two_consumers_read_are_kept_whole_with_the_reason():
    graph = apply_dataset(load_template("resnet_small"), get_info("shapes"))
    model = _trained_like(graph)
    shrunk = shrink_channels(graph, model, 0.25)
    assert set(shrunk.channels) == {"b1_conv1", "b2_conv1", "b3_conv1"}
    kept = next(n for n in shrunk.notes if n.startswith("kept whole: "))
    assert "b1_conv2 (its channels reach b1_add (Add), a merge)" in kept and "fc (the output layer)" in kept
    assert "stem (its channels reach" in kept and "feeds 2 nodes" in kept
    # a BatchNorm on the path is sliced with its conv: the smaller model loads strictly and runs
    assert shrunk.model.b1_bn1.num_features == shrunk.channels["b1_conv1"][1] == 12
    assert shrunk.model(torch.rand(2, *model.input_shape)).shape == model(torch.rand(2, *model.input_shape)).shape


def test_a_graph_with_nothing_to_shrink_says_why():
    graph = parse_graph(chain(("input", "Input", {"shape": [6]}), ("fc", "Linear", {"out_features": 3})))
    with pytest.raises(ExportError, match=r"shrink-channels found no layer whose channels can be removed: "
                                          r"fc \(the output layer\)\. Use prune-channels"):
        shrink_channels(graph, compile_graph(graph, seed=0), 0.5)
    with pytest.raises(ExportError, match="sparsity=1.5 is out of range"):
        shrink_channels(graph, compile_graph(graph, seed=0), 1.5)


def test_a_prune_channels_fine_tune_shrinks_to_the_same_function_and_is_measured_like_any_variant(monkeypatch, capsys,
                                                                                                   tmp_path):
    """The pruned fine-tuning path holds the channels at zero; shrinking the child run removes exactly them."""
    from studio.deploy import deploy_report
    from studio.deploy.lineage import start_finetune
    from studio.training import TrainConfig

    monkeypatch.setenv("STUDIO_WORKSPACE", str(tmp_path / "ws"))
    graph = apply_dataset(load_template("mlp"), get_info("digits"))
    parent = train_here(graph, "digits", TrainConfig(epochs=2, batch_size=64, probes=False, seed=0))
    child = run_here(lambda: start_finetune(parent, "prune-channels", 0.5, epochs=1))
    report = deploy_report(child, ["prune-channels", "shrink-channels"], sparsity=0.5, repeats=1)
    zeroed, small = report.row("prune-channels"), report.row("shrink-channels")
    assert small.ok, small.message
    assert small.metric == zeroed.metric == report.row("fp32").metric  # the fine-tune's zeros, removed
    assert small.params < 0.4 * zeroed.params and small.bytes < 0.5 * zeroed.bytes
    fc1 = next(n for n in small.graph["nodes"] if n["id"] == "fc1")
    assert fc1["params"]["out_features"] == 128 and small.state_dict is not None

    # the CLI writes the smaller program and, beside it, the graph it belongs to
    import json

    from studio.__main__ import main
    from studio.graph import load_graph

    assert main(["compress", child, "--method", "shrink-channels", "--repeats", "1", "-o", str(tmp_path / "s.pt2"),
                 "--json"]) == 0
    figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert figures["metric"] == small.metric and figures["graph"] == str(tmp_path / "s.graph.json")
    assert load_graph(tmp_path / "s.graph.json").to_dict() == small.graph
