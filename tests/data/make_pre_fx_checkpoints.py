"""Made tests/data/pre_fx_checkpoints.pt once, with the hand-planned compiler of commit d6b8a5e (before torch.fx).

Kept so the checkpoint can be explained; rerunning it with today's compiler would defeat its purpose.
Run from the repository root: PYTHONPATH=. python tests/data/make_pre_fx_checkpoints.py
"""
import json

import torch

from studio.compile import compile_graph
from studio.graph import parse_graph


def main() -> None:
    cnn = {"format": "studio.graph/1", "name": "tiny_res", "nodes": [
        {"id": "input", "type": "Input", "params": {"shape": [2, 6, 6]}},
        {"id": "conv1", "type": "Conv2d", "params": {"out_channels": 3, "padding": 1}},
        {"id": "bn1", "type": "BatchNorm2d", "params": {}},
        {"id": "relu1", "type": "ReLU", "params": {}},
        {"id": "conv2", "type": "Conv2d", "params": {"out_channels": 3, "padding": 1}},
        {"id": "skip", "type": "Conv2d", "params": {"out_channels": 3, "kernel_size": 1}},
        {"id": "add", "type": "Add", "params": {}},
        {"id": "cat", "type": "Concat", "params": {"dim": 0}},
        {"id": "pool", "type": "AdaptiveAvgPool2d", "params": {}},
        {"id": "flat", "type": "Flatten", "params": {}},
        {"id": "fc", "type": "Linear", "params": {"out_features": 4}}],
        "edges": [{"source": "input", "target": "conv1"}, {"source": "conv1", "target": "bn1"},
                  {"source": "bn1", "target": "relu1"}, {"source": "relu1", "target": "conv2"},
                  {"source": "input", "target": "skip"}, {"source": "conv2", "target": "add"},
                  {"source": "skip", "target": "add"}, {"source": "add", "target": "cat"},
                  {"source": "relu1", "target": "cat"}, {"source": "cat", "target": "pool"},
                  {"source": "pool", "target": "flat"}, {"source": "flat", "target": "fc"}]}
    seq = {"format": "studio.graph/1", "name": "tiny_seq", "nodes": [
        {"id": "input", "type": "Input", "params": {"shape": [5], "dtype": "int64"}},
        {"id": "emb", "type": "Embedding", "params": {"num_embeddings": 7, "embedding_dim": 8}},
        {"id": "pos", "type": "PositionalEncoding", "params": {"kind": "learned", "max_len": 5}},
        {"id": "enc", "type": "TransformerEncoderLayer",
         "params": {"nhead": 2, "dim_feedforward": 8, "dropout": 0.0, "causal": True}},
        {"id": "mha", "type": "MultiheadAttention", "params": {"num_heads": 2}},
        {"id": "gate", "type": "Multiply", "params": {}},
        {"id": "lstm", "type": "LSTM", "params": {"hidden_size": 4}},
        {"id": "head", "type": "Linear", "params": {"out_features": 7}}],
        "edges": [{"source": "input", "target": "emb"}, {"source": "emb", "target": "pos"},
                  {"source": "pos", "target": "enc"}, {"source": "enc", "target": "mha"},
                  {"source": "mha", "target": "gate"}, {"source": "enc", "target": "gate"},
                  {"source": "gate", "target": "lstm"}, {"source": "lstm", "target": "head"}]}
    out = {}
    for doc, x in ((cnn, torch.randn(2, 2, 6, 6, generator=torch.Generator().manual_seed(0))),
                   (seq, torch.randint(0, 7, (2, 5), generator=torch.Generator().manual_seed(0)))):
        model = compile_graph(parse_graph(doc), seed=0).eval()
        with torch.no_grad():
            y = model(x)
        out[doc["name"]] = {"graph": json.dumps(doc), "model": model.state_dict(), "x": x, "y": y}
    torch.save(out, "tests/data/pre_fx_checkpoints.pt")


if __name__ == "__main__":
    main()
