"""Templates: each is a valid graph document, fits its default dataset, has a valid training config,
and trains a few steps (mnist and cifar10 from small files generated in their real formats)."""

from __future__ import annotations

import gzip
import io
import json
import math
import tarfile

import numpy as np
import pytest
import torch

from studio.__main__ import main as cli
from studio.analysis import analyze
from studio.compile import capture, compile_graph
from studio.data import apply_dataset, check_graph_fits, get_dataset, get_info, upload_text_csv
from studio.data.types import Split
from studio.errors import GraphError
from studio.graph import load_graph
from studio.templates import CATALOG_PATH, TEMPLATES_DIR, get_template, list_templates, load_template
from studio.training import Task, TrainConfig, Trainer

TEMPLATES = list_templates()
NAMES = [t.name for t in TEMPLATES]
ISSUE_LIST = {"seed_cnn", "seed_cnn_padded", "mlp", "seed_rnn", "lstm_classifier", "transformer_classifier",
              "conv_autoencoder", "lenet5", "resnet_small", "char_transformer_lm", "gru_forecaster", "cnn1d",
              "reverse_transformer"}


# ---- datasets in their real download formats, generated small --------------------------------------------

def _idx(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_mnist(workspace, n_train: int = 60, n_test: int = 20) -> None:
    rng = np.random.default_rng(0)
    folder = workspace / "datasets" / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte.gz": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": np.arange(n_test) % 10,
    }
    for name, arr in files.items():
        (folder / name).write_bytes(gzip.compress(_idx(np.asarray(arr))))


def write_cifar10(workspace, per_batch: int = 8) -> None:
    rng = np.random.default_rng(0)
    folder = workspace / "datasets" / "cifar10"
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / "cifar-10-binary.tar.gz", "w:gz") as tar:
        for member in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
            labels = (np.arange(per_batch) % 10).astype(np.uint8)[:, None]
            records = np.concatenate([labels, rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)], axis=1)
            data = records.tobytes()
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{member}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


SMALL = {"reverse": {"num_samples": 60}, "sine": {"num_samples": 60}, "adding": {"num_samples": 60},
         "shapes": {"num_samples": 60}, "majority": {"num_samples": 60}}


# ---- documents ---------------------------------------------------------------------------------------------

def test_catalog_and_files_match_and_cover_the_issue_list():
    files = {p.stem for p in TEMPLATES_DIR.glob("*.json")} - {"catalog"}
    assert set(NAMES) == files
    assert ISSUE_LIST <= set(NAMES)
    assert NAMES[0] == "seed_cnn_padded"  # the gallery (and a new session) starts from the padded seed CNN
    catalog = json.loads(CATALOG_PATH.read_text())
    assert all(set(entry) <= {"title", "dataset", "dataset_options", "config"} for entry in catalog.values())
    assert all(t.dataset_options == catalog[t.name].get("dataset_options", {}) for t in TEMPLATES)


@pytest.mark.parametrize("name", NAMES)
def test_template_is_a_valid_graph_with_description_dataset_and_config(name):
    t = get_template(name)
    graph = load_template(name)
    assert graph.to_dict() == load_graph(t.path).to_dict()
    assert graph.name == name and t.description == graph.description and len(t.description) > 60
    a = analyze(graph)
    assert a.ok, [str(i) for i in a.issues]
    assert not a.issues  # no warnings either
    cfg = TrainConfig.from_dict(t.config)
    assert cfg.validate() == []
    if t.dataset is not None:
        assert check_graph_fits(graph, a, get_info(t.dataset, options=t.dataset_options)) == []
    else:  # the description says plainly why there is no default dataset
        assert "no default dataset" in t.description


def test_check_cli_accepts_every_template(capsys):
    for t in TEMPLATES:
        assert cli(["check", str(t.path)]) == 0
    assert capsys.readouterr().out.count("is valid") == len(TEMPLATES)


def test_seed_cnns_infer_the_flatten_size_the_articles_hard_code():
    plain, padded = analyze(load_template("seed_cnn")), analyze(load_template("seed_cnn_padded"))
    assert plain.nodes["flatten"].output_shape == (64 * 5 * 5,)
    assert padded.nodes["flatten"].output_shape == (64 * 7 * 7,)
    description = get_template("seed_cnn").description
    assert "64 * 6 * 6" in description and "64 * 7 * 7" in description and "inferred" in description
    # 64 * 6 * 6 holds without padding for inputs of 30 to 33 pixels, as the description says.
    for size, expected in ((29, 5), (30, 6), (33, 6), (34, 7)):
        g = load_template("seed_cnn")
        g.node("input").params["shape"] = [1, size, size]
        assert analyze(g).nodes["flatten"].output_shape == (64 * expected * expected,)


def test_article_numbers_are_kept():
    mlp = analyze(load_template("mlp"))
    assert [mlp.nodes[f"fc{i}"].output_shape[0] for i in range(1, 5)] == [256, 128, 64, 10]
    assert mlp.nodes["flatten"].output_shape == (784,)
    assert get_template("mlp").config == {"optimizer": "adam", "lr": 0.001, "batch_size": 64, "epochs": 5}
    rnn = compile_graph(load_template("seed_rnn"))
    assert (rnn.rnn.input_size, rnn.rnn.hidden_size, rnn.rnn.num_layers, rnn.fc.out_features) == (5, 8, 2, 3)
    gpt = load_template("char_transformer_lm")
    blocks = [n.params for n in gpt.nodes if n.type == "TransformerEncoderLayer"]
    assert len(blocks) == 2 and all(p["causal"] and p["norm_first"] for p in blocks)
    assert analyze(load_template("reverse_transformer")).output_shape == (12, 10)


def test_list_templates_returns_copies_and_unknown_names_are_errors():
    list_templates()[0].config["lr"] = 99
    assert list_templates()[0].config.get("lr") != 99
    get_template("conv_autoencoder").dataset_options["target"] = "label"
    assert get_template("conv_autoencoder").dataset_options == {"image_size": 28, "target": "input"}
    with pytest.raises(GraphError, match=r"unknown template '\.\./etc'; the templates are: seed_cnn_padded"):
        load_template("../etc")


# ---- a few training steps on the default dataset -------------------------------------------------------------

def _train(graph, data, task: str, num_classes, config: dict, steps: int = 2) -> None:
    data.val = Split(*data.val.take(torch.arange(min(32, len(data.val)))))  # keep the final evaluation small
    model = compile_graph(graph, seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    cfg = TrainConfig.from_dict({**config, "max_steps": steps, "batch_size": min(config.get("batch_size", 64), 16),
                                 "warmup_steps": 0, "device": "cpu", "probes": False})
    state = Trainer(model, data, cfg, task=Task(task, num_classes=num_classes)).fit()
    assert state.step == steps and state.stop_reason == "completed"
    assert math.isfinite(state.loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("name", [t.name for t in TEMPLATES if t.dataset is not None])
def test_template_trains_on_its_default_dataset(name, _workspace):
    t = get_template(name)
    if t.dataset == "mnist":
        write_mnist(_workspace)
    if t.dataset == "cifar10":
        write_cifar10(_workspace)
    data = get_dataset(t.dataset, seed=0, options={**SMALL.get(t.dataset, {}), **t.dataset_options} or None)
    _train(load_template(name), data, data.info.task, data.info.num_classes, t.config)


def test_the_two_templates_without_a_dataset_before_now_have_one():
    autoencoder, classifier = get_template("conv_autoencoder"), get_template("transformer_classifier")
    assert (autoencoder.dataset, autoencoder.dataset_options) == ("shapes", {"image_size": 28, "target": "input"})
    info = get_info(autoencoder.dataset, options=autoencoder.dataset_options)
    assert info.task == "regression" and info.target_shape == info.input_shape == (1, 28, 28)
    assert (classifier.dataset, classifier.dataset_options) == ("majority", {})
    assert "majority" in classifier.description and "reconstruction form" in autoencoder.description


@pytest.fixture
def one_thread():
    """Small models train faster on one thread, and far faster on a machine whose cores are busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_transformer_classifier_learns_majority_and_attends_to_the_markers(_workspace, one_thread):
    """One epoch of the template's own config: the task is learnable and the attention means something."""
    t = get_template("transformer_classifier")
    data = get_dataset("majority", seed=0, options={"num_samples": 1200})
    model = compile_graph(load_template("transformer_classifier"), seed=0)
    x = data.test.x[:64]
    marker = (x < 2).float()  # token ids 0 and 1 are the markers A and B

    def marker_share() -> float:
        """Attention the markers receive in enc1 (mean over heads and queries), over their share of tokens."""
        model.eval()
        with torch.no_grad():
            _, _, attention = capture(model, x, [])
        received = attention["enc1"].mean(dim=(1, 2))  # (B, T)
        return ((received * marker).sum(1).mean() / marker.mean()).item()

    untrained = marker_share()
    cfg = TrainConfig.from_dict({**t.config, "epochs": 1, "warmup_steps": 10, "device": "cpu", "probes": False})
    state = Trainer(model, data, cfg, task=Task("classification", num_classes=2)).fit()
    assert state.last_eval["val_accuracy"] > 0.9
    trained = marker_share()
    # Untrained, attention is spread about evenly (0.85 of the markers' share here); one epoch in, the
    # markers get 1.6 times their share, and about 3 times after a few epochs.
    assert untrained < 1.2 and trained > 1.4 and trained > 1.5 * untrained


def test_transformer_classifier_fits_a_text_classification_upload(_workspace):
    rows = ["text,label"] + [f"{'good fine nice' if i % 2 else 'bad awful poor'} {i},{'pos' if i % 2 else 'neg'}"
                             for i in range(40)]
    info = upload_text_csv("\n".join(rows).encode(), "reviews.csv", text_column="text", label_column="label")
    graph = apply_dataset(load_template("transformer_classifier"), info)
    assert info.input_shape == (128,) and info.input_dtype == "int64" and info.num_classes == 2
    assert len(info.vocab) <= graph.node("embed").params["num_embeddings"]
    assert check_graph_fits(graph, analyze(graph), info) == []


# ---- offline: every template trains out of the box through the CLI ----------------------------------------

def test_every_template_has_an_offline_dataset_that_fits(_workspace):
    """Nothing downloaded: each template's default dataset, or its stand-in, is here and fits the graph."""
    from studio.data.standins import graph_default_dataset, resolve_dataset

    for t in TEMPLATES:
        graph = load_template(t.name)
        dataset_id, options = graph_default_dataset(graph)
        chosen, opts, note = resolve_dataset(dataset_id, options, _workspace)
        info = get_info(chosen, options=opts)
        assert info.source != "download", (t.name, chosen)
        assert check_graph_fits(graph, analyze(graph), info) == [], (t.name, chosen, opts)
        if dataset_id in ("mnist", "cifar10"):
            assert chosen == "digits" and note and "stand-in" in note, (t.name, note)


@pytest.mark.slow
def test_cli_trains_a_template_of_every_dataset_offline_without_data(_workspace, capsys):
    """`python -m studio train TEMPLATE.json` with no --data and nothing downloaded: the template's
    dataset or its stand-in is used, the CLI says which, and one epoch (cut to 2 steps) completes.
    One template per default dataset (every template trains in-process above, and each one's offline
    stand-in is checked to fit it). The first is the real entry point in its own process (the CLI imports
    no torch) with its worker process; the others run the same `main` here, their runs trained here by the
    worker's code (conftest.workers_here): two interpreters fewer each, about 4 s of CPU."""
    import subprocess
    import sys
    from types import SimpleNamespace

    from studio.__main__ import main as cli
    from tests.conftest import workers_here

    def train(t, here: bool):
        # The template's own settings apply (as on the Train page); its warmup is cut with the run.
        args = ["train", str(TEMPLATES_DIR / f"{t.name}.json"), "--epochs", "1", "--max-steps", "2",
                "--batch-size", "8", "--set", "warmup_steps=0"]
        if not here:
            return subprocess.run([sys.executable, "-m", "studio", *args], capture_output=True, text=True,
                                  timeout=600)
        capsys.readouterr()
        with workers_here():
            code = cli(args)
        return SimpleNamespace(returncode=code, stderr=capsys.readouterr().err)

    chosen = list({t.dataset: t for t in reversed(TEMPLATES)}.values())  # the first template of each dataset
    assert len(chosen) >= 9
    done = [train(t, here=i > 0) for i, t in enumerate(chosen)]
    for t, out in zip(chosen, done, strict=True):
        assert out.returncode == 0, (t.name, out.stderr[-2000:])
        line = next(ln for ln in out.stderr.splitlines() if ln.startswith("dataset: "))
        if t.dataset in ("mnist", "cifar10"):
            assert line.startswith("dataset: digits image_size=") and "stand-in" in line, line
        else:
            assert line.startswith(f"dataset: {t.dataset}"), line
