"""The nn.Modules and functions the palette needs beyond torch.nn's own.

Each class here depends only on torch and math, so code export copies its source verbatim into
the exported file and the exported model matches the studio's exactly. Subclasses keep PyTorch's
parameter names (an LSTM node's weights are `lstm1.weight_ih_l0`, as with a plain nn.LSTM).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


class Reshape(nn.Module):
    """Reshape each sample; the batch dimension stays first."""

    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)


class Permute(nn.Module):
    """Permute the per-sample dims; `dims` indexes them (the batch dimension is never named)."""

    def __init__(self, dims):
        super().__init__()
        self.dims = tuple(dims)

    def forward(self, x):
        return x.permute(0, *[d + 1 for d in self.dims])


def add(*xs):
    """Element-wise sum of inputs of one shape (residual connections)."""
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


def multiply(*xs):
    """Element-wise product of inputs of one shape (gating)."""
    out = xs[0]
    for x in xs[1:]:
        out = out * x
    return out


def concat(*xs, dim):
    """Concatenate inputs along a batched dim, in port order."""
    return torch.cat(xs, dim=dim)


class SequencePool(nn.Module):
    """Pool a sequence (B, T, F) to (B, F): mean, max, last or first step."""

    def __init__(self, mode="mean"):
        super().__init__()
        self.mode = mode

    def forward(self, x):
        if self.mode == "mean":
            return x.mean(dim=1)
        if self.mode == "max":
            return x.amax(dim=1)
        if self.mode == "last":
            return x[:, -1]
        return x[:, 0]


class PositionalEncoding(nn.Module):
    """Add position information to (B, T, F): fixed sinusoids (Vaswani et al.) or a learned table."""

    def __init__(self, d_model, kind="sinusoidal", max_len=512):
        super().__init__()
        self.kind = kind
        if kind == "learned":
            self.pe = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
        else:
            position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
            div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
            pe = torch.zeros(max_len, d_model)
            pe[:, 0::2] = torch.sin(position * div)
            pe[:, 1::2] = torch.cos(position * div)[:, : d_model // 2]
            self.register_buffer("pe", pe, persistent=False)  # recomputed, so not in the state dict

    def forward(self, x):
        return x + self.pe[: x.shape[1]]


class ReturnSequences:
    """Mixin for nn.RNN/LSTM/GRU: batch first; return the output sequence or only its last step."""

    def __init__(self, *args, return_sequences=True, **kwargs):
        super().__init__(*args, batch_first=True, **kwargs)
        self.return_sequences = return_sequences

    def forward(self, x):
        out, _ = super().forward(x)  # (B, T, H * directions)
        return out if self.return_sequences else out[:, -1, :]


class RNNLayer(ReturnSequences, nn.RNN):
    pass


class LSTMLayer(ReturnSequences, nn.LSTM):
    pass


class GRULayer(ReturnSequences, nn.GRU):
    pass


def causal_mask(t, device):
    """(T, T) float mask: -inf above the diagonal, so step i attends to steps <= i."""
    return torch.triu(torch.full((t, t), float("-inf"), device=device), diagonal=1)


def attention_weights(attn, x, mask):
    """Per-head attention weights (B, heads, T, T) of self-attention `attn` on x (B, T, E).

    Computed beside the real forward (same projections, pre-dropout), so recording them never
    changes the layer's output.
    """
    b, t, e = x.shape
    h = attn.num_heads
    q, k, _ = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q = q.reshape(b, t, h, e // h).transpose(1, 2)  # (B, h, T, d)
    k = k.reshape(b, t, h, e // h).transpose(1, 2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(e // h)  # (B, h, T, T)
    if mask is not None:
        scores = scores + mask
    return scores.softmax(dim=-1)


class SelfAttention(nn.MultiheadAttention):
    """Multi-head self-attention on (B, T, E), optionally causal; can record its weights."""

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, causal=False):
        super().__init__(embed_dim, num_heads, dropout=dropout, bias=bias, batch_first=True)
        self.causal = causal
        self.record_attention = False
        self.last_attention = None

    def forward(self, x):
        mask = causal_mask(x.shape[1], x.device) if self.causal else None
        if self.record_attention:
            self.last_attention = attention_weights(self, x, mask).detach()
        out, _ = super().forward(x, x, x, attn_mask=mask, need_weights=False, is_causal=self.causal)
        return out


class EncoderLayer(nn.TransformerEncoderLayer):
    """nn.TransformerEncoderLayer, batch first, optionally causal; can record its attention weights."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation="relu",
                 layer_norm_eps=1e-5, norm_first=False, bias=True, causal=False):
        super().__init__(d_model, nhead, dim_feedforward=dim_feedforward, dropout=dropout,
                         activation=activation, layer_norm_eps=layer_norm_eps, batch_first=True,
                         norm_first=norm_first, bias=bias)
        self.causal = causal
        self.record_attention = False
        self.last_attention = None

    def forward(self, x):
        mask = causal_mask(x.shape[1], x.device) if self.causal else None
        if self.record_attention:
            sa_input = self.norm1(x) if self.norm_first else x
            self.last_attention = attention_weights(self.self_attn, sa_input, mask).detach()
        return super().forward(x, src_mask=mask, is_causal=self.causal)
