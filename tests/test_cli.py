"""The CLI contract of DESIGN.md: check and summary, human and --json."""

from __future__ import annotations

import json
import subprocess
import sys

from studio.__main__ import main
from tests.conftest import chain

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
