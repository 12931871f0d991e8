"""Autoregressive text generation from a language-model run, one token at a time.

A language model here is any compiled graph whose input is token ids `[T]` (int64) and whose output is
next-token logits `[T, vocab]` at every position: the studio's `gpt_lm` and `char_transformer_lm`
templates, an imported GPT-2. Each step runs the model on the sequence so far, cropped to the model's
context length (its Input shape; the oldest tokens drop off, as in nanoGPT's `generate`), and draws the
next token from the last position's logits. It recomputes the whole window every step (no key/value
cache): simple and exact, slower for long outputs.

Not tokenization (studio.inspection.tokenize turns text into ids and back) and not the pages.

    >>> for step in generate(model, [5, 17, 3], max_new_tokens=20, temperature=0.8, top_k=40, seed=0):  # doctest: +SKIP
    ...     print(step.token_id, step.prob)
    >>> window, att = attention(model, prompt_ids + generated_ids)          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from studio.compile import eval_mode
from studio.errors import StudioError

TOP_SHOWN = 5  # candidates reported with each step (the most probable under the sampling distribution)


class GenerationError(StudioError):
    """A model, prompt or setting that generation cannot use; the message says which and how to fix it."""


@dataclass(frozen=True)
class Step:
    """One generated token and the distribution it came from.

    `prob` and `top_probs` are probabilities under the distribution the token was drawn from (the model's
    softmax after temperature and top-k); for greedy decoding (temperature 0), the model's own softmax."""

    token_id: int
    prob: float
    top_ids: tuple[int, ...]     # the TOP_SHOWN most probable next tokens, most probable first
    top_probs: tuple[float, ...]
    position: int                # index of this token in prompt + generated


def check_language_model(model) -> int:
    """The context length of a compiled language model (its Input length T), or a GenerationError that
    says why `model` cannot generate text."""
    shape, dtype = tuple(getattr(model, "input_shape", ())), getattr(model, "input_dtype", None)
    if len(shape) != 1 or dtype != torch.int64:
        raise GenerationError(f"text generation needs a language model whose input is token ids [T] (int64), but "
                              f"this model takes {shape} {str(dtype).replace('torch.', '')}; open a run of a "
                              "language-model graph (templates gpt_lm, char_transformer_lm, or an imported GPT-2)")
    return int(shape[0])


def vocab_size(model) -> int | None:
    """The number of token ids the model's first Embedding accepts (None when it has none)."""
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            return int(m.num_embeddings)
    return None


def _checked(model, prompt_ids, max_new_tokens, temperature, top_k, context_len) -> tuple[list[int], int]:
    limit = check_language_model(model)
    context_len = limit if context_len is None else int(context_len)
    if not 1 <= context_len <= limit:
        raise GenerationError(f"context_len={context_len} is outside this model's context: its Input takes at most "
                              f"{limit} tokens; use 1 <= context_len <= {limit} (or leave it out)")
    ids = [int(i) for i in np.asarray(prompt_ids).reshape(-1)]
    if not ids:
        raise GenerationError("the prompt is empty; type at least one token to start from")
    vocab = vocab_size(model)
    bad = [i for i in ids if i < 0 or (vocab is not None and i >= vocab)]
    if bad:
        raise GenerationError(f"prompt token ids {bad[:10]} are outside the model's vocabulary of {vocab} ids; "
                              "encode the prompt with this run's own tokenizer")
    if int(max_new_tokens) < 0:
        raise GenerationError(f"max_new_tokens={max_new_tokens} is negative; use 0 or more")
    if not float(temperature) >= 0:  # also refuses NaN
        raise GenerationError(f"temperature={temperature} is not allowed; use 0 (greedy) or a positive value "
                              "such as 0.8")
    if top_k is not None and int(top_k) < 1:
        raise GenerationError(f"top_k={top_k} must be at least 1; use None (or 0 in the page) to sample from every "
                              "token")
    return ids, context_len


def _device(model) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def next_token_logits(model, ids: Sequence[int], context_len: int) -> torch.Tensor:
    """Logits (vocab,) for the token after `ids`, from the last `context_len` of them."""
    x = torch.tensor([list(ids)[-context_len:]], dtype=torch.int64, device=_device(model))
    out = model(x)  # (1, T, vocab)
    if out.dim() != 3 or out.shape[1] != x.shape[1]:
        raise GenerationError(f"a language model's output is logits [T, vocab] for its input [T], but for an input "
                              f"of {tuple(x.shape[1:])} this model gives {tuple(out.shape[1:])}; its last layer "
                              "must keep the sequence (no pooling) and predict the vocabulary")
    return out[0, -1].float()


def generate(model, prompt_ids: Sequence[int], max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, seed: int = 0, context_len: int | None = None) -> Iterator[Step]:
    """Yield `max_new_tokens` new tokens after `prompt_ids`, one Step at a time.

    temperature 0 picks the most probable token (greedy); otherwise the logits are divided by it and,
    with top_k, all but the k largest are dropped before sampling. Sampling uses its own torch.Generator
    seeded with `seed`: the same model, prompt and settings give the same tokens. `context_len` (default
    the model's Input length) is how many of the latest tokens each step sees.
    """
    ids, context_len = _checked(model, prompt_ids, max_new_tokens, temperature, top_k, context_len)
    temperature = float(temperature)
    generator = torch.Generator().manual_seed(int(seed))
    with eval_mode(model), torch.no_grad():
        for _ in range(int(max_new_tokens)):
            logits = next_token_logits(model, ids, context_len).cpu()
            if temperature == 0:
                probs = logits.softmax(-1)
                token = int(torch.argmax(logits))
            else:
                scaled = logits / temperature
                if top_k is not None and int(top_k) < scaled.numel():
                    kth = torch.topk(scaled, int(top_k)).values[-1]
                    scaled = scaled.masked_fill(scaled < kth, float("-inf"))
                probs = scaled.softmax(-1)
                token = int(torch.multinomial(probs, 1, generator=generator))
            top = torch.topk(probs, min(TOP_SHOWN, probs.numel()))
            ids.append(token)
            yield Step(token, float(probs[token]), tuple(int(i) for i in top.indices),
                       tuple(float(p) for p in top.values), len(ids) - 1)


def attention(model, ids: Sequence[int], context_len: int | None = None) -> tuple[list[int], dict[str, np.ndarray]]:
    """One forward over the last `context_len` tokens of `ids` (prompt + generated): (the ids of that
    window, {attention node path: weights (heads, T, T)}), rows queries and columns keys, as the
    attention probes record them (studio.compile.capture; the output is unchanged by recording)."""
    from studio.compile import capture

    ids, context_len = _checked(model, ids, 0, 0, None, context_len)
    window = ids[-context_len:]
    x = torch.tensor([window], dtype=torch.int64, device=_device(model))
    with eval_mode(model), torch.no_grad():
        _, _, attns = capture(model, x, [])
    return window, {node_id: a[0].float().cpu().numpy() for node_id, a in attns.items()}
