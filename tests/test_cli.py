"""The CLI contract of DESIGN.md: check and summary, human and --json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from studio.__main__ import main
from tests.conftest import chain

ROOT = Path(__file__).resolve().parents[1]

GOOD = chain(("input", "Input", {"shape": [1, 8, 8]}), ("conv1", "Conv2d", {"out_channels": 4}),
             ("flat", "Flatten", None), ("fc", "Linear", {"out_features": 3}))
BAD = chain(("input", "Input", {"shape": [3, 5, 5]}), ("conv3", "Conv2d", {"kernel_size": 7}),
            ("add", "Add", None))


def write(tmp_path, doc, name="g.json"):
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(p)


def test_check_valid_and_invalid_through_the_real_entry_point(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "studio", "check", write(tmp_path, GOOD)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([sys.executable, "-m", "studio", "check", write(tmp_path, BAD, "b.json")],
                         capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stdout.splitlines() == [
        "add: Add takes at least 2 inputs but has 1; connect another branch into it",
        "conv3: kernel_size=7 is larger than its input (5, 5); use kernel_size <= 5 or padding=3",
    ]


def test_check_json_and_malformed_file(tmp_path, capsys):
    assert main(["check", write(tmp_path, BAD), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is False
    assert {(i["node_id"], i["param"]) for i in out["issues"]} == {("add", None), ("conv3", "kernel_size")}
    assert main(["check", write(tmp_path, "{not json", "m.json")]) == 1
    assert capsys.readouterr().out.startswith("graph: the file is not valid JSON at line 1")


def test_summary_json_matches_contract(tmp_path, capsys):
    assert main(["summary", write(tmp_path, GOOD), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"nodes", "total_params", "total_flops"}
    assert [n["id"] for n in out["nodes"]] == ["input", "conv1", "flat", "fc"]
    assert set(out["nodes"][1]) == {"id", "type", "output_shape", "params", "flops"}
    assert out["nodes"][1]["output_shape"] == [4, 6, 6]
    assert out["total_params"] == (4 * 9 + 4) + (144 * 3 + 3)
    assert out["total_flops"] == sum(n["flops"] for n in out["nodes"])


def test_summary_table(tmp_path, capsys):
    assert main(["summary", write(tmp_path, GOOD)]) == 0
    text = capsys.readouterr().out
    assert "conv1  Conv2d   (4, 6, 6)" in text
    assert "total params: 475" in text


# ---- train: launching and following a run without torch ------------------------------------------

MLP = chain(("input", "Input", {"shape": [1, 8, 8]}), ("flat", "Flatten", None),
            ("fc", "Linear", {"out_features": 10}), name="tiny")

# The CLI's own process: train through main(), then report which heavy modules it imported.
IN_CLI = """
import json, sys
from studio.__main__ import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "torch": "torch" in sys.modules, "numpy": "numpy" in sys.modules}), file=sys.stderr)
"""


def test_train_launches_and_follows_a_run_without_importing_torch(tmp_path):
    env = {**os.environ, "STUDIO_WORKSPACE": str(tmp_path / "ws"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", IN_CLI, "train", write(tmp_path, MLP), "--data", "digits",
                           "--epochs", "1", "--batch-size", "256", "--json"],
                          capture_output=True, text=True, env=env, timeout=180)
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report == {"code": 0, "torch": False, "numpy": False}, done.stderr
    summary = json.loads(done.stdout)
    assert summary["status"] == "completed" and summary["step"] == summary["total_steps"] > 0
    assert 0.0 <= summary["val_accuracy"] <= 1.0  # the worker (which does import torch) trained and evaluated


def test_follow_reads_the_store_only_after_a_commit(tmp_path, monkeypatch):
    from studio.runs import Store
    from studio.training import cli as training_cli

    store = Store(tmp_path / "s.db")
    store.create_run("r1", name="r", graph={}, config={}, dataset_id="digits")
    store.update_run("r1", status="running", pid=os.getpid(), heartbeat=time.time())
    reads = []
    real_get_run = Store.get_run

    def counting_get_run(self, run_id):
        reads.append(run_id)
        return real_get_run(self, run_id)

    monkeypatch.setattr(Store, "get_run", counting_get_run)
    monkeypatch.setattr(training_cli, "reconcile", lambda store: None)
    monkeypatch.setattr(training_cli, "RECONCILE_SECONDS", 3600.0)
    other = Store(tmp_path / "s.db")  # another connection, as the worker's would be

    def finish():
        time.sleep(0.3)
        other.set_status("r1", "completed")
        other.close()

    thread = threading.Thread(target=finish)
    thread.start()
    run = training_cli.follow("r1", store)
    thread.join()
    assert run.status == "completed"
    assert len(reads) == 2  # once at the start, once after the worker's commit: no fixed-interval re-reads


def test_graph_ids_reserved_without_torch_cover_every_nn_module_attribute():
    from torch import nn

    from studio.graph import _reserved_ids, node_id_problem

    public = {n for n in dir(nn.Module()) if not n.startswith("_")}
    assert public <= _reserved_ids(), f"add {sorted(public - _reserved_ids())} to graph._NN_MODULE_ATTRS"
    assert "reserved" in node_id_problem("training") and "reserved" in node_id_problem("zero_grad")


def test_dataset_ids_known_without_torch_are_the_registry_ids():
    from studio.data.registry import registered_ids
    from studio.dataset_ids import REGISTERED_IDS

    assert list(REGISTERED_IDS) == registered_ids()
