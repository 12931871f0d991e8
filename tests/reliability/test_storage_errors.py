"""Store and disk failures other than a corrupt file: studio.db being a directory, a read-only
store, a full disk (a real SQLite "database or disk is full" from a page cap, and ENOSPC from file
writes), an unknown dataset id. Each gives a clear message on the CLI (no traceback) and in the API,
leaves no half-made run or upload behind, and keeps what was saved before."""

from __future__ import annotations

import errno
import json
import sqlite3

import numpy as np
import pytest

from studio.__main__ import main
from studio.data import get_dataset, list_uploads, upload_text
from studio.data import uploads as uploads_module
from studio.errors import DataError, TrainError
from studio.runs import Store, start_run
from tests.reliability.helpers import mlp_doc

GRAPH = mlp_doc([4], 8, 3, name="store")


def run_dirs(workspace) -> list:
    runs = workspace / "runs"
    return sorted(p.name for p in runs.iterdir()) if runs.exists() else []


def capped_store(monkeypatch, pragma: str) -> None:
    """Every store connection gets `pragma` (a page cap: a full database; query_only: read-only)."""
    real = Store.connect

    def connect(self):
        fresh = getattr(self._local, "conn", None) is None
        conn = real(self)
        if fresh:
            conn.execute(pragma if "query_only" in pragma else pragma.format(
                pages=conn.execute("PRAGMA page_count").fetchone()[0]))
        return conn

    monkeypatch.setattr(Store, "connect", connect)


def test_studio_db_as_a_directory_is_a_clear_error_on_the_api_and_the_cli(_workspace, capsys):
    (_workspace / "studio.db").mkdir(parents=True)
    with pytest.raises(TrainError, match=r"cannot open the run store in .*studio\.db: a directory is in the way"):
        Store()
    assert main(["runs"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot open the run store") and "Traceback" not in err


@pytest.mark.parametrize(("pragma", "message"), [
    ("PRAGMA max_page_count={pages}", r"the disk is full \(database or disk is full\); free some disk space"),
    ("PRAGMA query_only=1", r"the file system is read-only .*make the workspace writable"),
])
def test_a_full_or_read_only_store_refuses_a_new_run_and_leaves_nothing_half_made(_workspace, monkeypatch, capsys,
                                                                                   pragma, message):
    Store()  # the schema exists; every later connection is capped
    capped_store(monkeypatch, pragma)
    long_name = "n" * 200_000  # needs new pages: past the cap
    with pytest.raises(TrainError, match=message):
        start_run(GRAPH, "iris", {"epochs": 1}, name=long_name)
    assert run_dirs(_workspace) == []
    graph = _workspace / "g.json"
    graph.write_text(json.dumps(GRAPH))
    assert main(["train", str(graph), "--data", "iris", "--epochs", "1", "--name", long_name]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "runs saved before are unchanged" in err
    assert run_dirs(_workspace) == []


def test_enospc_while_writing_a_run_folder_removes_it(_workspace, monkeypatch):
    from studio.runs import rundir

    real = rundir.atomic_write_text

    def full(path, text):
        if path.name == "run.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, text)

    monkeypatch.setattr(rundir, "atomic_write_text", full)
    with pytest.raises(TrainError, match=r"cannot create the run in .*runs: the disk is full"):
        start_run(GRAPH, "iris", {"epochs": 1})
    assert run_dirs(_workspace) == [] and Store().list_runs() == []


def test_enospc_during_an_upload_keeps_the_earlier_upload_and_leaves_no_temp_folder(_workspace, monkeypatch):
    before = upload_text(b"hello world, " * 40, "first.txt", seq_len=8)
    x_before = get_dataset(before.id).train.x.clone()

    def full(self, chunk):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(uploads_module.NpyWriter, "write", full)
    with pytest.raises(DataError, match=r"cannot save the upload in .*uploads: the disk is full.*free some disk "
                                        r"space.*datasets uploaded before are unchanged"):
        upload_text(b"second text " * 40, "second.txt", seq_len=8)
    assert [i.id for i in list_uploads()] == [before.id]
    assert not [p for p in (_workspace / "datasets" / "uploads").iterdir() if p.name.startswith(".tmp-")]
    np.testing.assert_array_equal(get_dataset(before.id).train.x, x_before)


def test_a_read_only_uploads_folder_is_a_data_error(_workspace, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(uploads_module.tempfile, "mkdtemp", read_only)
    with pytest.raises(DataError, match=r"the file system is read-only.*STUDIO_WORKSPACE"):
        upload_text(b"hello world, " * 40, "t.txt", seq_len=8)


def test_train_with_an_unknown_dataset_creates_no_run(_workspace, capsys):
    graph = _workspace.parent / "g.json"
    graph.write_text(json.dumps(GRAPH))
    assert main(["train", str(graph), "--data", "irsi"]) == 1
    err = capsys.readouterr().err
    assert "unknown dataset 'irsi'" in err and "Traceback" not in err
    assert run_dirs(_workspace) == [] and Store().list_runs() == []


def test_sqlite_errors_reaching_the_cli_are_explained(_workspace, monkeypatch, capsys):
    def broken(self, *a, **k):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(Store, "list_runs", broken)
    assert main(["runs"]) == 1
    err = capsys.readouterr().err
    assert "the disk reported an I/O error" in err and "Traceback" not in err


def test_a_worker_that_cannot_write_reports_why_instead_of_ending_lost(_workspace, tmp_path):
    from studio.training.worker import RunLog, human_message

    message = human_message(OSError(errno.ENOSPC, "No space left on device", "/w/runs/r/checkpoints/last.pt"), 32)
    assert message.startswith("cannot write the run's files in /w/runs/r/checkpoints/last.pt: the disk is full")
    store = Store()
    store.create_run("r_log", name="n", graph=GRAPH, config={}, dataset_id="iris")
    blocked = tmp_path / "file"
    blocked.write_text("")  # log.txt under a file: every write fails, as on a full disk
    RunLog(blocked / "log.txt", store, "r_log")("a line the disk could not take", "error")  # no OSError
    rows = sqlite3.connect(store.path).execute("SELECT message FROM events WHERE run_id='r_log'").fetchall()
    assert ("a line the disk could not take",) in rows
