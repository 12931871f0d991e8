"""A small Transformer trained on `reverse` must learn to attend to the mirrored position.

To output the sequence reversed, position i can only get its answer from position T-1-i, so a model
that reaches high token accuracy with one attention layer (and no other path between positions) must
put its attention on the anti-diagonal. This is what the Inspect page shows on this task.
"""

from __future__ import annotations

import torch

from studio.compile import capture, compile_graph
from studio.data import get_dataset
from studio.graph import parse_graph
from studio.training import Task, TrainConfig, Trainer

T, V, D = 8, 8, 32


def reverse_graph(num_heads: int) -> dict:
    nodes = [("input", "Input", {"shape": [T], "dtype": "int64"}),
             ("embed", "Embedding", {"num_embeddings": V, "embedding_dim": D}),
             ("pos", "PositionalEncoding", {"kind": "learned", "max_len": T}),
             ("attn", "MultiheadAttention", {"num_heads": num_heads}),
             ("head", "Linear", {"out_features": V})]
    return {"format": "studio.graph/1", "name": "tiny-reverse",
            "nodes": [{"id": i, "type": t, "params": p} for i, t, p in nodes],
            "edges": [{"source": a[0], "target": b[0]} for a, b in zip(nodes, nodes[1:], strict=False)]}


def test_trained_reverse_transformer_attends_to_the_mirrored_position():
    torch.set_num_threads(1)
    data = get_dataset("reverse", seed=0, options={"num_samples": 3000, "seq_len": T, "vocab_size": V})
    assert data.info.vocab == list("01234567")
    model = compile_graph(parse_graph(reverse_graph(num_heads=2)), seed=0)

    untrained = _attention(model, data.val.x)
    cfg = TrainConfig(max_steps=500, batch_size=64, lr=3e-3, eval_every=500, probes=False, seed=0)
    state = Trainer(model, data, cfg, task=Task("sequence", num_classes=V)).fit()
    assert state.last_eval["val_token_accuracy"] >= 0.9, state.last_eval

    att = _attention(model, data.val.x)                          # (heads, T, T), mean over samples
    mirrored = torch.arange(T - 1, -1, -1)
    hits = (att.argmax(dim=-1) == mirrored).float().mean(dim=-1)   # per head: queries whose top key is T-1-i
    anti = att.flip(-1).diagonal(dim1=-2, dim2=-1).mean(dim=-1)    # per head: mean weight on the anti-diagonal
    assert hits.max() >= 0.75, f"fraction of queries attending to T-1-i per head: {hits.tolist()}"
    assert anti.max() > 3 / T, f"anti-diagonal mass per head {anti.tolist()} vs uniform {1 / T:.3f}"
    # the pattern was learned: before training no head put its argmax on the mirror for most queries
    before = (untrained.argmax(dim=-1) == mirrored).float().mean(dim=-1)
    assert before.max() < 0.75, before.tolist()


def _attention(model, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        _, _, attention = capture(model, x, [])
    return attention["attn"].mean(dim=0)
