"""The run store failing after it was opened: a "disk I/O error" or "database or disk is full" on a
read inside a page or a live fragment, on a write (rename, stop, resume), on a launch, or a file
damaged mid-use. Pages show the store's message and keep the rest of the page; the CLI prints it
and exits 1 with no traceback; a launch leaves no half-made run folder; busy/locked still retries.

Faults are injected under the store's own code: every SQLite connection in the process is opened
with a factory whose statements fail (like a dying disk) while `Disk.failure` is set and the
statement matches `Disk.matching`; the store sees sqlite3.OperationalError exactly as SQLite raises it.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from studio.__main__ import main
from studio.errors import StorageError
from studio.runs import Store, start_run
from studio.runs.rundir import RunDir
from tests.reliability.helpers import mlp_doc

ROOT = Path(__file__).resolve().parents[2]
GRAPH = mlp_doc([4], 8, 3, name="failing")
IO_ERROR, FULL = "disk I/O error", "database or disk is full"


class Disk:
    failure: str | None = None  # the SQLite message statements fail with, while set
    matching: str = ""  # only statements containing this text fail ("" = every statement)

    @classmethod
    def check(cls, sql: str) -> None:
        if cls.failure and cls.matching in sql:
            raise sqlite3.OperationalError(cls.failure)


class FailingCursor(sqlite3.Cursor):
    def execute(self, sql, parameters=()):
        Disk.check(sql)
        return super().execute(sql, parameters)

    def executemany(self, sql, rows):
        Disk.check(sql)
        return super().executemany(sql, rows)


class FailingConnection(sqlite3.Connection):
    def cursor(self, factory=FailingCursor):
        return super().cursor(factory)

    def execute(self, sql, parameters=()):
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql, rows):
        return self.cursor().executemany(sql, rows)


@pytest.fixture
def disk(monkeypatch):
    """Every connection opened from now on can fail; arm it with `disk(message, matching)`."""
    monkeypatch.setattr(sqlite3, "connect", functools.partial(sqlite3.connect, factory=FailingConnection))

    def arm(failure: str | None, matching: str = "") -> None:
        Disk.failure, Disk.matching = failure, matching

    yield arm
    arm(None)


def finished_runs(workspace: Path, n: int = 2) -> list[str]:
    store = Store(workspace / "studio.db")
    ids = []
    for i in range(n):
        run_id = f"r{i}"
        store.create_run(run_id, name=f"run {i}", graph=GRAPH, config={"epochs": 1}, dataset_id="iris",
                         total_steps=20)
        store.set_status(run_id, "running")
        store.write_metrics(run_id, [(s, 0, "train", "train_loss", 1.0 / (s + 1), 1000.0 + s) for s in range(20)]
                           + [(19, 0, "val", "val_loss", 0.5, 1020.0)])
        store.set_status(run_id, "completed")
        RunDir.of(run_id).create(graph_json=json.dumps(GRAPH), config={"epochs": 1},
                                 meta={"run_id": run_id, "dataset_id": "iris", "dataset_options": {}})
        ids.append(run_id)
    store.close()
    return ids


def open_page(workspace: Path, page: str, **state) -> AppTest:
    (workspace / "graphs").mkdir(parents=True, exist_ok=True)
    (workspace / "graphs" / "_autosave.json").write_text(json.dumps(GRAPH))
    (workspace / "graphs" / "_autosave.meta.json").write_text(json.dumps({"dataset_id": "iris"}))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    at.switch_page(page)
    at.run()  # the page opens the store normally; the tests break it afterwards
    assert not at.exception, [e.message for e in at.exception]
    return at


def errors(at: AppTest) -> list[str]:
    return [e.value.replace("\\", "").lower() for e in at.error]


def assert_shown(at: AppTest, what: str) -> None:
    assert not at.exception, [e.message for e in at.exception]
    assert any(what.lower() in e and "cannot read or write the run store" in e for e in errors(at)), errors(at)


# ---- the one mechanism -------------------------------------------------------------------------------

@pytest.mark.parametrize(("failure", "said"), [
    (IO_ERROR, "the disk reported an I/O error (disk I/O error); check the disk"),
    (FULL, "the disk is full (database or disk is full); free some disk space and try again"),
    ("attempt to write a readonly database", "the file system is read-only"),
])
def test_every_read_and_write_after_opening_is_a_storage_error_with_advice(_workspace, disk, failure, said):
    finished_runs(_workspace)
    store = Store()
    disk(failure)
    for call in (store.list_runs, lambda: store.get_run("r0"), lambda: store.read_metrics("r0"),
                 lambda: store.update_run("r0", name="x"),
                 lambda: store.log_event("r0", "hello"), lambda: store.delete_run("r0"),
                 lambda: list(store.metric_rows("r0")), lambda: store.read_metric_table("r0")):
        with pytest.raises(StorageError, match="cannot read or write the run store in .*studio.db: ") as e:
            call()
        assert said in str(e.value) and "runs saved before are unchanged" in str(e.value)
    disk(None)  # the disk recovers: the same store (and thread connection) works again, nothing was lost
    assert [r.id for r in store.list_runs()] == ["r1", "r0"] and len(store.read_metrics("r0")) == 21


def test_a_busy_database_still_raises_sqlites_own_error_for_callers_that_retry(_workspace, disk):
    store = Store()
    disk("database is locked")
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        store.list_runs()


def test_a_failed_commit_leaves_no_transaction_open_on_the_threads_connection(_workspace, disk):
    finished_runs(_workspace, 1)
    store = Store()
    disk(FULL, matching="COMMIT")
    with pytest.raises(StorageError, match="disk is full"):
        store.delete_run("r0")
    disk(None)
    assert store.has_run("r0")  # rolled back, and the next transaction starts cleanly
    store.delete_run("r0")
    assert not store.has_run("r0")


def test_a_store_file_damaged_mid_use_says_how_to_set_it_aside(_workspace):
    finished_runs(_workspace)
    store = Store()
    store.connect().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    with open(store.path, "r+b") as f:  # the pages after the header: the tables' contents
        f.seek(4096)
        f.write(b"\xff" * 4096 * 3)
    with pytest.raises(StorageError, match=r"is damaged and cannot be read \(SQLite says: .*\); move it aside"):
        store.list_runs()


# ---- launch, CLI, worker -----------------------------------------------------------------------------

@pytest.mark.parametrize("matching", ["INSERT INTO runs", "INSERT INTO events", "COMMIT"])
def test_a_launch_whose_store_write_fails_leaves_no_run_folder_and_no_run(_workspace, disk, matching):
    Store()
    disk(IO_ERROR, matching=matching)
    with pytest.raises(StorageError, match="the disk reported an I/O error"):
        start_run(GRAPH, "iris", {"epochs": 1})
    disk(None)
    runs = _workspace / "runs"
    assert not runs.exists() or list(runs.iterdir()) == []
    assert Store().list_runs() == []


@pytest.mark.parametrize(("argv", "matching"), [
    (["runs"], "FROM runs"),
    (["stop", "r0"], "FROM runs"),
    (["resume", "r0"], "UPDATE runs"),
    (["runs", "--json"], ""),
])
def test_cli_commands_print_the_message_and_exit_1_without_a_traceback(_workspace, disk, capsys, argv, matching):
    finished_runs(_workspace, 1)
    Store().update_run("r0", status="stopped")
    disk(FULL, matching=matching)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot ") and "the disk is full" in err and "Traceback" not in err, err


def test_a_worker_heartbeat_survives_a_failing_disk(_workspace, disk):
    from studio.training.worker import Heartbeat

    finished_runs(_workspace, 1)
    store = Store()
    disk(IO_ERROR)
    with Heartbeat(store, "r0", interval=0.01) as beat:
        beat._stop.wait(0.1)
        assert beat._thread.is_alive()  # the next beat tries again; the thread did not die


# ---- pages ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("failure", [IO_ERROR, FULL])
def test_train_page_live_charts_show_the_message_and_the_runs_table_stays(_workspace, disk, failure):
    ids = finished_runs(_workspace)
    at = open_page(_workspace, "pages/3_Train.py", **{"studio.train.picked_runs": [ids[0]]})
    disk(failure, matching="metric")  # the histories' reads fail; the runs themselves still read
    at.run()
    assert_shown(at, failure)
    assert any("Launch run" == b.label for b in at.button)  # the form above still renders
    assert any("run 0" in m.value for m in at.markdown)  # the runs table in the fragment too


def test_train_page_whose_runs_cannot_be_listed_keeps_its_form(_workspace, disk):
    finished_runs(_workspace)
    at = open_page(_workspace, "pages/3_Train.py")
    disk(IO_ERROR, matching="FROM runs")
    at.run()
    assert_shown(at, "the disk reported an I/O error")
    assert any("Launch run" == b.label for b in at.button)


def test_train_page_rename_on_a_full_disk_is_a_message(_workspace, disk):
    finished_runs(_workspace, 1)
    at = open_page(_workspace, "pages/3_Train.py")
    at.button(key="studio.train.run.r0.rename").click()
    at.run()
    at.text_input(key="studio.train.rename_text.r0").set_value("new name")
    disk(FULL, matching="UPDATE runs SET name")
    at.button(key="studio.train.run.r0.rename_save").click()
    at.run()
    assert_shown(at, "the disk is full")
    disk(None)
    assert Store().get_run("r0").name == "run 0"


def test_compare_page_shows_the_message_when_histories_fail(_workspace, disk):
    ids = finished_runs(_workspace)
    at = open_page(_workspace, "pages/5_Compare.py", **{"studio.compare.runs": ids})
    disk(IO_ERROR, matching="metric")
    at.run()
    assert_shown(at, "the disk reported an I/O error")
    assert at.multiselect  # the run picker above still renders


def test_compare_metrics_table_shows_the_message_when_its_background_read_fails(_workspace, disk):
    ids = finished_runs(_workspace)
    # Only the final values fail (the raw rows, read on a server thread): armed before the page asks for
    # them, so that the read cannot finish first.
    disk(FULL, matching="FROM metrics WHERE rowid")
    at = open_page(_workspace, "pages/5_Compare.py", **{"studio.compare.runs": ids})
    for _ in range(100):
        at.run()
        if at.error or at.exception:
            break
    assert_shown(at, "the disk is full")
    assert at.get("plotly_chart")  # the curves above were drawn


@pytest.mark.parametrize("page", ["pages/4_Inspect.py", "pages/5_Compare.py", "pages/6_Deploy.py"])
def test_pages_whose_runs_cannot_be_listed_show_the_message(_workspace, disk, page):
    finished_runs(_workspace)
    at = open_page(_workspace, page)
    disk(IO_ERROR)
    at.run()
    assert_shown(at, "the disk reported an I/O error")


def test_inspect_diagnostics_show_the_message_when_metrics_fail(_workspace, disk):
    finished_runs(_workspace, 1)
    at = open_page(_workspace, "pages/4_Inspect.py", **{"studio.inspect.view": "Diagnostics"})
    disk(FULL, matching="FROM metrics")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("the disk is full" in e for e in errors(at)), errors(at)


def test_a_stop_request_on_a_full_disk_is_a_message_on_the_page_and_the_cli(_workspace, monkeypatch, capsys):
    import errno

    finished_runs(_workspace, 1)
    Store().update_run("r0", status="running", pid=os.getpid())  # alive: a stop goes through the stop file

    real = Path.write_text

    def full(self, *args, **kwargs):  # the stop file cannot be created; every other write goes through
        if self == RunDir.of("r0").stop_file:
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    assert main(["stop", "r0"]) == 1
    err = capsys.readouterr().err
    assert "cannot ask the run to stop in" in err and "the disk is full" in err and "Traceback" not in err
    at = open_page(_workspace, "pages/3_Train.py")
    at.button(key="studio.train.run.r0.stop").click()
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("cannot ask the run to stop" in e and "the disk is full" in e for e in errors(at)), errors(at)
    assert not RunDir.of("r0").stop_requested()
