"""The Inspect page's Generate view for a language-model run: a prompt, temperature, top-k, max new tokens and
a seed; the output streamed token by token (studio.inspection.generate); each token's probability and the
runners-up; and the attention of the last forward over prompt + generated tokens, labelled with the real
token strings of the run's tokenizer (its tokenizer.json, or the dataset's characters).

The last generation is kept in session state (per run), so picking a layer or head redraws the heatmap
without generating again.
"""

from __future__ import annotations

import html

import pandas as pd
import streamlit as st

from components import clicks
from components.figures import inspect_charts as ic
from components.inspect.inspect_probes import causal_flags
from components.text import st_escape
from studio import inspection as ins
from studio.graph_paths import flat_graph
from studio.inspection.generate import generate
from studio.inspection.tokenize import TOKENIZER_FILE
from studio.training.gate import hold_point

K = "studio.inspect.gen."
RESULT = K + "result"  # the last generation: {"run", "which", "prompt_ids", "new_ids", "steps"}
MAX_NEW = 512
DEFAULT_PROMPT = "The "
TEXT_KEY = "studio-inspect-generated-text"


def offered(run: ins.RunFiles, info) -> str | None:
    """None when the run is a language model (its dataset's task, or a tokenizer.json of its own), else why not."""
    if info.task == "language_model" or (run.directory / TOKENIZER_FILE).exists():
        return None
    return (f"Text generation is for language-model runs (a dataset of task language_model such as `chars`, or an "
            f"imported GPT-2); this run's dataset `{run.dataset_id}` is a {info.task} task.")


def generated_html(prompt: str, new: str) -> str:
    """The prompt (grey) and the generated text (bold), as literal text with its spaces and line breaks."""
    return ('<div style="white-space: pre-wrap; font-family: monospace; font-size: 0.9rem; padding: 0.6rem; '
            'border-radius: 0.4rem; border: 1px solid rgba(128,128,128,0.35)">'
            f'<span style="color: #8a8a8a">{html.escape(prompt)}</span><b>{html.escape(new)}</b></div>')


def _text_box():
    """The output's place on the page (its container's class, st-key-..., is what the browser test reads)."""
    return st.container(key=TEXT_KEY).empty()


def _tokenizer(run: ins.RunFiles, info):
    return ins.run_tokenizer(run.directory, info.vocab, dataset_id=run.dataset_id)


@st.cache_data(max_entries=4, show_spinner="Computing the attention...")
def _attention(_model, run_dir: str, which: str, mtime: float, ids: tuple[int, ...]):
    return ins.attention(_model, list(ids))


def render_generate(run: ins.RunFiles, info) -> None:
    why_not = offered(run, info)
    if why_not:
        st.info(why_not)
        return
    # Imported here: inspect_results loads the drawing canvas component, which only a running app can declare,
    # and this module's pure helpers (offered, generated_html) are imported by tests.
    from components.inspect.inspect_results import cached_model, checkpoint_choice

    which = checkpoint_choice(run, K + "ckpt")
    if which is None:
        return
    model = cached_model(run, which)
    context = ins.check_language_model(model)
    tok = _tokenizer(run, info)
    st.caption(f"Tokenizer: {st_escape(tok.description)} · context {context} tokens: the "
               "oldest tokens drop off past it · each token is drawn from the last position's logits.")
    prompt = st.text_area("Prompt", value=DEFAULT_PROMPT, key=K + "prompt", height=90)
    c = st.columns(4)
    temperature = c[0].slider("Temperature", 0.0, 2.0, 0.8, 0.05, key=K + "temperature",
                              help="0 always takes the most probable token (greedy); higher values flatten the "
                                   "distribution (more surprising text)")
    top_k = c[1].number_input("Top-k", 0, tok.vocab_size, min(40, tok.vocab_size), key=K + "top_k",
                              help="sample only among the k most probable tokens; 0: among all of them")
    max_new = c[2].number_input("Max new tokens", 0, MAX_NEW, 60, key=K + "max_new",
                                help="0 generates nothing: the attention of the prompt alone")
    seed = c[3].number_input("Seed", 0, 2**31 - 1, 0, key=K + "seed", help="the same seed gives the same text")
    if clicks.button(st.button, "Generate", key=K + "go", type="primary"):
        _run_generation(run, which, model, tok, prompt, temperature, int(top_k) or None, int(max_new), int(seed))
    else:
        result = st.session_state.get(RESULT)
        if result and result["run"] == run.run_id:
            _text_box().markdown(generated_html(*_texts(tok, result["prompt_ids"], result["new_ids"])),
                                 unsafe_allow_html=True)
            st.caption(result["settings"])
    result = st.session_state.get(RESULT)
    if result and result["run"] == run.run_id and result["which"] == which:
        _show_steps(tok, result)
        _show_attention(run, which, model, tok, result)


def _run_generation(run, which, model, tok, prompt, temperature, top_k, max_new, seed) -> None:
    prompt_ids = tok.encode(prompt)  # a DataError naming unknown characters: the page shows it
    new_ids, steps = [], []

    def tokens():
        for step in generate(model, prompt_ids, max_new, temperature=temperature, top_k=top_k, seed=seed):
            new_ids.append(step.token_id)
            steps.append(step)
            yield step.token_id

    st.session_state.pop(RESULT, None)
    box = _text_box()
    prompt_text, text = tok.decode(prompt_ids), ""
    box.markdown(generated_html(prompt_text, ""), unsafe_allow_html=True)
    for piece in ins.stream_text(tok, prompt_ids, tokens()):  # the placeholder grows by one token at a time
        text += piece
        box.markdown(generated_html(prompt_text, text), unsafe_allow_html=True)
        hold_point("generate", len(new_ids))  # a test can hold it part way (off unless STUDIO_TEST_GATE is set)
    box.markdown(generated_html(*_texts(tok, prompt_ids, new_ids)), unsafe_allow_html=True)
    settings = (f"{len(new_ids)} new tokens after a prompt of {len(prompt_ids)} · temperature {temperature:g} · "
                f"top-k {top_k or 'off'} · seed {seed}")
    st.session_state[RESULT] = {"run": run.run_id, "which": which, "prompt_ids": prompt_ids, "new_ids": new_ids,
                                "steps": [(s.token_id, s.prob, s.top_ids, s.top_probs) for s in steps],
                                "settings": settings}
    st.caption(settings)


def _texts(tok, prompt_ids: list[int], new_ids: list[int]) -> tuple[str, str]:
    """(prompt text, generated text), the generation decoded after the prompt (a byte-level token can finish a
    character the prompt began)."""
    prompt, whole = tok.decode(prompt_ids), tok.decode(list(prompt_ids) + list(new_ids))
    return prompt, whole[len(prompt):] if whole.startswith(prompt) else tok.decode(new_ids)


def _show_steps(tok, result: dict) -> None:
    if not result["steps"]:
        return
    with st.expander("Each generated token, its probability and the runners-up"):
        rows = [{"token": repr(tok.decode([t])), "probability": p,
                 "most probable": ", ".join(f"{tok.decode([i])!r} {q:.2f}" for i, q in zip(ids, probs, strict=True))}
                for t, p, ids, probs in result["steps"]]
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                     column_config={"probability": st.column_config.NumberColumn(format="%.3f")})


def _show_attention(run, which, model, tok, result: dict) -> None:
    ids = tuple(result["prompt_ids"] + result["new_ids"])
    window, att = _attention(model, str(run.directory), which, run.checkpoint_path(which).stat().st_mtime, ids)
    if not att:
        st.info("This model has no attention layer to show.")
        return
    st.subheader("Attention over the prompt and the generated tokens")
    nodes = [n for n in flat_graph(run.graph).topological_order() if n in att] or list(att)
    c1, c2 = st.columns([2, 3])
    node_id = c1.selectbox("Attention layer", nodes, key=K + "layer")
    a = att[node_id]  # (heads, T, T)
    head = 0
    if a.shape[0] > 1:
        head = c2.radio("Attention head", ["all", *range(a.shape[0])], horizontal=True, key=K + f"head.{node_id}",
                        format_func=lambda h: "all heads" if h == "all" else f"head {h}")
    shown = [t.replace(" ", "\u2423") for t in tok.token_strings(window)]  # spaces as ␣, as BPE's Ġ marks them
    labels = ic.token_labels(range(len(window)), shown)  # "tok (position)" as the other heatmaps
    first_new = len(ids) - len(result["new_ids"]) - (len(ids) - len(window))  # window index of the first new token
    causal = causal_flags(run.graph).get(node_id, False)
    if head == "all":
        st.plotly_chart(ic.attention_heads_figure(a, labels, causal=causal, title=f"{node_id} · all heads"),
                        key=K + "heads_chart")
    else:
        st.plotly_chart(ic.attention_figure(a[int(head)], labels, causal=causal, title=f"{node_id} · head {head}",
                                            height=max(420, 14 * len(window) + 160)), key=K + "chart")
    cropped = len(ids) - len(window)
    st.caption("Rows are queries, columns keys; "
               + (f"positions from {max(first_new, 0)} on are generated tokens. " if result["new_ids"] else "")
               + (f"Only the last {len(window)} tokens (the model's context) are shown; {cropped} earlier ones "
                  "had dropped off." if cropped else ""))
