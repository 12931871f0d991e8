"""The runs table's pure helpers: training time across resumes, ETA from the recent rate, one state button."""

from __future__ import annotations

from dataclasses import replace

from components.train.run_table import progress, starting_phase, state_action
from studio.runs.store import RunRecord, Store
from studio.runs.timing import recent_rate, training_seconds
from studio.runs.timing import train_points as step_times


def _run(**kw) -> RunRecord:
    base = RunRecord(id="r", name="r", status="running", created=0.0, started=1000.0, ended=None, pid=1,
                     heartbeat=None, graph={}, config={}, dataset_id="digits", error=None, traceback=None,
                     best_metric=None, best_metric_name=None, step=0, total_steps=None)
    return replace(base, **kw)


def test_training_time_sums_the_stretches_of_a_resumed_run():
    first = [(s, 100.0 + s * 0.5) for s in range(1, 47)]  # 23 s of training, then stopped at step 46
    second = [(s, 5000.0 + (s - 40) * 0.25) for s in range(40, 217)]  # resumed from the step-40 checkpoint: 44 s
    rows = [(s, 0, "train", "loss", 1.0, w) for s, w in first + second] + [(46, 0, "val", "val_loss", 1.0, 150.0)]
    points = step_times(rows)
    assert abs(training_seconds(points) - (22.5 + 44.0)) < 1e-6
    assert recent_rate(points) == 4.0  # the current stretch's rate, not the whole run's


def test_the_store_keeps_the_training_time_as_rows_arrive_and_counts_old_stores_once(tmp_path):
    """What the runs table shows, read in constant time: equal to the sum over the whole history, with
    rows written in many small batches across a stop, a resume from a checkpoint and a long pause."""
    first = [(s, 100.0 + s * 0.5) for s in range(1, 47)]
    second = [(s, 5000.0 + (s - 40) * 0.25) for s in range(41, 217)]
    rows = [(s, 0, "train", k, 1.0, w) for s, w in first + second for k in ("train_loss", "lr")]
    rows += [(46, 0, "val", "val_loss", 1.0, 150.0)]
    store = Store(tmp_path / "studio.db")
    store.create_run("r", name="r", graph={}, config={}, dataset_id="digits")
    assert store.training_time("r") == (None, [])
    by_step = sorted(rows, key=lambda r: (r[5], r[0]))
    resumed_at = next(i for i, r in enumerate(by_step) if r[5] >= 5000.0)
    for i in range(0, resumed_at, 7):
        store.write_metrics("r", by_step[i:min(i + 7, resumed_at)])
    store.truncate_metrics("r", 40)  # the resume from the step-40 checkpoint drops steps 41..46
    for i in range(resumed_at, len(by_step), 5):
        store.write_metrics("r", by_step[i:i + 5])
    seconds, recent = store.training_time("r")
    assert abs(seconds - (22.5 + 43.75)) < 1e-9  # the dropped steps' time was still spent training
    assert recent_rate(recent) == 4.0 and recent[-1] == (216, second[-1][1])
    conn = store.connect()  # a store from before the table: counted once from its raw rows when opened
    with store.transaction():
        conn.execute("DROP TABLE run_timing")
        conn.execute("DELETE FROM meta WHERE key='run_timing'")
    store.close()
    kept = step_times(list(Store(tmp_path / "studio.db").metric_rows("r")))
    assert Store(tmp_path / "studio.db").training_time("r")[0] == training_seconds(kept)


def test_eta_comes_from_the_recent_rate():
    points = [(s, 100.0 + s * 0.5) for s in range(1, 101)]  # 2 steps/s
    run = _run(step=100, total_steps=300, started=0.0)  # a start long ago would give a much longer ETA
    assert progress(run, now=1000.0, points=points)[1] == "step 100 / 300 · ETA 1 min 40 s"


def test_a_row_offers_stop_or_resume_never_both():
    assert state_action(_run(status="running")) == "stop"
    assert state_action(_run(status="stopped", step=40)) == "resume"
    assert state_action(_run(status="failed", step=0, error="mnist could not be downloaded")) is None
    assert state_action(_run(status="completed", step=10)) is None


def test_a_run_before_its_first_step_says_what_it_is_doing(tmp_path, monkeypatch):
    """A Ray run shows "starting" for tens of seconds: the row says the phase, from the run's newest event."""
    monkeypatch.setenv("STUDIO_WORKSPACE", str(tmp_path))
    store = Store(tmp_path / "studio.db")
    store.create_run("r", name="r", graph={}, config={}, dataset_id="digits")
    run = _run(status="running")  # Ray runs are running from their launch, with no total yet
    assert starting_phase(run) is None  # no event yet
    store.log_event("r", "queued")
    store.log_event("r", "connected to Ray at 'auto' (2 CPUs); 2 workers")
    phase = starting_phase(run)
    assert phase == "connected to Ray at 'auto' (2 CPUs); 2 workers"
    assert progress(run, phase=phase) == (0.0, "starting · connected to Ray at 'auto' (2 CPUs); 2 workers")
    assert starting_phase(_run(status="running", total_steps=400, step=3)) is None  # stepping: the bar says it
    assert progress(_run(status="completed", step=50), phase="x") == (0.0, "step 50")


def _message_then_a_page_rerun():
    import streamlit as st

    from components.train import run_table

    if "told" not in st.session_state:
        st.session_state["told"] = True
        run_table.tell("success", "Stop requested for iris smoke")
    run_table.render_message()
    if not st.session_state.get("reran"):  # what the live view does when a run ended during this page run
        st.session_state["reran"] = True
        st.rerun()
    run_table.message_seen()


def test_an_action_message_survives_a_rerun_of_the_whole_page_and_then_shows_once(tmp_path, monkeypatch):
    """Stop on a run that ends at that moment: the live view reran the page after the message was drawn,
    and the message was gone (tests/test_train_page.py failed on it once)."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("STUDIO_WORKSPACE", str(tmp_path))
    at = AppTest.from_function(_message_then_a_page_rerun, default_timeout=60)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert [s.value for s in at.success] == ["Stop requested for iris smoke"]
    at.run()
    assert [s.value for s in at.success] == []  # shown once
