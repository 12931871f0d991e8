"""The run store: schema, batched metric writes, incremental reads, and reconciliation of runs."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time

import pytest

from studio.errors import TrainError
from studio.runs import launcher
from studio.runs.store import SCHEMA_VERSION, MetricWriter, Store

GRAPH = {"format": "studio.graph/1", "name": "tiny", "nodes": [], "edges": []}


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "studio.db")


def make_run(store, run_id="r1", status="queued"):
    store.create_run(run_id, name="tiny on digits", graph=GRAPH, config={"lr": 0.1}, dataset_id="digits",
                     status=status)


def test_schema_pragmas_and_version(store):
    conn = store.connect()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    cols = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
    assert {"id", "name", "status", "created", "started", "ended", "pid", "heartbeat", "graph", "config",
            "dataset_id", "error", "traceback", "best_metric", "best_metric_name", "step", "total_steps"} <= cols


def test_newer_schema_is_refused(tmp_path):
    store = Store(tmp_path / "studio.db")
    store.connect().execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(TrainError, match="schema version 99, newer than this studio's 2"):
        Store(tmp_path / "studio.db")


def test_run_rows_round_trip(store):
    make_run(store)
    run = store.get_run("r1")
    assert (run.status, run.graph, run.config, run.step) == ("queued", GRAPH, {"lr": 0.1}, 0)
    store.set_status("r1", "running")
    store.set_status("r1", "failed", error="boom", traceback="Traceback ...")
    run = store.get_run("r1")
    assert run.status == "failed" and run.error == "boom" and run.ended >= run.started
    assert [r.id for r in store.list_runs("failed")] == ["r1"] and store.list_runs("running") == []
    with pytest.raises(TrainError, match="no run with id 'nope'"):
        store.get_run("nope")
    with pytest.raises(TrainError, match="unknown run status 'finished'"):
        store.set_status("r1", "finished")
    with pytest.raises(TrainError, match=r"cannot update run fields \['created'\]"):
        store.update_run("r1", created=0)


def test_writer_commits_only_complete_steps_in_batches(store):
    make_run(store)
    w = MetricWriter(store, "r1", flush_steps=3, flush_seconds=3600)
    for step in (1, 2):
        w.log(step, 0, "train", {"train_loss": 1.0 / step})
        w.end_step(step)
    assert store.read_metrics("r1") == []  # two steps buffered, batch of three not reached
    w.log(3, 0, "train", {"train_loss": 0.3})
    w.log(3, 0, "val", {"val_loss": 0.5, "val_accuracy": 0.9})
    w.end_step(3)
    w.log(4, 0, "train", {"train_loss": 0.2})  # step 4 not complete yet
    w.flush()
    rows = store.read_metrics("r1")
    assert [(m.step, m.key) for m in rows] == [(1, "train_loss"), (2, "train_loss"), (3, "train_loss"),
                                               (3, "val_loss"), (3, "val_accuracy")]
    assert store.get_run("r1").step == 3
    w.close()  # everything, even the incomplete step
    assert [m.step for m in store.read_metrics("r1", since_step=3)] == [4]


def test_writer_flushes_after_half_a_second(store):
    make_run(store)
    w = MetricWriter(store, "r1", flush_steps=10_000, flush_seconds=0.05)
    w.log(1, 0, "train", {"train_loss": 1.0})
    w.end_step(1)
    time.sleep(0.06)
    w.log(2, 0, "train", {"train_loss": 0.5})
    w.end_step(2)
    assert [m.step for m in store.read_metrics("r1")] == [1, 2]


def test_incremental_reads_filter_and_use_the_index(store):
    make_run(store)
    make_run(store, "r2")
    rows = [(s, 0, "train", k, float(s), 0.0) for s in range(1, 101) for k in ("train_loss", "lr")]
    store.write_metrics("r1", rows)
    store.write_metrics("r2", rows[:10])
    got = store.read_metrics("r1", since_step=95, keys=["train_loss"])
    assert [(m.step, m.value) for m in got] == [(s, float(s)) for s in range(96, 101)]
    assert store.read_metrics("r1", keys=[]) == []
    assert len(store.read_metrics("r1", split="val")) == 0
    assert store.latest_metrics("r1") == {"train_loss": 100.0, "lr": 100.0}
    assert store.metric_keys("r2") == ["lr", "train_loss"]
    plan = " ".join(r[3] for r in store.connect().execute(
        "EXPLAIN QUERY PLAN SELECT step FROM metrics WHERE run_id=? AND step>? AND key IN (?)", ("r1", 95, "lr")))
    assert "metrics_run_step" in plan
    assert store.truncate_metrics("r1", 50) == 100
    assert max(m.step for m in store.read_metrics("r1")) == 50 and store.get_run("r1").step == 50


def test_reader_threads_see_a_writer_thread(store):
    """Streamlit fragments read on other threads: each thread gets its own connection."""
    make_run(store)
    seen: list[int] = []
    errors: list[BaseException] = []

    def reader():
        try:
            last = 0
            deadline = time.time() + 10
            while last < 50 and time.time() < deadline:
                for m in store.read_metrics("r1", since_step=last):
                    seen.append(m.step)
                    last = m.step
        except BaseException as e:  # surfaced by the assertion below
            errors.append(e)

    t = threading.Thread(target=reader)
    t.start()
    w = MetricWriter(store, "r1", flush_steps=5)
    for step in range(1, 51):
        w.log(step, 0, "train", {"train_loss": 0.1})
        w.end_step(step)
    w.close()
    t.join()
    assert not errors and seen == list(range(1, 51))


def test_events_and_delete(store):
    make_run(store)
    store.log_event("r1", "queued")
    store.log_event("r1", "loss is nan", "error")
    assert [(e.level, e.message) for e in store.read_events("r1")] == [("info", "queued"), ("error", "loss is nan")]
    store.write_metrics("r1", [(1, 0, "train", "train_loss", 1.0, 0.0)])
    store.write_metrics("r1", [(2, 0, "train", "train_loss", float("nan"), 0.0),
                               (3, 0, "train", "train_loss", float("inf"), 0.0)])
    values = [m.value for m in store.read_metrics("r1", since_step=1)]
    assert math.isnan(values[0]) and values[1] == math.inf
    store.delete_run("r1")
    assert not store.has_run("r1") and store.read_metrics("r1") == [] and store.read_events("r1") == []


def test_pid_alive_treats_zombies_as_dead():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.time() + 20
    while launcher.pid_alive(proc.pid) and time.time() < deadline:  # exits but stays an unreaped zombie
        time.sleep(0.05)
    assert not launcher.pid_alive(proc.pid)
    proc.wait()
    assert not launcher.pid_alive(proc.pid)


def test_reconcile_marks_vanished_workers_lost(store, monkeypatch):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    make_run(store, "dead", status="running")
    store.update_run("dead", pid=proc.pid, heartbeat=time.time())
    make_run(store, "alive", status="running")
    store.update_run("alive", pid=launcher.os.getpid(), heartbeat=time.time())
    make_run(store, "silent", status="running")
    store.update_run("silent", pid=launcher.os.getpid(), heartbeat=time.time() - 3600)
    make_run(store, "unborn", status="running")
    store.update_run("unborn", pid=None, heartbeat=time.time() - 3600)
    monkeypatch.setenv("STUDIO_MAX_RUNS", "1")  # the live run fills the only slot: nothing is spawned
    make_run(store, "waiting")
    result = launcher.reconcile(store)
    assert sorted(result["lost"]) == ["dead", "silent", "unborn"] and result["started"] == []
    statuses = {r.id: r.status for r in store.list_runs()}
    assert statuses == {"dead": "lost", "alive": "running", "silent": "lost", "unborn": "lost", "waiting": "queued"}
    assert "resume it to continue from the last checkpoint" in store.get_run("dead").error
    assert "no heartbeat for 3600 s" in store.get_run("silent").error


def test_max_concurrent_from_env(monkeypatch):
    monkeypatch.setenv("STUDIO_MAX_RUNS", "3")
    assert launcher.max_concurrent() == 3
    monkeypatch.setenv("STUDIO_MAX_RUNS", "zero")
    with pytest.raises(TrainError, match="STUDIO_MAX_RUNS='zero' is not an integer"):
        launcher.max_concurrent()
    monkeypatch.delenv("STUDIO_MAX_RUNS")
    assert launcher.max_concurrent() >= 1


def test_a_schema_1_store_gains_the_schema_2_columns_and_keeps_its_runs(tmp_path):
    import sqlite3

    from studio.runs import store as store_mod

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    old_schema = store_mod._SCHEMA.split("total_steps INTEGER,")[0] + "total_steps INTEGER\n);" + \
        store_mod._SCHEMA.split("-- JSON object: trial params and other labels (schema 2)\n);")[1]
    conn.executescript(old_schema)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn.execute("INSERT INTO runs (id, name, status, created, graph, config, dataset_id) "
                 "VALUES ('r1', 'old run', 'completed', 1.0, '{}', '{}', 'digits')")
    conn.commit()
    conn.close()
    run = Store(path).get_run("r1")
    assert (run.name, run.status, run.backend, run.workers, run.sweep_id, run.tags) == \
        ("old run", "completed", "local", 1, None, {})
    s = Store(path)
    s.create_run("r2", name="trial", graph={}, config={}, dataset_id="digits", sweep_id="sw1", tags={"lr": 0.1})
    s.set_status("r2", "pruned")
    r2 = s.get_run("r2")
    assert (r2.sweep_id, r2.tags, r2.status) == ("sw1", {"lr": 0.1}, "pruned")
