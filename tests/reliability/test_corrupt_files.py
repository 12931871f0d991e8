"""Corrupt files: a truncated checkpoint, a damaged studio.db, a torn WAL, a half-written graph file.

Each gives a clear studio error naming the file and the way out, and the rest of the workspace keeps
working: other runs list and open, other saved graphs list and open. Workers are real processes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from components.build.graph_files import saved_graphs
from studio import inspection as ins
from studio.errors import GraphError, StudioError, TrainError
from studio.graph import load_graph, parse_graph, save_graph
from studio.runs import Store, list_runs, resume_run, run_dir, start_run
from studio.training import TrainConfig
from studio.training.callbacks import load_checkpoint
from tests.reliability.helpers import kill_leftover_workers, mlp_doc, store_problems, wait_for

ROOT = Path(__file__).resolve().parents[2]
IRIS_MLP = mlp_doc([4], 16, 3, name="iris-mlp")
CONFIG = TrainConfig(max_steps=120, batch_size=8, lr=3e-3, eval_every=10, checkpoint_every=10, seed=1,
                     probes=False, device="cpu")


def _cut(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


# ---- a truncated checkpoint -------------------------------------------------------------------------

@pytest.fixture()
def two_runs(_workspace):
    """A healthy completed run, and a run SIGKILLed mid-way (lost) whose last.pt is then cut in half."""
    store = Store()
    try:
        healthy = start_run(IRIS_MLP, "iris", CONFIG, name="healthy")
        damaged = start_run(IRIS_MLP, "iris", CONFIG.replace(max_steps=600), name="damaged")
        last = run_dir(damaged) / "checkpoints" / "last.pt"
        run = wait_for(lambda: (r := store.get_run(damaged)).step >= 20 and r.pid and last.exists() and r,
                       "the second run to save a checkpoint")
        os.kill(run.pid, signal.SIGKILL)
        wait_for(lambda: store.get_run(damaged).status == "lost", "the killed run to be marked lost")
        wait_for(lambda: store.get_run(healthy).status == "completed", "the healthy run to complete")
        yield store, healthy, damaged
    finally:
        kill_leftover_workers(store)


def test_a_truncated_checkpoint_fails_the_resume_clearly_and_the_workspace_keeps_working(two_runs):
    store, healthy, damaged = two_runs
    last = run_dir(damaged) / "checkpoints" / "last.pt"
    _cut(last)
    with pytest.raises(TrainError, match=rf"checkpoint '{re.escape(str(last))}' is damaged \(cut short or "
                                         r"overwritten: .*\); delete it, or replace it with the run's other "
                                         r"checkpoint \(best.pt or last.pt\), and resume again"):
        load_checkpoint(last)

    resume_run(damaged, store=store)
    wait_for(lambda: store.get_run(damaged).status not in ("queued", "running"), "the resume to end")
    run = store.get_run(damaged)
    assert run.status == "failed"
    assert run.error.startswith(f"checkpoint '{last}' is damaged (cut short or overwritten")  # no bare torch text
    assert "TrainError" in run.traceback

    # the rest of the workspace: both runs list, the healthy one opens and evaluates
    assert {r.id: r.status for r in list_runs()} == {healthy: "completed", damaged: "failed"}
    files = ins.load_run(healthy)
    model = ins.load_model(files, "best")
    ev = ins.evaluate(model, ins.load_run_dataset(files), "val")
    assert ev.size == 22 and ev.accuracy is not None
    assert len(store.read_metrics(healthy, keys=["train_loss"])) == 120
    # the damaged run opens too; only its cut checkpoint is refused, with the studio's message
    files = ins.load_run(damaged)
    with pytest.raises(TrainError, match=r"last.pt' is damaged"):
        ins.load_model(files, "last")
    assert ins.load_model(files, "best") is not None
    assert store_problems(store.path) == []

    # the way out the message gives: replace last.pt with best.pt and resume: the run completes exactly
    shutil.copyfile(run_dir(damaged) / "checkpoints" / "best.pt", last)
    resume_run(damaged, store=store)
    wait_for(lambda: store.get_run(damaged).status not in ("queued", "running"), "the second resume to end")
    run = store.get_run(damaged)
    assert (run.status, run.step) == ("completed", 600), run.error
    assert [m.step for m in store.read_metrics(damaged, keys=["train_loss"])] == list(range(1, 601))
    assert store_problems(store.path) == []


# ---- a damaged run store -----------------------------------------------------------------------------

def _filled_store(path: Path) -> None:
    """A store with 40 runs and 3,000 metric rows, checkpointed into the main file and closed."""
    store = Store(path)
    for i in range(40):
        store.create_run(f"run{i:02d}", name=f"run {i} " + "x" * 400, graph=IRIS_MLP, config=CONFIG.to_dict(),
                         dataset_id="iris")
    store.write_metrics("run01", [(s, 0, "train", "train_loss", 1.0 / s, 0.0) for s in range(1, 3001)])
    store.connect().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()


def _garble(path: Path, how: str) -> None:
    data = path.read_bytes()
    page = 4096
    if how == "truncated":
        data = data[:len(data) // 2 + 100]
    elif how == "header page":
        data = b"\x00" * 100 + data[100:]
    elif how == "second page":
        data = data[:page] + bytes((b * 7 + 13) % 256 for b in range(page)) + data[2 * page:]
    elif how == "cut to 50 bytes":
        data = data[:50]
    path.write_bytes(data)


@pytest.mark.parametrize("how", ["truncated", "header page", "second page", "cut to 50 bytes"])
def test_a_damaged_studio_db_gives_a_studio_error_naming_the_file_and_the_way_out(_workspace, how):
    path = _workspace / "studio.db"
    _filled_store(path)
    (run_dir("run01")).mkdir(parents=True)
    (run_dir("run01") / "config.json").write_text("{}")
    _garble(path, how)
    for open_it in (lambda: Store(path), lambda: Store(), lambda: list_runs()):
        with pytest.raises(TrainError) as caught:
            open_it()
        message = str(caught.value)
        assert not isinstance(caught.value, sqlite3.Error)
        assert message.startswith(f"the run store '{path}' is damaged and cannot be opened (SQLite says: ")
        assert message.endswith("move it aside (rename it to studio.db.damaged, with its -wal and -shm files if "
                                "any) and a new, empty store is created (the run directories under runs/ keep "
                                "their checkpoints and files)")
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
    # following the message: move it aside, and the workspace works again with a new store
    path.rename(path.with_name("studio.db.damaged"))
    assert list_runs() == []
    assert (run_dir("run01") / "config.json").read_text() == "{}"  # run directories untouched
    assert store_problems(path) == []


def test_a_torn_wal_after_a_crash_keeps_every_committed_row(_workspace, tmp_path):
    """A copy of studio.db + studio.db-wal taken while a writer is open (what a crash leaves), with
    garbage appended to the WAL: SQLite ignores the torn frames; every committed row is there."""
    path = _workspace / "studio.db"
    store = Store(path)
    store.create_run("r", name="r", graph=IRIS_MLP, config=CONFIG.to_dict(), dataset_id="iris")
    store.write_metrics("r", [(s, 0, "train", "train_loss", float(s), 0.0) for s in range(1, 501)])
    assert Path(f"{path}-wal").stat().st_size > 0
    crashed = tmp_path / "crashed"
    crashed.mkdir()
    shutil.copyfile(path, crashed / "studio.db")
    shutil.copyfile(f"{path}-wal", crashed / "studio.db-wal")
    store.close()
    with open(crashed / "studio.db-wal", "ab") as f:
        f.write(bytes(range(256)) * 64)  # a half-written frame
    reopened = Store(crashed / "studio.db")
    assert [m.step for m in reopened.read_metrics("r")] == list(range(1, 501))
    assert reopened.get_run("r").step == 500
    assert store_problems(crashed / "studio.db") == []


# ---- a half-written graph file -------------------------------------------------------------------------

def _graphs(workspace: Path) -> Path:
    folder = workspace / "graphs"
    save_graph(parse_graph(IRIS_MLP), folder / "good.json")
    save_graph(parse_graph(mlp_doc([1, 8, 8], 32, 10, name="digits-mlp")), folder / "digits-mlp.json")
    text = (folder / "good.json").read_text()
    (folder / "half.json").write_text(text[:len(text) // 2])                     # cut mid-document
    (folder / "empty.json").write_bytes(b"")                                      # created, never written
    (folder / "binary.json").write_bytes(b"\x00\xff\xfe" + os.urandom(200))       # garbage
    (folder / ".good.json.x1y2.tmp").write_text(text[:10])                       # a save killed mid-write
    return folder


def test_a_half_written_graph_file_gives_a_graph_error_and_the_others_still_load(_workspace):
    folder = _graphs(_workspace)
    with pytest.raises(GraphError, match=r"the file is not valid JSON at line \d+, column \d+: "):
        load_graph(folder / "half.json")
    with pytest.raises(GraphError, match=r"the file is not valid JSON at line 1, column 1: Expecting value"):
        load_graph(folder / "empty.json")
    with pytest.raises(GraphError, match=r"the file is not valid JSON"):
        load_graph(folder / "binary.json")
    listed = {s.name: s.path for s in saved_graphs()}
    assert set(listed) == {"good", "digits-mlp", "half", "empty", "binary"}  # the temp file is not listed
    opened = {}
    for name, path in listed.items():
        try:
            opened[name] = load_graph(path).name
        except StudioError as e:
            opened[name] = type(e).__name__
    assert opened == {"good": "iris-mlp", "digits-mlp": "digits-mlp", "half": "GraphError", "empty": "GraphError",
                      "binary": "GraphError"}


def test_the_build_page_reports_the_broken_file_and_opens_the_others(_workspace):
    _graphs(_workspace)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/1_Build.py")
    at.run()
    at.session_state["studio.build.tab"] = "Files"
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    before = at.session_state["studio.session.graph"]
    at.button(key="studio.build.open.half").click()
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    errors = [re.sub(r"\\(.)", r"\1", e.value) for e in at.error]
    assert any(e.startswith("Could not open half.json: graph: the file is not valid JSON at line") for e in errors)
    assert at.session_state["studio.session.graph"].to_dict() == before.to_dict()  # unchanged
    at.button(key="studio.build.open.digits-mlp").click()
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.session_state["studio.session.graph"].name == "digits-mlp"
    assert json.loads((_workspace / "graphs" / "good.json").read_text())["name"] == "iris-mlp"


@pytest.mark.parametrize("page", ["pages/4_Inspect.py", "pages/5_Compare.py"])
def test_pages_show_a_damaged_store_as_its_message_not_a_crash(_workspace, page):
    from streamlit.testing.v1 import AppTest

    path = _workspace / "studio.db"
    _filled_store(path)
    _garble(path, "header page")
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / page), default_timeout=60).run()
    assert not at.exception
    assert any("is damaged and cannot be opened" in e.value and "studio.db.damaged" in e.value for e in at.error)
