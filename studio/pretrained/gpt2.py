"""Hugging Face GPT-2 checkpoints (a folder: config.json + model.safetensors) as block graphs.

Depth and widths come from config.json (n_layer, n_embd, n_head, n_positions, vocab_size, n_inner,
layer_norm_epsilon, activation_function). The map follows nanoGPT's `from_pretrained`: keys with or
without the `transformer.` prefix; `Conv1D` weights are stored (in, out) and are transposed into
nn.Linear / nn.MultiheadAttention's (out, in); `c_attn` (q, k, v stacked on the output) is
MultiheadAttention's `in_proj`; the `attn.bias` / `attn.masked_bias` causal-mask buffers hold no
weights and are not loaded (the attention layer is causal); a tied `lm_head` is a copy of `wte`.
Dropout is 0 in the imported graph (GPT-2's embd/attn/resid dropouts are not carried over).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from studio.pretrained.mapping import PretrainedError, WeightMap

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
_ACTIVATIONS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu": "none"}
_BLOCK_KEY = re.compile(r"^h\.(\d+)\.(.+)$")
_IN_BLOCK = {  # HF name inside h.N -> (graph name inside the block, Conv1D weight to transpose)
    "ln_1.weight": ("ln_1.weight", False), "ln_1.bias": ("ln_1.bias", False),
    "attn.c_attn.weight": ("attn.in_proj_weight", True), "attn.c_attn.bias": ("attn.in_proj_bias", False),
    "attn.c_proj.weight": ("attn.out_proj.weight", True), "attn.c_proj.bias": ("attn.out_proj.bias", False),
    "ln_2.weight": ("ln_2.weight", False), "ln_2.bias": ("ln_2.bias", False),
    "mlp.c_fc.weight": ("c_fc.weight", True), "mlp.c_fc.bias": ("c_fc.bias", False),
    "mlp.c_proj.weight": ("c_proj.weight", True), "mlp.c_proj.bias": ("c_proj.bias", False),
}
_MASKS = ("attn.bias", "attn.masked_bias")
_TOP = {"wte.weight": "wte.weight", "wpe.weight": "wpe.pe", "ln_f.weight": "ln_f.weight", "ln_f.bias": "ln_f.bias"}


def looks_like(folder: Path) -> bool:
    return (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file()


def read_config(folder: Path) -> dict:
    """config.json's GPT-2 settings, checked: a PretrainedError names each missing or unsupported one."""
    path = folder / CONFIG_FILE
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PretrainedError(f"{path} cannot be read as JSON ({e}); use the config.json saved with the "
                              "weights") from None
    if not isinstance(cfg, dict):
        raise PretrainedError(f"{path} holds a JSON {type(cfg).__name__}, not an object")
    if cfg.get("model_type", "gpt2") != "gpt2":
        raise PretrainedError(f"{path}: model_type={cfg.get('model_type')!r}; only GPT-2 checkpoints (model_type "
                              "'gpt2') can be imported")
    missing = [k for k in ("n_layer", "n_embd", "n_head", "n_positions", "vocab_size")
               if not isinstance(cfg.get(k), int) or cfg[k] < 1]
    if missing:
        raise PretrainedError(f"{path}: {', '.join(missing)} missing or not a positive integer "
                              f"(found {', '.join(f'{k}={cfg.get(k)!r}' for k in missing)}); a GPT-2 config.json "
                              "has them")
    act = cfg.get("activation_function", "gelu_new")
    unsupported = []
    if act not in _ACTIVATIONS:
        unsupported.append(f"activation_function={act!r} (supported: {', '.join(_ACTIVATIONS)})")
    if cfg["n_embd"] % cfg["n_head"]:
        unsupported.append(f"n_head={cfg['n_head']} does not divide n_embd={cfg['n_embd']}")
    if cfg.get("scale_attn_by_inverse_layer_idx"):
        unsupported.append("scale_attn_by_inverse_layer_idx=true (attention scaled per layer)")
    if cfg.get("scale_attn_weights", True) is False:
        unsupported.append("scale_attn_weights=false (unscaled attention)")
    if cfg.get("add_cross_attention"):
        unsupported.append("add_cross_attention=true (an encoder-decoder GPT-2)")
    if unsupported:
        raise PretrainedError(f"{path}: {'; '.join(unsupported)}; the studio's GPT-2 block is GPT-2 as published "
                              "(pre-norm blocks, causal attention scaled by 1/sqrt(head size), gelu_new)")
    return cfg


def _block(cfg: dict) -> dict:
    """The document's `gpt2_block`: the library's gpt_block with GPT-2's GELU and LayerNorm epsilon."""
    from studio.block_library import builtin_block

    block = builtin_block("gpt_block")
    block["description"] = ("GPT-2 Transformer block: x + attn(ln_1(x)), then x + c_proj(gelu(c_fc(ln_2(x)))), "
                            f"causal self-attention, GELU ({_ACTIVATIONS[cfg.get('activation_function', 'gelu_new')]} "
                            "approximation), as Hugging Face's GPT2Block.")
    eps = float(cfg.get("layer_norm_epsilon", 1e-5))
    by_id = {node["id"]: node for node in block["nodes"]}  # the library block's node ids
    by_id["gelu"]["params"] = {"approximate": _ACTIVATIONS[cfg.get("activation_function", "gelu_new")]}
    if eps != 1e-5:
        by_id["ln_1"]["params"] = by_id["ln_2"]["params"] = {"eps": eps}
    return block


def _node(node_id: str, layer: str, params: dict | None = None, **extra) -> dict:
    """A node of the graph document (params left out when empty)."""
    return {"id": node_id, "type": layer, **({"params": params} if params else {}), **extra}


def load_weights(folder: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / WEIGHTS_FILE
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise PretrainedError(f"{path} cannot be read as safetensors ({str(e)[:200]}); the file is cut short or "
                              "damaged: download it again") from None


def build(folder: Path, source: str, *, seq_len: int | None = None, name: str | None = None):
    """(graph document, WeightMap, architecture) for a GPT-2 folder."""
    cfg = read_config(folder)
    state = load_weights(folder)
    n_layer, e, vocab = cfg["n_layer"], cfg["n_embd"], cfg["vocab_size"]
    d_ff = cfg.get("n_inner") or 4 * e
    t = seq_len or cfg["n_positions"]
    if t > cfg["n_positions"]:
        raise PretrainedError(f"seq_len={t} is longer than the checkpoint's n_positions={cfg['n_positions']}; "
                              f"use seq_len <= {cfg['n_positions']}")
    eps = float(cfg.get("layer_norm_epsilon", 1e-5))
    rep = n_layer if n_layer > 1 else None
    nodes = [_node("input", "Input", {"shape": [t], "dtype": "int64"}),
             _node("wte", "Embedding", {"num_embeddings": vocab, "embedding_dim": e}),
             _node("wpe", "PositionalEncoding", {"kind": "learned", "max_len": cfg["n_positions"]}),
             _node("h", "gpt2_block", {"d_model": e, "num_heads": cfg["n_head"], "d_ff": d_ff},
                   **({"repeat": rep} if rep else {})),
             _node("ln_f", "LayerNorm", {"eps": eps} if eps != 1e-5 else None),
             _node("lm_head", "Linear", {"out_features": vocab, "bias": False})]
    for i, node in enumerate(nodes):
        node["position"] = {"x": 0, "y": 90 * i}
    arch = "gpt2" if (n_layer, e, cfg["n_head"]) == (12, 768, 12) else f"gpt2 ({n_layer} layers, {e} wide)"
    graph = {"format": "studio.graph/2", "name": name or ("gpt2" if arch == "gpt2" else "gpt2_custom"),
             "description": f"{arch} imported from the Hugging Face checkpoint {source}: token and learned position "
                            f"embeddings, {n_layer} pre-norm Transformer blocks ({cfg['n_head']} heads, {e} wide), a "
                            f"final LayerNorm and the {vocab}-token head, holding the checkpoint's weights.",
             "blocks": {"gpt2_block": _block(cfg)}, "nodes": nodes,
             "edges": [{"source": a["id"], "target": b["id"]} for a, b in zip(nodes, nodes[1:], strict=False)]}
    wm = WeightMap(source)
    tied = cfg.get("tie_word_embeddings", True)
    lm_head = None
    for key, tensor in state.items():
        k = key.removeprefix("transformer.")
        if k == "lm_head.weight":
            lm_head = (key, tensor)
        elif k in _TOP:
            wm.put(key, _TOP[k], tensor)
        elif m := _BLOCK_KEY.match(k):
            i, rest = int(m.group(1)), m.group(2)
            prefix = f"h.{i}." if rep else "h."
            if rest in _MASKS:
                wm.skip(key, "the causal-mask buffer; the attention layer is causal itself")
            elif rest in _IN_BLOCK:
                target, transpose = _IN_BLOCK[rest]
                if i >= n_layer:
                    wm.refuse(key, f"block {i} but config.json says n_layer={n_layer}")
                elif transpose:
                    wm.put(key, prefix + target, tensor.t().contiguous(), note="Conv1D (in, out) transposed")
                else:
                    wm.put(key, prefix + target, tensor)
            else:
                wm.refuse(key, "not a tensor of a GPT-2 block (ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, "
                               "mlp.c_proj)")
        else:
            wm.refuse(key, "not a GPT-2 tensor (wte, wpe, h.N.*, ln_f, lm_head)")
    wte = next((v for k, v in state.items() if k.removeprefix("transformer.") == "wte.weight"), None)
    if tied:
        differs = lm_head is not None and wte is not None and (
            lm_head[1].shape != wte.shape or not bool((lm_head[1] == wte).all()))
        if differs:
            wm.refuse(lm_head[0], "config.json ties it to wte (tie_word_embeddings) but it differs from wte.weight")
        elif wte is not None:
            if lm_head is not None:
                wm.skip(lm_head[0], "tied: equal to wte.weight, which fills lm_head")
            wm.put("wte.weight", "lm_head.weight", wte, note="tied lm_head: a copy of wte")
    elif lm_head is not None:
        wm.put(lm_head[0], "lm_head.weight", lm_head[1])
    return graph, wm, arch


def copy_tokenizer(folder: Path, dest: Path, *, vocab_size: int) -> str | None:
    """Write `dest` (tokenizer.json) from the folder's tokenizer.json, or built from vocab.json + merges.txt
    (byte-level BPE, as GPT-2's); returns where it came from, or None when the folder has neither.
    PretrainedError when it makes token ids the model's `vocab_size` embedding does not have."""
    if (folder / TOKENIZER_FILE).is_file():
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        except Exception as e:  # the tokenizers library raises its own Exception subclass
            raise PretrainedError(f"{folder / TOKENIZER_FILE} is not a tokenizer the tokenizers library reads "
                                  f"({str(e)[:160]}); remove it, or replace it with GPT-2's tokenizer.json") from None
        _check_vocab(tok, vocab_size, folder / TOKENIZER_FILE)
        shutil.copyfile(folder / TOKENIZER_FILE, dest)
        return TOKENIZER_FILE
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        try:
            tok = Tokenizer(models.BPE.from_file(str(folder / "vocab.json"), str(folder / "merges.txt")))
        except Exception as e:
            raise PretrainedError(f"{folder}: vocab.json + merges.txt do not make a BPE tokenizer "
                                  f"({str(e)[:160]})") from None
        _check_vocab(tok, vocab_size, folder / "vocab.json")
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.save(str(dest))
        return "vocab.json + merges.txt"
    return None


def _check_vocab(tok, vocab_size: int, path: Path) -> None:
    if tok.get_vocab_size() > vocab_size:
        raise PretrainedError(f"{path} has {tok.get_vocab_size():,} tokens but the model's embedding (config.json's "
                              f"vocab_size) has {vocab_size:,}; use the tokenizer saved with these weights")
