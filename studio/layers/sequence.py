"""Palette: recurrent, embedding and attention layers (sequences are (T, F), batch first)."""

from __future__ import annotations

from torch import nn

from studio.layers import modules as m
from studio.layers import rules
from studio.layers.base import InSpec, LayerSpec, NoEquivalent, Param, register

_SEQ = (InSpec((8, 16), "float32"),)


def _recurrent_check(p: dict, ins: list[InSpec]) -> list[tuple[str | None, str]]:
    if p["dropout"] > 0 and p["num_layers"] == 1:
        return [("dropout", f"dropout={p['dropout']} has no effect with num_layers=1 (PyTorch applies it "
                            "between stacked layers); set num_layers >= 2 or dropout=0")]
    return []


def _recurrent_from_module(m: nn.Module) -> dict:
    """Params of an nn.RNN/LSTM/GRU (batch first) or of the studio's RNNLayer/LSTMLayer/GRULayer."""
    name = type(m).__name__
    if not m.batch_first:
        raise NoEquivalent(f"{name} with batch_first=False: the palette's recurrent layers are batch first; "
                           "construct it with batch_first=True")
    if getattr(m, "proj_size", 0):
        raise NoEquivalent("LSTM with proj_size has no palette equivalent")
    p = {"hidden_size": m.hidden_size, "num_layers": m.num_layers,
         "return_sequences": getattr(m, "return_sequences", True), "bidirectional": m.bidirectional,
         "dropout": float(m.dropout), "bias": m.bias}
    if m.mode.startswith("RNN"):
        p["nonlinearity"] = m.nonlinearity
    return p


def _encoder_from_module(m: nn.Module) -> dict:
    """Params of an nn.TransformerEncoderLayer (batch first) or of the studio's EncoderLayer."""
    if not m.self_attn.batch_first:
        raise NoEquivalent("TransformerEncoderLayer with batch_first=False: the palette's is batch first; "
                           "construct it with batch_first=True")
    act = getattr(m, "activation_relu_or_gelu", 0)
    if act not in (1, 2):
        raise NoEquivalent("TransformerEncoderLayer with an activation other than relu or gelu has no palette "
                           "equivalent")
    return {"nhead": m.self_attn.num_heads, "dim_feedforward": m.linear1.out_features, "dropout": m.dropout.p,
            "activation": "relu" if act == 1 else "gelu", "norm_first": m.norm_first,
            "causal": getattr(m, "causal", False), "layer_norm_eps": m.norm1.eps, "bias": m.linear1.bias is not None}


def _recurrent(cls: type, name: str, gates: int, extra: tuple[Param, ...] = ()) -> LayerSpec:
    params = (
        Param("hidden_size", "int", 64, "Features in the hidden state.", min=1),
        Param("num_layers", "int", 1, "Stacked recurrent layers.", min=1, max=16),
        Param("return_sequences", "bool", True,
              "true: the whole output sequence (T, H*dirs); false: only the last step (H*dirs,)."),
        Param("bidirectional", "bool", False, "Also run the sequence backwards and concatenate."),
        Param("dropout", "float", 0.0, "Dropout between stacked layers.", min=0.0, max=1.0, advanced=True),
        *extra,
        Param("bias", "bool", True, "Learn bias terms.", advanced=True),
    )
    return LayerSpec(
        type=name, category="recurrent",
        doc=f"{name} over a (T, F) sequence, batch first (input_size is inferred).",
        params=params,
        make=lambda p, ins: (cls, {"input_size": ins[0].shape[-1], **p}),
        ranks=(2,), expects="(T, F)", check=_recurrent_check,
        label=lambda p: f"{p['hidden_size']}{' x' + str(p['num_layers']) if p['num_layers'] > 1 else ''}"
                        f"{' bi' if p['bidirectional'] else ''}{'' if p['return_sequences'] else ' last'}",
        example=_SEQ, module_types=(cls, getattr(nn, name)), from_module=_recurrent_from_module,
        shape_rule=rules.recurrent(gates),
    )


register(_recurrent(m.RNNLayer, "RNN", 1, (Param("nonlinearity", "choice", "tanh", "Activation of the cell.",
                                              choices=("tanh", "relu"), advanced=True),)))
register(_recurrent(m.LSTMLayer, "LSTM", 4))
register(_recurrent(m.GRULayer, "GRU", 3))

def _embedding_from_module(mod: nn.Module) -> dict:
    if mod.norm_type != 2.0 or mod.scale_grad_by_freq or mod.sparse:
        raise NoEquivalent("Embedding with norm_type, scale_grad_by_freq or sparse set has no palette equivalent")
    return {"num_embeddings": mod.num_embeddings, "embedding_dim": mod.embedding_dim,
            "padding_idx": mod.padding_idx, "max_norm": mod.max_norm}


register(LayerSpec(
    type="Embedding", category="embedding",
    doc="Look up a learned vector for each token id: (T,) int64 -> (T, embedding_dim).",
    params=(
        Param("num_embeddings", "int", 1000, "Vocabulary size: ids must be < num_embeddings.", min=1),
        Param("embedding_dim", "int", 64, "Size of each token vector.", min=1),
        Param("padding_idx", "int", None, "Id whose vector stays zero and gets no gradient.", min=0,
              optional=True, advanced=True),
        Param("max_norm", "float", None, "Renormalize vectors whose norm exceeds this.", min=0.0,
              optional=True, advanced=True),
    ),
    make=lambda p, ins: (nn.Embedding, dict(p)),
    dtype="int", check=lambda p, ins: (
        [("padding_idx", f"padding_idx={p['padding_idx']} must be < num_embeddings={p['num_embeddings']}")]
        if p["padding_idx"] is not None and p["padding_idx"] >= p["num_embeddings"] else []),
    label=lambda p: f"{p['num_embeddings']}x{p['embedding_dim']}",
    example=(InSpec((8,), "int64"),),
    module_types=(nn.Embedding,), from_module=_embedding_from_module,
    shape_rule=rules.embedding, vocab_param="num_embeddings",
))


def _pe_check(p: dict, ins: list[InSpec]) -> list[tuple[str | None, str]]:
    t = ins[0].shape[0]
    if t > p["max_len"]:
        return [("max_len", f"the sequence has {t} steps but max_len={p['max_len']}; set max_len >= {t}")]
    return []


register(LayerSpec(
    type="PositionalEncoding", category="embedding",
    doc="Add position information to a (T, F) sequence: fixed sinusoids or a learned table.",
    params=(
        Param("kind", "choice", "sinusoidal", "sinusoidal (fixed, Vaswani et al.) or learned.",
              choices=("sinusoidal", "learned")),
        Param("max_len", "int", 512, "Longest sequence supported.", min=1, max=65_536),
    ),
    make=lambda p, ins: (m.PositionalEncoding, {"d_model": ins[0].shape[-1], **p}),
    ranks=(2,), expects="(T, F)", check=_pe_check, label=lambda p: p["kind"], example=_SEQ,
    module_types=(m.PositionalEncoding,), from_module=lambda mod: {"kind": mod.kind, "max_len": mod.pe.shape[0]},
    shape_rule=rules.positional,
))


def _heads_check(key: str):
    def check(p: dict, ins: list[InSpec]) -> list[tuple[str | None, str]]:
        e, h = ins[0].shape[-1], p[key]
        if e % h:
            ok = [d for d in range(1, min(e, 64) + 1) if e % d == 0]
            return [(key, f"{key}={h} does not divide the embedding size {e} (the input's last dim); "
                          f"use one of {ok[-8:]} or change the previous layer's size to a multiple of {h}")]
        return []

    return check


def _heads(n: int) -> str:
    return f"{n} head{'' if n == 1 else 's'}"


register(LayerSpec(
    type="MultiheadAttention", category="attention",
    doc="Multi-head self-attention over a (T, E) sequence (embed_dim is inferred); optionally causal.",
    params=(
        Param("num_heads", "int", 4, "Parallel attention heads; must divide the embedding size.", min=1),
        Param("dropout", "float", 0.0, "Dropout on attention weights.", min=0.0, max=1.0),
        Param("causal", "bool", False, "Mask future steps (each step attends only to itself and the past)."),
        Param("bias", "bool", True, "Learn projection biases.", advanced=True),
    ),
    make=lambda p, ins: (m.SelfAttention, {"embed_dim": ins[0].shape[-1], **p}),
    ranks=(2,), expects="(T, E)", check=_heads_check("num_heads"), attention=True,
    label=lambda p: f"{_heads(p['num_heads'])}{' causal' if p['causal'] else ''}", example=_SEQ,
    module_types=(m.SelfAttention,),
    from_module=lambda mod: {"num_heads": mod.num_heads, "dropout": mod.dropout, "causal": mod.causal,
                             "bias": mod.in_proj_bias is not None},
))

register(LayerSpec(
    type="TransformerEncoderLayer", category="attention",
    doc="Self-attention + feed-forward block with residuals and LayerNorm (d_model is inferred).",
    params=(
        Param("nhead", "int", 4, "Attention heads; must divide d_model.", min=1),
        Param("dim_feedforward", "int", 2048, "Hidden size of the feed-forward network.", min=1),
        Param("dropout", "float", 0.1, "Dropout in attention and feed-forward.", min=0.0, max=1.0),
        Param("activation", "choice", "relu", "Feed-forward activation.", choices=("relu", "gelu")),
        Param("norm_first", "bool", False, "Pre-norm (LayerNorm before attention) instead of post-norm."),
        Param("causal", "bool", False, "Mask future steps (for language models)."),
        Param("layer_norm_eps", "float", 1e-5, "LayerNorm epsilon.", min=0.0, advanced=True),
        Param("bias", "bool", True, "Learn biases in linear and norm layers.", advanced=True),
    ),
    make=lambda p, ins: (m.EncoderLayer, {"d_model": ins[0].shape[-1], **p}),
    ranks=(2,), expects="(T, E)", check=_heads_check("nhead"), attention=True,
    label=lambda p: f"{_heads(p['nhead'])} ff{p['dim_feedforward']}{' causal' if p['causal'] else ''}",
    example=_SEQ, module_types=(m.EncoderLayer, nn.TransformerEncoderLayer), from_module=_encoder_from_module,
))
