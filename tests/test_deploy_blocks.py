"""shrink-channels on a graph with blocks (format studio.graph/2): a layer whose channels reach a block instance
is kept whole with that reason, and a graph with no other layer to shrink gets ExportError naming it (it
raised KeyError on the block's id before, which crashed deploy_report and the Deploy page for any ResNet)."""

from __future__ import annotations

import pytest

from studio.compile import compile_graph
from studio.data import apply_dataset, get_info
from studio.deploy.shrink import shrink_channels
from studio.errors import ExportError
from studio.templates import load_template


def test_shrink_channels_keeps_a_layer_that_feeds_a_block_whole_and_says_why():
    graph = apply_dataset(load_template("resnet20"), get_info("digits"))
    first = next(n.id for n in graph.nodes if n.type == "Conv2d")
    blocks = [n.id for n in graph.nodes if n.type in graph.blocks]
    assert blocks, "resnet20 is written with blocks"
    with pytest.raises(ExportError) as e:
        shrink_channels(graph, compile_graph(graph, seed=0).eval(), 0.5)
    assert f"{first} (its channels reach " in str(e.value)
    assert "a block: shrink-channels does not look inside blocks" in str(e.value)
