"""studio.pretrained: torchvision ResNet and Hugging Face GPT-2 checkpoints, written here in their published
layouts, import as runs of status `imported` whose exports reproduce the reference modules; the download
runs against a local HTTP server; bad files are refused with nothing left behind."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from studio.pretrained import PretrainedError, download, import_checkpoint
from studio.pretrained.downloads import Remote
from studio.runs import Store
from tests.pretrained_refs import BasicBlock, Bottleneck, ResNet, random_resnet, save_tiny_gpt2

# Logits compared with the reference module: rtol 1e-4 (the bound); atol 1e-5 for logits near zero,
# where a relative bound means nothing and the two graphs sum in a different order.
TOL = {"rtol": 1e-4, "atol": 1e-5}


def nothing_imported(ws: Path) -> None:
    """No row in the runs table and no run directory left behind."""
    assert Store().list_runs() == []
    assert not (ws / "runs").exists() or not list((ws / "runs").iterdir())


def pt2_logits(run_id: str, x: torch.Tensor) -> torch.Tensor:
    from studio.export import run_exports

    (data,) = run_exports(run_id, "pt2").values()
    return torch.export.load(io.BytesIO(data)).module()(x)


# ---- ResNet ---------------------------------------------------------------------------------------

def test_resnet18_layout_imports_and_its_pt2_export_reproduces_the_reference(tmp_path):
    ref = random_resnet(BasicBlock, (2, 2, 2, 2), width=4, num_classes=10)
    torch.save(ref.state_dict(), tmp_path / "r.pth")
    imp = import_checkpoint(tmp_path / "r.pth", name="tiny18", image_size=32)
    assert imp.architecture == "resnet18" and imp.params == sum(p.numel() for p in ref.parameters())
    run = Store().get_run(imp.run_id)
    assert (run.status, run.name) == ("imported", "tiny18")
    rd = Path(imp.graph_path).parent
    assert (rd / "checkpoints" / "best.pt").is_file() and (rd / "weight_map.txt").is_file()
    assert "layer2.1.conv1.weight -> layer2_1.conv1.weight" in (rd / "weight_map.txt").read_text()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(pt2_logits(imp.run_id, x), ref(x), **TOL)
    from studio.graph import load_graph
    from studio.training.transfer import match_graph

    warm = match_graph(load_graph(imp.graph_path), imp.run_id)  # what --init-from RUN_ID copies
    assert warm.unmatched == [] and len(warm.state) == len(ref.state_dict())


@pytest.mark.parametrize("block, layers, arch", [(BasicBlock, (3, 4, 6, 3), "resnet34"),
                                                 (Bottleneck, (3, 4, 6, 3), "resnet50")])
def test_resnet34_and_50_layouts_reproduce_the_reference(tmp_path, block, layers, arch):
    from studio.training.transfer import load_trained

    ref = random_resnet(block, layers, width=2, num_classes=5)
    torch.save(ref.state_dict(), tmp_path / "r.pth")
    imp = import_checkpoint(tmp_path / "r.pth", image_size=32)
    assert imp.architecture == arch
    _, model = load_trained(imp.run_id)  # what --init-from and Inspect load
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(model(x), ref(x), **TOL)


def test_a_real_size_resnet18_has_torchvisions_parameter_count(tmp_path):
    torch.save(ResNet(BasicBlock, (2, 2, 2, 2)).state_dict(), tmp_path / "resnet18.pth")
    imp = import_checkpoint(tmp_path / "resnet18.pth")
    assert (imp.architecture, imp.params) == ("resnet18", 11_689_512)
    graph = json.loads(Path(imp.graph_path).read_text())
    assert graph["nodes"][0]["params"]["shape"] == [3, 224, 224]


# ---- GPT-2 ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("prefix", [True, False], ids=["transformer-prefix", "no-prefix"])
def test_gpt2_imports_and_its_pt2_export_reproduces_transformers(tmp_path, prefix):
    ref = save_tiny_gpt2(tmp_path / "g", prefix=prefix)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "g" / "model.safetensors"), "pt") as f:
        assert any(k.startswith("transformer.") for k in f.keys()) == prefix
    imp = import_checkpoint(tmp_path / "g")
    assert imp.family == "gpt2" and imp.params == sum(p.numel() for p in ref.parameters()) + 50 * 16  # untied copy
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = ref(ids).logits
    torch.testing.assert_close(pt2_logits(imp.run_id, ids), expected, **TOL)


def test_gpt2_tokenizer_is_built_from_vocab_and_merges(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(["hello world, hello studio"] * 20, trainers.BpeTrainer(
        vocab_size=270, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    save_tiny_gpt2(tmp_path / "g", vocab_size=tok.get_vocab_size())
    tok.model.save(str(tmp_path / "g"))  # vocab.json + merges.txt, as GPT-2's original upload
    imp = import_checkpoint(tmp_path / "g")
    assert imp.tokenizer == "vocab.json + merges.txt"
    shipped = Tokenizer.from_file(str(Path(imp.graph_path).parent / "tokenizer.json"))
    enc = shipped.encode("hello world")
    assert enc.ids == tok.encode("hello world").ids and shipped.decode(enc.ids) == "hello world"


# ---- bad input: refused, nothing left behind ------------------------------------------------------

class _Code:
    def __reduce__(self):
        return (os.getcwd, ())


def test_a_pth_holding_a_pickle_with_code_is_refused(tmp_path, _workspace):
    torch.save({"conv1.weight": torch.zeros(1), "x": _Code()}, tmp_path / "evil.pth")
    with pytest.raises(PretrainedError, match=r"was refused: it holds Python objects other than tensors"):
        import_checkpoint(tmp_path / "evil.pth")
    nothing_imported(_workspace)


def test_a_tensor_of_the_wrong_shape_is_refused_with_its_name(tmp_path, _workspace):
    state = random_resnet(width=4).state_dict()
    state["layer3.1.conv2.weight"] = torch.zeros(16, 16, 1, 1)
    torch.save(state, tmp_path / "r.pth")
    with pytest.raises(PretrainedError, match=r"layer3\.1\.conv2\.weight: has shape \(16, 16, 1, 1\) but .* "
                                              r"expects \(16, 16, 3, 3\) at layer3_1\.conv2\.weight"):
        import_checkpoint(tmp_path / "r.pth", image_size=32)
    state = random_resnet(width=4).state_dict()
    state["head.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "r.pth")
    with pytest.raises(PretrainedError, match=r"1 tensor\(s\) did not map.*\n  head.weight: no layer 'head'"):
        import_checkpoint(tmp_path / "r.pth", image_size=32)
    nothing_imported(_workspace)


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_a_damaged_safetensors_is_refused(tmp_path, _workspace, damage):
    save_tiny_gpt2(tmp_path / "g")
    path = tmp_path / "g" / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\xff" * 16 + data[16:])
    with pytest.raises(PretrainedError, match="cannot be read as safetensors.*download it again"):
        import_checkpoint(tmp_path / "g")
    nothing_imported(_workspace)


@pytest.mark.parametrize("change, message", [
    ({"n_layer": 3}, r"h\.2\.ln_1\.weight: the graph needs it but no tensor of the checkpoint maps onto it"),
    ({"n_embd": 32, "n_head": 2}, r"wte\.weight: has shape \(50, 16\) but .* expects \(50, 32\)"),
    ({"n_layer": 1}, r"block 1 but config.json says n_layer=1"),
    ({"activation_function": "swish"}, r"activation_function='swish'"),
])
def test_a_config_that_does_not_match_its_weights_is_refused(tmp_path, _workspace, change, message):
    save_tiny_gpt2(tmp_path / "g")
    cfg_path = tmp_path / "g" / "config.json"
    cfg_path.write_text(json.dumps({**json.loads(cfg_path.read_text()), **change}))
    with pytest.raises(PretrainedError, match=message):
        import_checkpoint(tmp_path / "g")
    nothing_imported(_workspace)


# ---- download against a local server --------------------------------------------------------------

class _Files(SimpleHTTPRequestHandler):
    """Serves `files` {name: bytes} with Range support, the Hub's checksum headers, and an optional cut."""

    files: dict = {}
    cut_once: set = set()   # names whose next response stops halfway
    seen: list = []         # (path, Range header)

    def log_message(self, *args):
        pass

    def do_GET(self):
        name = self.path.lstrip("/")
        self.seen.append((name, self.headers.get("Range")))
        data = self.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        if name.endswith(".safetensors"):
            self.send_header("X-Linked-Etag", f'"{hashlib.sha256(data).hexdigest()}"')
        else:
            blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's object id of the file
            self.send_header("ETag", f'"{blob}"')
        self.end_headers()
        if name in self.cut_once:
            self.cut_once.discard(name)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    handler = type("Files", (_Files,), {"files": {}, "cut_once": set(), "seen": []})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_gpt2_download_checks_the_hubs_checksums_shows_progress_and_imports(tmp_path, server, monkeypatch):
    handler, url = server
    save_tiny_gpt2(tmp_path / "g")
    from tokenizers import Tokenizer, models

    Tokenizer(models.BPE()).save(str(tmp_path / "g" / "tokenizer.json"))
    handler.files.update({n: (tmp_path / "g" / n).read_bytes()
                          for n in ("config.json", "model.safetensors", "tokenizer.json")})
    seen = []
    monkeypatch.setenv("STUDIO_PRETRAINED_URL", url)
    imp = download("gpt2", progress=lambda done, total, name: seen.append((name, done, total)))
    assert imp.family == "gpt2" and imp.tokenizer == "tokenizer.json"
    size = len(handler.files["model.safetensors"])
    assert ("model.safetensors", size, size) in seen and ("model.safetensors", 0, size) in seen
    assert Store().get_run(imp.run_id).status == "imported"


def test_download_refuses_a_checksum_mismatch_and_removes_the_partial_file(server, _workspace, tmp_path):
    handler, url = server
    buf = io.BytesIO()
    torch.save(random_resnet(width=4).state_dict(), buf)
    handler.files["resnet18-f37072fd.pth"] = buf.getvalue()  # not torchvision's file: its sha256 differs
    with pytest.raises(PretrainedError, match=r"resnet18-f37072fd\.pth failed its checksum \(sha256 .*, expected "
                                              r"f37072fd.*it was deleted"):
        download("resnet18", base_url=url)
    assert not list((_workspace / "downloads" / "pretrained" / "resnet18").iterdir())
    nothing_imported(_workspace)


def test_a_cut_download_resumes_with_a_range_request(server, _workspace):
    handler, url = server
    buf = io.BytesIO()
    torch.save(random_resnet(width=4).state_dict(), buf)
    data = buf.getvalue()
    handler.files["tiny.pth"] = data
    handler.cut_once.add("tiny.pth")
    remote = Remote("tiny.pth", url, sha256=hashlib.sha256(data).hexdigest())
    with pytest.raises(PretrainedError, match="stopped at .* run the same command again to resume it"):
        download("resnet18", files=(remote,), image_size=32)
    part = _workspace / "downloads" / "pretrained" / "resnet18" / "tiny.pth.part"
    have = part.stat().st_size
    assert 0 < have < len(data)
    imp = download("resnet18", files=(remote,), image_size=32)
    assert handler.seen[-1] == ("tiny.pth", f"bytes={have}-")  # asked for the rest only
    assert imp.architecture == "resnet18" and not part.exists()


def test_offline_download_fails_at_once_saying_how_to_import_by_path(_workspace):
    with socket.socket() as s:  # a port nobody listens on: refused at once, like a machine without network
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PretrainedError, match=r"cannot reach 127\.0\.0\.1:\d+ to download the resnet18 files .* "
                                              r"`python -m studio pretrained import resnet18-f37072fd\.pth"):
        download("resnet18", base_url=f"http://127.0.0.1:{port}/")


# ---- CLI ------------------------------------------------------------------------------------------

def test_cli_pretrained_import_json(tmp_path, _workspace):
    save_tiny_gpt2(tmp_path / "g")
    done = subprocess.run([sys.executable, "-m", "studio", "pretrained", "import", str(tmp_path / "g"), "--json",
                           "--name", "tiny gpt"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "STUDIO_WORKSPACE": str(_workspace)})
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert set(out) == {"run_id", "graph", "architecture", "params"}
    assert Path(out["graph"]).is_file() and Store().get_run(out["run_id"]).name == "tiny gpt"


def test_cli_pretrained_import_error_is_one_line(tmp_path, capsys):
    from studio.__main__ import main

    assert main(["pretrained", "import", str(tmp_path / "missing.pth")]) == 1
    assert "missing.pth does not exist; give the path of a .pth file" in capsys.readouterr().err


def test_a_tokenizer_larger_than_the_embedding_is_refused(tmp_path, _workspace):
    from tokenizers import Tokenizer, models

    save_tiny_gpt2(tmp_path / "g", vocab_size=3)
    Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "c": 2, "ab": 3}, merges=[("a", "b")])).save(
        str(tmp_path / "g" / "tokenizer.json"))
    with pytest.raises(PretrainedError, match=r"tokenizer.json has 4 tokens but the model's embedding .* has 3"):
        import_checkpoint(tmp_path / "g")
    nothing_imported(_workspace)


def test_uploaded_files_import_and_are_not_kept(_workspace):
    from studio.pretrained.uploads import import_uploaded

    buf = io.BytesIO()
    torch.save(random_resnet(width=4).state_dict(), buf)
    imp = import_uploaded([("my_resnet.pth", buf.getvalue())], image_size=32)
    assert imp.architecture == "resnet18"
    assert "uploaded files my_resnet.pth" in Store().read_events(imp.run_id)[0].message
    assert not list((_workspace / "uploads" / "pretrained").iterdir())
    with pytest.raises(PretrainedError, match="upload one .pth state dict .* or GPT-2's config.json and "
                                              "model.safetensors together"):
        import_uploaded([("config.json", b"{}")])


def test_home_page_imports_a_checkpoint_by_path(tmp_path):
    from streamlit.testing.v1 import AppTest

    torch.save(random_resnet(width=4).state_dict(), tmp_path / "r.pth")
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)
    at.run()
    at.radio(key="studio.home.pretrained.how").set_value("Path on this machine").run()
    at.text_input(key="studio.home.pretrained.path").input(str(tmp_path / "r.pth")).run()
    at.button(key="studio.home.pretrained.import").click().run()
    assert not at.exception, [e.message for e in at.exception]
    (run,) = Store().list_runs()
    assert f"as run `{run.id}`" in at.success[0].value and run.status == "imported"
    assert at.button(key="studio.home.pretrained.inspect").label == "Open in Inspect"


def test_gpt2_code_and_onnx_exports_reproduce_transformers(tmp_path):
    import importlib.util

    import onnxruntime as ort

    from studio.export import run_exports

    ref = save_tiny_gpt2(tmp_path / "g", n_layer=1)  # one block: the graph's `h` without repeat
    imp = import_checkpoint(tmp_path / "g")
    ids = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = ref(ids).logits
    files = run_exports(imp.run_id, "code")
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (code,) = [n for n in files if n.endswith(".py")]
    spec = importlib.util.spec_from_file_location("exported_gpt2", tmp_path / code)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from studio.codegen import default_class_name

    model = getattr(module, default_class_name(json.loads(Path(imp.graph_path).read_text())["name"]))()
    model.load_state_dict(torch.load(tmp_path / code.replace(".py", ".weights.pt"), weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(ids), expected, **TOL)
    (onnx,) = run_exports(imp.run_id, "onnx").values()
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: ids.numpy()})
    # onnxruntime's kernels sum in another order than PyTorch's: same tolerance as the logits above
    torch.testing.assert_close(torch.from_numpy(out), expected, **TOL)


def test_train_page_says_an_imported_run_has_no_curves(tmp_path):
    from streamlit.testing.v1 import AppTest

    torch.save(random_resnet(width=4).state_dict(), tmp_path / "r.pth")
    import_checkpoint(tmp_path / "r.pth", image_size=32)
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages" / "3_Train.py"), default_timeout=120)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    captions = " ".join(c.value for c in at.caption)
    assert "Imported runs hold pretrained weights and no training" in captions
    assert "Waiting for the first metrics" not in captions


# ---- Inspect on an imported run ------------------------------------------------------------------------

def _inspect(run_id: str):
    from streamlit.testing.v1 import AppTest

    root = Path(__file__).resolve().parents[1]
    at = AppTest.from_file(str(root / "app.py"), default_timeout=90)
    at.session_state["studio.session.run_id"] = run_id
    at.switch_page("pages/4_Inspect.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_an_imported_gpt2_generates_on_inspect_through_its_own_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from studio import inspection as ins
    from studio.inspection.generate import generate

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = __import__("tokenizers").decoders.ByteLevel()
    tok.train_from_iterator(["hello world, hello studio"] * 20, trainers.BpeTrainer(
        vocab_size=270, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    save_tiny_gpt2(tmp_path / "g", vocab_size=tok.get_vocab_size())
    tok.save(str(tmp_path / "g" / "tokenizer.json"))
    imp = import_checkpoint(tmp_path / "g")
    at = _inspect(imp.run_id)
    assert at.radio(key="studio.inspect.view").options == ["Generate", "Why this prediction"]  # an imported GPT-2
    g = "studio.inspect.gen."
    at.text_area(key=g + "prompt").set_value("hello")
    at.slider(key=g + "temperature").set_value(0.0)
    at.number_input(key=g + "max_new").set_value(4)
    at.button(key=g + "go").click().run()
    assert not at.exception, [e.message for e in at.exception]
    ids = tok.encode("hello").ids
    new = [s.token_id for s in generate(ins.load_model(ins.load_run(imp.run_id), "best"), ids, 4, temperature=0)]
    shown = " ".join(m.value for m in at.markdown)
    assert __import__("html").escape(tok.decode(ids + new)[len("hello"):]) in shown

    # The Data page tokenizes a text upload with this run's tokenizer (to fine-tune it on the text).
    from components.data import data_view
    from tests.test_data_page import open_data_page

    assert list(data_view.tokenizer_runs()) == [imp.run_id]
    text = ("hello world, hello studio. " * 40).encode()
    up = data_view.text_upload(imp.run_id)(text, "notes.txt", seq_len=8)
    assert up.task == "language_model" and up.num_classes == tok.get_vocab_size()
    assert data_view.text_upload(None)(text, "notes.txt", seq_len=8).num_classes < 30  # by characters
    page = open_data_page(Path(os.environ["STUDIO_WORKSPACE"]))
    page.radio(key="studio.data.upload_kind").set_value("Text (.txt)").run()
    options = page.selectbox(key="studio.data.tokens").options
    assert len(options) == 2 and options[1].startswith("the tokenizer of run ") and imp.run_id in options[1]


def test_an_imported_resnet_offers_live_inference_on_inspect(tmp_path):
    torch.save(random_resnet(width=4).state_dict(), tmp_path / "r.pth")
    imp = import_checkpoint(tmp_path / "r.pth", image_size=32)
    at = _inspect(imp.run_id)
    assert at.radio(key="studio.inspect.view").options == ["Live inference", "Why this prediction"]
    assert at.radio(key="studio.inspect.inf.source").options == ["uploaded image", "drawn image"]  # no samples
