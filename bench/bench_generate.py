"""Text generation (studio.inspection.generate): what the library costs over a bare nanoGPT loop.

The gpt_lm template (4 blocks, 128 wide, context 64, 103 tokens; random weights) generates 64 tokens after an
8-token prompt, each step a forward over the window so far (no key/value cache, in both). Variants, run
interleaved, 9 rounds after a warm-up, medians, one thread:
  bare      a hand loop: argmax of model(ids[-64:])[-1], appended (nanoGPT's generate with greedy decoding)
  greedy    generate(temperature=0): the same tokens, plus each step's probabilities and top-5
  sampled   generate(temperature=0.8, top_k=40, seed=0)
Goal (issue 25): generate's greedy path within 1.15x of the bare loop (the work is the model's forwards).

    python -m bench generate
"""

from __future__ import annotations

import torch

from bench.common import interleaved, report

NEW, PROMPT = 64, 8


def main() -> None:
    from studio.compile import compile_graph
    from studio.inspection.generate import generate
    from studio.templates import load_template

    torch.set_num_threads(1)
    model = compile_graph(load_template("gpt_lm"), seed=0).eval()
    prompt = torch.randint(0, 103, (PROMPT,), generator=torch.Generator().manual_seed(0)).tolist()

    def bare():
        ids = list(prompt)
        with torch.no_grad():
            for _ in range(NEW):
                ids.append(int(model(torch.tensor([ids[-64:]]))[0, -1].argmax()))
        return ids

    def greedy():
        return [s.token_id for s in generate(model, prompt, NEW, temperature=0)]

    def sampled():
        return [s.token_id for s in generate(model, prompt, NEW, temperature=0.8, top_k=40, seed=0)]

    assert bare()[PROMPT:] == greedy()  # the same work: the same tokens
    t = interleaved({"bare": bare, "greedy": greedy, "sampled": sampled}, reps=9)
    for name, seconds in t.items():
        print(f"      {name:8s} {seconds * 1000:8.1f} ms for {NEW} tokens  ({NEW / seconds:6.0f} tokens/s)")
    ratio = t["greedy"] / t["bare"]
    report("generate greedy / bare loop", ratio, "<= 1.15", ratio <= 1.15, "x")
    report("generate sampled / bare loop", t["sampled"] / t["bare"], "(shown)", True, "x")


if __name__ == "__main__":
    main()
