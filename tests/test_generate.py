"""Text generation (studio.inspection.generate) against hand-written torch loops over the same model, and the
run tokenizers (studio.inspection.tokenize): a byte-level BPE tokenizer trained here with the `tokenizers`
library and saved as tokenizer.json (offline), and the `chars` dataset's character table."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from studio.compile import compile_graph
from studio.errors import DataError
from studio.graph import parse_graph
from studio.inspection.generate import GenerationError, attention, generate
from studio.inspection.tokenize import FileTokenizer, VocabTokenizer, run_tokenizer, stream_text

T, VOCAB = 8, 11  # context length and vocabulary of the tiny model


def tiny_lm(causal_blocks: int = 2) -> dict:
    """A char_transformer_lm in miniature: 8-token context, 11 tokens, two causal pre-norm blocks (dropout on,
    so a forgotten eval() would change the output)."""
    chain = [("input", "Input", {"shape": [T], "dtype": "int64"}),
             ("embed", "Embedding", {"num_embeddings": VOCAB, "embedding_dim": 16}),
             ("pos", "PositionalEncoding", {"kind": "learned", "max_len": T})]
    chain += [(f"block{i}", "TransformerEncoderLayer", {"nhead": 2, "dim_feedforward": 32, "dropout": 0.5,
                                                        "norm_first": True, "causal": True})
              for i in range(causal_blocks)]
    chain += [("ln_f", "LayerNorm", None), ("head", "Linear", {"out_features": VOCAB})]
    return {"format": "studio.graph/1", "name": "tiny_lm",
            "nodes": [{"id": i, "type": t, **({"params": p} if p else {})} for i, t, p in chain],
            "edges": [{"source": a[0], "target": b[0]} for a, b in zip(chain, chain[1:], strict=False)]}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = compile_graph(parse_graph(tiny_lm()), seed=0)
    with torch.no_grad():  # sharper logits than the init's, so greedy and sampling visibly differ
        m.head.weight.mul_(8.0)
    return m


def hand_logits(model, ids: list[int]) -> torch.Tensor:
    """The oracle's next-token logits: the model in eval mode on the last T ids."""
    model.eval()
    with torch.no_grad():
        return model(torch.tensor([ids[-T:]]))[0, -1]


def hand_greedy(model, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(hand_logits(model, ids).argmax()))
    return ids[len(prompt):]


def tokens(steps) -> list[int]:
    return [s.token_id for s in steps]


def test_greedy_equals_a_hand_argmax_loop_and_top_k_1_equals_greedy(model):
    prompt = [1, 2, 3]
    model.train()  # generate must switch dropout off itself, and give the mode back
    steps = list(generate(model, prompt, 5, temperature=0))
    assert model.training
    assert tokens(steps) == hand_greedy(model, prompt, 5)
    assert tokens(generate(model, prompt, 5, temperature=1.0, top_k=1, seed=123)) == tokens(steps)
    first = torch.softmax(hand_logits(model, prompt), -1)  # greedy reports the model's own softmax
    assert steps[0].prob == pytest.approx(float(first.max()), rel=1e-5)
    assert steps[0].top_ids[0] == steps[0].token_id and len(steps[0].top_ids) == 5
    assert [s.position for s in steps] == [3, 4, 5, 6, 7]


def test_context_is_cropped_to_the_input_length_past_it(model):
    prompt = [4, 5, 6, 7, 8, 9]
    steps = list(generate(model, prompt, 12, temperature=0))  # 18 tokens in all, context 8
    assert tokens(steps) == hand_greedy(model, prompt, 12)
    shorter = tokens(generate(model, prompt, 12, temperature=0, context_len=3))
    ids = list(prompt)
    for _ in range(12):
        model.eval()
        with torch.no_grad():
            ids.append(int(model(torch.tensor([ids[-3:]]))[0, -1].argmax()))
    assert shorter == ids[len(prompt):]


def test_sampling_is_seeded_and_draws_from_the_tempered_top_k_distribution(model):
    prompt = [0, 5]
    a = tokens(generate(model, prompt, 20, temperature=1.3, top_k=4, seed=7))
    assert a == tokens(generate(model, prompt, 20, temperature=1.3, top_k=4, seed=7))
    assert a != tokens(generate(model, prompt, 20, temperature=1.3, top_k=4, seed=8))
    # The oracle: the same draw by hand (logits / temperature, all but the 4 largest dropped, multinomial with
    # a generator seeded alike), token after token.
    g, ids = torch.Generator().manual_seed(7), list(prompt)
    for _ in range(20):
        logits = hand_logits(model, ids) / 1.3
        v, _ = torch.topk(logits, 4)
        logits[logits < v[-1]] = float("-inf")
        ids.append(int(torch.multinomial(torch.softmax(logits, -1), 1, generator=g)))
    assert a == ids[len(prompt):]
    assert len({*a}) <= VOCAB
    step = next(iter(generate(model, prompt, 1, temperature=1.3, top_k=4, seed=7)))
    assert len([p for p in step.top_probs if p > 0]) <= 4 and sum(step.top_probs) == pytest.approx(1, abs=1e-5)


def test_attention_of_prompt_and_generated_tokens_is_the_probes_view_of_the_last_window(model):
    from studio.compile import capture

    ids = [1, 2, 3] + tokens(generate(model, [1, 2, 3], 7, temperature=0))  # 10 tokens: the window is the last 8
    window, att = attention(model, ids)
    assert window == ids[-T:]
    assert sorted(att) == ["block0", "block1"]
    model.eval()
    with torch.no_grad():
        _, _, expected = capture(model, torch.tensor([window]), [])
    for node_id, a in att.items():
        assert a.shape == (2, T, T)
        np.testing.assert_allclose(a, expected[node_id][0].numpy(), rtol=0, atol=0)
        np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-5)  # each query's weights are a distribution
        assert np.all(a[:, np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] == 0)  # causal: no future keys
    short, att3 = attention(model, [4, 5, 6])
    assert short == [4, 5, 6] and att3["block0"].shape == (2, 3, 3)


def test_bad_models_prompts_and_settings_are_refused_with_the_received_values(model):
    mlp = compile_graph(parse_graph({"format": "studio.graph/1", "name": "mlp", "nodes": [
        {"id": "input", "type": "Input", "params": {"shape": [4]}},
        {"id": "fc", "type": "Linear", "params": {"out_features": 3}}],
        "edges": [{"source": "input", "target": "fc"}]}))
    with pytest.raises(GenerationError, match=r"token ids \[T\] \(int64\), but this model takes \(4,\) float32"):
        next(generate(mlp, [1], 1))
    with pytest.raises(GenerationError, match="the prompt is empty"):
        next(generate(model, [], 1))
    with pytest.raises(GenerationError, match=r"prompt token ids \[11, 40\] are outside the model's vocabulary of 11"):
        next(generate(model, [1, 11, 40], 1))
    with pytest.raises(GenerationError, match="context_len=9 is outside this model's context.*at most 8"):
        next(generate(model, [1], 1, context_len=9))
    with pytest.raises(GenerationError, match="temperature=-1"):
        next(generate(model, [1], 1, temperature=-1))
    with pytest.raises(GenerationError, match="top_k=0 must be at least 1"):
        next(generate(model, [1], 1, top_k=0))


# ---- tokenizers -----------------------------------------------------------------------------------------

CORPUS = ["The cat sat on the mat.", "The dog ate the cat's food.", "Naïve café crème brûlée 😀 costs 5 €.",
          "the the the cat cat mat"] * 20


@pytest.fixture(scope="module")
def bpe_file(tmp_path_factory):
    """A byte-level BPE tokenizer (GPT-2's kind) trained here on a few sentences, saved as tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    run_dir = tmp_path_factory.mktemp("bpe_run")
    tok.save(str(run_dir / "tokenizer.json"))
    return run_dir


def test_a_runs_tokenizer_json_is_used_and_round_trips_text(bpe_file):
    tok = run_tokenizer(bpe_file, vocab=["a", "b"])  # the file wins over the dataset's vocabulary
    assert isinstance(tok, FileTokenizer) and tok.vocab_size == 300
    assert tok.description == "the run's tokenizer.json (BPE, 300 tokens)"
    from tokenizers import Tokenizer

    oracle = Tokenizer.from_file(str(bpe_file / "tokenizer.json"))
    text = "The cat ate crème brûlée 😀."
    ids = tok.encode(text)
    assert ids == oracle.encode(text).ids
    assert tok.decode(ids) == text
    assert len(tok.encode(" the cat")) == 2  # merges learned: one token per word with its leading space
    assert tok.token_strings(tok.encode(" the cat")) == [" the", " cat"]
    # Streaming: the 4 bytes of the emoji are separate tokens; no piece shows half a character.
    prompt = tok.encode("The")
    pieces = list(stream_text(tok, prompt, tok.encode(" cat 😀 café")))
    assert "".join(pieces) == " cat 😀 café" and not any("\ufffd" in p for p in pieces)
    assert "😀" in pieces or any("😀" in p for p in pieces)


def test_a_damaged_tokenizer_json_is_refused(tmp_path):
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "nothing"}}))
    with pytest.raises(DataError, match="cannot be read as a Hugging Face tokenizer"):
        run_tokenizer(tmp_path, vocab=None)


def test_the_chars_vocabulary_tokenizes_typed_text(tmp_path):
    from studio.data import get_info

    vocab = get_info("chars").vocab
    tok = run_tokenizer(tmp_path, vocab)
    assert isinstance(tok, VocabTokenizer)
    ids = tok.encode("def f(x):\n    return x")
    assert ids == [vocab.index(c) for c in "def f(x):\n    return x"]
    assert tok.decode(ids) == "def f(x):\n    return x"
    assert list(stream_text(tok, ids[:3], ids[3:])) == list(" f(x):\n    return x")
    with pytest.raises(DataError, match="'☃' not in the dataset's vocabulary of 10[0-9] tokens; type only these"):
        tok.encode("snow ☃")
    with pytest.raises(DataError, match="has no tokenizer.json .* and its dataset has no vocabulary"):
        run_tokenizer(tmp_path, None)
    assert VocabTokenizer(["ab", "a", "b", "<unk>"]).encode("abba?") == [0, 2, 1, 3]  # longest match, <unk>


def test_a_text_upload_tokenized_with_a_tokenizer_json_is_a_language_model_dataset(bpe_file, tmp_path, monkeypatch):
    from studio.data import get_dataset
    from studio.data.token_upload import upload_tokenized_text
    from studio.data.uploads import uploads_dir

    monkeypatch.setenv("STUDIO_WORKSPACE", str(tmp_path / "ws"))
    text = " ".join(CORPUS)
    tokenizer = (bpe_file / "tokenizer.json").read_bytes()
    info = upload_tokenized_text(text.encode(), "notes.txt", tokenizer=tokenizer, seq_len=8)
    oracle = FileTokenizer(bpe_file / "tokenizer.json")
    ids = oracle.encode(text)
    n = (len(ids) - 1) // 8
    assert (info.task, info.input_shape, info.input_dtype, info.num_classes) == ("language_model", (8,), "int64", 300)
    assert info.vocab[oracle.encode(" the")[0]] == " the"
    data = get_dataset(info.id, seed=0)
    x = torch.cat([data.train.x, data.val.x, data.test.x])
    y = torch.cat([data.train.y, data.val.y, data.test.y])
    assert x.shape == (n, 8)
    windows = {tuple(r) for r in np.asarray(ids[: n * 8]).reshape(n, 8).tolist()}
    assert {tuple(r) for r in x.tolist()} == windows  # the same windows, split and shuffled
    assert torch.equal(y[:, :-1], x[:, 1:])  # targets are the next token at every position...
    pairs = {(tuple(ids[i * 8:i * 8 + 8]), ids[i * 8 + 8]) for i in range(n)}
    assert all((tuple(a), int(b)) in pairs for a, b in zip(x.tolist(), y[:, -1], strict=True))  # ...the last too
    # A run on this upload finds the upload's tokenizer.json.
    tok = run_tokenizer(tmp_path, info.vocab, dataset_id=info.id)
    assert isinstance(tok, FileTokenizer) and tok.encode(" the cat") == oracle.encode(" the cat")

    before = sorted(p.name for p in uploads_dir().iterdir())
    with pytest.raises(DataError, match="cannot be read as a Hugging Face tokenizer.json"):
        upload_tokenized_text(text.encode(), "notes.txt", tokenizer=b"{not json", seq_len=8)
    with pytest.raises(DataError, match="notes.txt is 3 tokens long: with seq_len=8 that makes 0 sequences"):
        upload_tokenized_text(b"the cat sat", "notes.txt", tokenizer=tokenizer, seq_len=8)
    assert sorted(p.name for p in uploads_dir().iterdir()) == before  # nothing half-made left behind


def test_the_gpt_lm_templates_blocks_generate_and_report_attention_by_path():
    from studio.templates import load_template

    model = compile_graph(load_template("gpt_lm"), seed=0)  # 4 blocks with causal MultiheadAttention, context 64
    prompt = [10, 20, 30]
    ids = list(prompt)
    model.eval()
    with torch.no_grad():
        for _ in range(3):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert tokens(generate(model, prompt, 3, temperature=0)) == ids[3:]
    window, att = attention(model, ids)
    assert window == ids and sorted(att) == [f"h.{i}.attn" for i in range(4)]
    assert att["h.3.attn"].shape == (4, 6, 6)
