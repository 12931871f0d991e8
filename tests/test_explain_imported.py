"""Explaining imported runs (no studio dataset): a tiny torchvision-layout ResNet and a tiny GPT-2, checked
against their axioms and against the reference PyTorch modules they were imported from:

- integrated gradients over the image the user gave are complete within 2 %, where f is the reference
  model behind ImageNet's normalisation (what Live inference feeds it);
- Grad-CAM and layer attributions reach the imported graph's block paths (`layer1.1`, `layer2_1`);
- typed text goes through the run's own tokenizer.json, padded with `<|endoftext|>`, explained at the
  last typed token: one value per token, complete within 5 %, f the reference GPT-2's logit;
- the 'mean' baseline and a missing sample are refused with messages; the run's files never change;
- `python -m studio explain RUN --input x.npy --json` once as a subprocess; the Inspect page's view with an
  uploaded image (AppTest).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from studio import explain as ex
from studio.pretrained import import_checkpoint
from tests.pretrained_refs import random_resnet, save_tiny_gpt2
from tests.test_explain import _tree_digest

MEAN = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
STD = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)


def _resnet(tmp_path):
    ref = random_resnet(width=4)
    torch.save(ref.state_dict(), tmp_path / "r.pth")
    return ref, import_checkpoint(tmp_path / "r.pth", image_size=32).run_id


def _image(seed=1) -> torch.Tensor:
    return torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_an_imported_resnet_is_explained_over_the_given_image(tmp_path):
    from PIL import Image

    from studio.inspection import load_run

    ref, run_id = _resnet(tmp_path)
    run = load_run(run_id)
    before = _tree_digest(run.directory)
    x = _image()
    with torch.no_grad():  # the oracle: the reference module behind ImageNet's normalisation
        fx = ref(((x - MEAN) / STD).unsqueeze(0))[0]
        f0 = ref(((torch.zeros_like(x) - MEAN) / STD).unsqueeze(0))[0]
    target = int((fx - f0).abs().argmax())  # random weights: the class the image moves most, far from 0
    e = ex.explain_run(run_id, "integrated-gradients", sample=ex.input_sample(x, "test image"), target=target,
                       settings=ex.Settings(n_steps=128))
    np.testing.assert_array_equal(e.input, x.numpy())  # shown over the image as given, not the normalised one
    assert e.predicted == int(fx.argmax())
    # same process, same CPU, but a different graph summing in another order: 1e-4 relative like test_pretrained
    torch.testing.assert_close(torch.tensor(e.check.difference), (fx - f0)[e.target], rtol=1e-4, atol=1e-5)
    assert abs(e.attributions.sum() - float((fx - f0)[e.target])) <= 0.02 * abs(float((fx - f0)[e.target]))

    with pytest.raises(ex.ExplainError, match="'layer2_1' is a block .* 'layer2_1.relu2'"):
        ex.explain_run(run_id, "grad-cam", sample=ex.input_sample(x, "t"), settings=ex.Settings(layer="layer2_1"))
    cam = ex.explain_run(run_id, "grad-cam", sample=ex.input_sample(x, "test image"),
                         settings=ex.Settings(layer="layer2_1.relu2"))  # the block's output
    assert cam.notes["layer"] == "layer2_1.relu2" and cam.attributions.shape == (3, 32, 32)
    at = ex.explain_run(run_id, "integrated-gradients", sample=ex.input_sample(x, "test image"),
                        settings=ex.Settings(layer="layer1.1.relu2", n_steps=32))
    assert at.notes["layer"] == "layer1.1.relu2" and at.attributions.shape[0] == 4  # layer1.1's 4 channels

    with pytest.raises(ex.ExplainError, match="has no studio dataset.*give --input FILE"):
        ex.explain_run(run_id, "integrated-gradients")
    with pytest.raises(ex.ExplainError, match="'mean' baseline .* no studio dataset .* zeros or blurred"):
        ex.explain_run(run_id, "saliency", sample=ex.input_sample(x, "t"), settings=ex.Settings(baseline="mean"))
    Image.fromarray((x.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).resize((48, 40)).save(tmp_path / "a.png")
    blurred = ex.explain_run(run_id, "integrated-gradients", input_file=tmp_path / "a.png",
                             settings=ex.Settings(baseline="blurred", n_steps=32))
    assert blurred.input.shape == (3, 32, 32) and blurred.check is not None
    assert _tree_digest(run.directory) == before


def _gpt2(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["hello world, hello studio"] * 20, trainers.BpeTrainer(
        vocab_size=270, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    ref = save_tiny_gpt2(tmp_path / "g", vocab_size=tok.get_vocab_size())
    tok.save(str(tmp_path / "g" / "tokenizer.json"))
    return tok, ref, import_checkpoint(tmp_path / "g").run_id


def test_an_imported_gpt2_explains_typed_text_per_token(tmp_path):
    from studio.inspection import load_run

    tok, ref, run_id = _gpt2(tmp_path)
    before = _tree_digest(load_run(run_id).directory)
    e = ex.explain_run(run_id, "integrated-gradients", text="hello world", settings=ex.Settings(n_steps=128))
    ids = tok.encode("hello world").ids
    pad = tok.token_to_id("<|endoftext|>")
    n = len(ids)
    assert list(e.input[:n]) == ids and set(e.input[n:]) == {pad} and e.input.shape == (12,)
    assert e.baseline.tolist() == [pad] * 12 and e.position == n - 1  # the last typed token, not padding
    assert e.attributions.shape == (12,) and e.notes["layer"] == "wte"
    with torch.no_grad():
        fx = ref(torch.tensor(e.input).unsqueeze(0)).logits[0, n - 1]
        f0 = ref(torch.full((1, 12), pad)).logits[0, n - 1]
    # the oracle is transformers' GPT-2 in this process; the graph sums in another order (1e-4, as test_pretrained)
    torch.testing.assert_close(torch.tensor(e.check.difference), (fx - f0)[e.target], rtol=1e-4, atol=1e-5)
    assert abs(e.attributions.sum() - float((fx - f0)[e.target])) <= 0.05 * abs(float((fx - f0)[e.target]))
    assert np.all(e.attributions[n:] == 0)  # a causal model: padding after the position cannot matter

    block = ex.explain_run(run_id, "integrated-gradients", text="hello world",
                           settings=ex.Settings(layer="h.0.ln_2", n_steps=32))
    assert block.notes["layer"] == "h.0.ln_2" and block.attributions.shape == (12,)
    assert _tree_digest(load_run(run_id).directory) == before


def test_cli_explains_an_imported_resnet_on_a_npy_input(tmp_path):
    _, run_id = _resnet(tmp_path)
    x = _image(2)
    np.save(tmp_path / "x.npy", x.unsqueeze(0).numpy())  # a batch of one is accepted too
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-m", "studio", "explain", run_id, "--method", "integrated-gradients",
                          "--input", str(tmp_path / "x.npy"), "--steps", "32", "--json"],
                         capture_output=True, text=True, cwd=root, timeout=300)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert np.asarray(doc["attributions"]).shape == (3, 32, 32) and doc["method"] == "integrated-gradients"
    np.testing.assert_array_equal(np.asarray(doc["input"], dtype=np.float32), x.numpy())
    assert doc["check"]["relative_error"] < 0.1  # 32 steps here; the 2 % bound is checked in-process at 128


def test_why_this_prediction_on_an_imported_resnet_under_apptest(tmp_path):
    from PIL import Image

    from tests.test_inspect_page import K, image_captions
    from tests.test_pretrained import _inspect

    _, run_id = _resnet(tmp_path)
    at = _inspect(run_id)
    assert at.radio(key="studio.inspect.view").options == ["Live inference", "Why this prediction"]
    at.radio(key="studio.inspect.view").set_value("Why this prediction").run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.radio(key=K + "why.source").options == ["uploaded image", "drawn image"]
    png = io.BytesIO()
    Image.fromarray((_image(3).permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(png, format="PNG")
    at.file_uploader(key=K + "why.upload").set_value(("cat.png", png.getvalue(), "image/png")).run()
    assert at.selectbox(key=K + "why.baseline").options == ["zeros", "blurred"]  # no 'mean': no training split
    at.multiselect(key=K + "why.methods").set_value(["integrated-gradients", "grad-cam"]).run()
    at.button(key=K + "why.run").click().run()
    assert not at.exception, [e.message for e in at.exception]
    captions = image_captions(at)
    assert [c.split(" for ")[0] for c in captions] == ["integrated-gradients", "grad-cam"], captions
    assert any(s.value.startswith("Check: sum of attributions") for s in at.success)

    layer = next(s for s in at.selectbox if s.label.startswith("Attribute to"))
    assert "layer2_1.relu2" in layer.options and "layer2_1" not in layer.options  # only layers that run
    layer.set_value("layer2_1.relu2").run()
    at.multiselect(key=K + "why.methods").set_value(["grad-cam"]).run()
    at.button(key=K + "why.run").click().run()
    assert not at.exception, [e.message for e in at.exception]
    captions = image_captions(at)
    assert len(captions) == 1 and captions[0].startswith("grad-cam for ") and captions[0].endswith(
        " at layer2_1.relu2"), captions


def test_why_this_prediction_on_an_imported_gpt2_under_apptest(tmp_path):
    """Typed text through the run's tokenizer, one chip per position, explained at the last typed token; the
    target next token is taken by id (GPT-2 has 50,257)."""
    from tests.test_inspect_page import K
    from tests.test_pretrained import _inspect

    tok, _, run_id = _gpt2(tmp_path)
    at = _inspect(run_id)
    at.radio(key="studio.inspect.view").set_value("Why this prediction").run()
    assert at.radio(key=K + "why.source").options == ["typed text"]
    at.text_input(key=K + "why.text").input("hello world").run()
    n = len(tok.encode("hello world").ids)
    assert at.number_input(key=K + f"why.position.12.{n}").value == n - 1
    target = next(w for w in at.number_input if w.label == "Target token id")  # an id, not a 50,257-entry list
    assert 0 <= target.value < tok.get_vocab_size()
    at.button(key=K + "why.run").click().run()
    assert not at.exception, [e.message for e in at.exception]
    chips = [m.value for m in at.markdown if m.value.startswith('<div style="line-height')]
    assert len(chips) == 1 and chips[0].count("<span") == 12 and "&lt;|endoftext|&gt;" in chips[0]
    assert any(s.value.startswith("Check: sum of attributions") for s in at.success)
