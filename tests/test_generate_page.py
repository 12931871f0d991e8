"""The Inspect page's Generate view under AppTest on a tiny character-level language model trained by the real
worker on `chars`: greedy output equals studio.inspection.generate on the same checkpoint, the attention heatmap
is labelled with the prompt's and the generated characters, a character outside the vocabulary is refused
with its name, and a run that is no language model is told so."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from studio import inspection as ins
from studio.inspection.generate import generate
from tests.test_inspect_page import arr, figures

ROOT = Path(__file__).resolve().parents[1]
PAGE = "pages/4_Inspect.py"
K = "studio.inspect."
G = K + "gen."
SEQ_LEN = 16
DEADLINE_S = 600  # a bound on a loaded 2-core machine, not a speed goal


def lm_graph() -> dict:
    """A char_transformer_lm in miniature for chars at 16-character windows (103 characters)."""
    chain = [("input", "Input", {"shape": [SEQ_LEN], "dtype": "int64"}),
             ("embed", "Embedding", {"num_embeddings": 103, "embedding_dim": 32}),
             ("pos", "PositionalEncoding", {"kind": "learned", "max_len": SEQ_LEN}),
             ("block1", "TransformerEncoderLayer", {"nhead": 2, "dim_feedforward": 64, "dropout": 0.0,
                                                    "norm_first": True, "causal": True}),
             ("ln_f", "LayerNorm", None), ("head", "Linear", {"out_features": 103})]
    return {"format": "studio.graph/1", "name": "tiny_char_lm",
            "nodes": [{"id": i, "type": t, **({"params": p} if p else {})} for i, t, p in chain],
            "edges": [{"source": a[0], "target": b[0]} for a, b in zip(chain, chain[1:], strict=False)]}


def make_lm_run(name: str = "char-lm") -> str:
    """Train the tiny LM for 30 steps (no probes) in the current STUDIO_WORKSPACE (the worker's code,
    conftest.train_here); its id."""
    from studio.training import TrainConfig
    from tests.conftest import train_here

    return train_here(lm_graph(), "chars", TrainConfig(max_steps=30, batch_size=32, lr=3e-3, eval_every=15,
                                                         probes=False, seed=0),
                      dataset_options={"seq_len": SEQ_LEN}, name=name)


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    ws = tmp_path_factory.mktemp("generate_page") / "workspace"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STUDIO_WORKSPACE", str(ws))
        yield make_lm_run()


@pytest.fixture(autouse=True)
def _workspace(lm_run):  # the module's workspace (overrides conftest's per-test one)
    return None


def generate_view(run_id: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90)
    at.session_state["studio.session.run_id"] = run_id
    at.switch_page(PAGE)
    at.run()
    at.radio(key=K + "view").set_value("Generate").run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def shown_text(at: AppTest) -> str:
    """The generated-text block's literal text (prompt and generation, HTML entities decoded)."""
    import html
    import re

    blocks = [m.value for m in at.markdown if m.value.startswith('<div style="white-space: pre-wrap')]
    assert len(blocks) == 1, [m.value for m in at.markdown]
    return html.unescape(re.sub(r"<[^>]+>", "", blocks[0]))


def test_greedy_generation_equals_the_library_and_the_heatmap_has_the_real_tokens(lm_run):
    at = generate_view(lm_run)
    at.text_area(key=G + "prompt").set_value("def f")
    at.slider(key=G + "temperature").set_value(0.0)
    at.number_input(key=G + "max_new").set_value(14)
    at.button(key=G + "go").click().run()
    assert not at.exception, [e.message for e in at.exception]

    run = ins.load_run(lm_run)
    vocab = ins.load_run_dataset(run).info.vocab
    prompt_ids = [vocab.index(c) for c in "def f"]
    new = [s.token_id for s in generate(ins.load_model(run, "best"), prompt_ids, 14, temperature=0)]
    expected = "def f" + "".join(vocab[i] for i in new)
    assert shown_text(at) == expected
    assert any("14 new tokens after a prompt of 5" in c.value for c in at.caption)

    # 19 tokens in all, context 16: the heatmap shows the last 16, labelled with their characters.
    at.radio(key=G + "head.block1").set_value(1).run()
    (fig,) = figures(at)
    heat = fig["data"][0]
    window = (prompt_ids + new)[-SEQ_LEN:]
    labels = [f"{vocab[t].replace(' ', '␣')} ({p})".replace("\n", "\\n") for p, t in enumerate(window)]
    assert heat["x"] == labels and heat["y"] == labels
    z = arr(heat["z"])
    assert z.shape == (SEQ_LEN, SEQ_LEN)
    np.testing.assert_allclose(np.nansum(z, axis=1), 1.0, atol=1e-3)  # each query's weights sum to one
    assert np.isnan(z[0, 1:]).all()  # the causal mask drawn grey
    _, att = ins.attention(ins.load_model(run, "best"), prompt_ids + new)
    np.testing.assert_allclose(z[np.tril_indices(SEQ_LEN)], att["block1"][1][np.tril_indices(SEQ_LEN)], atol=1e-6)
    assert "block1 · head 1" in fig["layout"]["title"]["text"]
    assert any("3 earlier ones had dropped off" in c.value for c in at.caption)
    (table,) = at.dataframe  # each generated token with its probability
    assert list(table.value["token"]) == [repr(vocab[i]) for i in new]
    assert ((table.value["probability"] > 0) & (table.value["probability"] <= 1)).all()

    # Another rerun (a different head) keeps the text without generating again.
    at.radio(key=G + "head.block1").set_value("all").run()
    assert shown_text(at) == expected and len(figures(at)[0]["data"]) == 2
    assert any("14 new tokens after a prompt of 5" in c.value for c in at.caption)


def test_sampling_with_a_seed_repeats_and_unknown_characters_are_named(lm_run):
    at = generate_view(lm_run)
    at.text_area(key=G + "prompt").set_value("The ")
    at.slider(key=G + "temperature").set_value(1.0)
    at.number_input(key=G + "max_new").set_value(8)
    at.number_input(key=G + "seed").set_value(3)
    at.button(key=G + "go").click().run()
    first = shown_text(at)
    at.button(key=G + "go").click().run()
    assert shown_text(at) == first and len(first) == len("The ") + 8

    # No new tokens, top-k off: the typed prompt's own attention, on its characters.
    at.number_input(key=G + "max_new").set_value(0)
    at.number_input(key=G + "top_k").set_value(0)
    at.button(key=G + "go").click().run()
    assert shown_text(at) == "The "
    assert any("0 new tokens after a prompt of 4 · temperature 1 · top-k off" in c.value for c in at.caption)
    assert figures(at)[0]["data"][0]["x"] == ["T (0)", "h (1)", "e (2)", "␣ (3)"]

    at.text_area(key=G + "prompt").set_value("snow ☃").run()
    at.button(key=G + "go").click().run()
    assert any("'☃' not in the dataset's vocabulary" in e.value for e in at.error), [e.value for e in at.error]


def test_a_run_that_is_no_language_model_is_told_so(tmp_path):
    from components.inspect.inspect_generate import offered

    run = SimpleNamespace(directory=tmp_path, dataset_id="shapes")
    why = offered(run, SimpleNamespace(task="classification"))
    assert "this run's dataset `shapes` is a classification task" in why
    assert offered(run, SimpleNamespace(task="language_model")) is None
    (tmp_path / "tokenizer.json").write_text(json.dumps({}))  # an imported GPT-2 carries its tokenizer
    assert offered(run, SimpleNamespace(task="sequence")) is None


def test_a_run_holding_a_tokenizer_json_generates_through_it(lm_run):
    """The imported GPT-2 path: a tokenizer.json in the run's folder wins over the dataset's characters (here a
    word-piece BPE of under 103 tokens, so its ids fit the tiny model)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(["the cat sat on the mat", "a dog ate the food"] * 10,
                            trainers.BpeTrainer(vocab_size=60, special_tokens=["[UNK]"], show_progress=False))
    run = ins.load_run(lm_run)
    path = run.directory / "tokenizer.json"
    tok.save(str(path))
    try:
        at = generate_view(lm_run)
        captions = [c.value.replace("\\", "") for c in at.caption]  # markdown escapes removed
        assert any("the run's tokenizer.json (BPE, " in c for c in captions), captions
        at.text_area(key=G + "prompt").set_value("the cat")
        at.slider(key=G + "temperature").set_value(0.0)
        at.number_input(key=G + "max_new").set_value(5)
        at.button(key=G + "go").click().run()
        assert not at.exception, [e.message for e in at.exception]
        prompt_ids = tok.encode("the cat").ids
        new = [s.token_id for s in generate(ins.load_model(run, "best"), prompt_ids, 5, temperature=0)]
        assert all(i < 103 for i in new)  # the model's own vocabulary
        assert shown_text(at) == tok.decode(prompt_ids + new)
        labels = figures(at)[0]["data"][0]["x"]
        expected = [tok.decode([i]).replace(" ", "␣") for i in prompt_ids + new]
        assert [lab.rsplit(" (", 1)[0] for lab in labels] == expected
    finally:
        path.unlink()
