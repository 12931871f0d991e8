"""The runs table of the Train page: one row per run with its status badge, progress and ETA, best
metric, duration, and the actions stop, resume, rename, delete (asks first) and open in Inspect.

Everything shown comes from the run store, so reopening the page shows every run as it is. The
formatting helpers are pure; `render_runs_table` lays the rows out and performs the actions through
studio.runs.launcher, keeping each action's outcome in session state to show it once.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import streamlit as st

from components import session
from components.text import st_escape
from components.train import tracking_panel
from studio.errors import StudioError
from studio.runs import RESUMABLE_STATUSES, RunRecord, backends, delete_run, rename_run, resume_run, run_dir, stop_run
from studio.runs.timing import recent_rate

INSPECT_PAGE = "pages/4_Inspect.py"
_BADGE_COLORS = {"queued": "gray", "running": "blue", "completed": "green", "stopped": "orange",
                 "failed": "red", "diverged": "red", "lost": "violet", "pruned": "orange", "imported": "primary"}
_MESSAGE = "studio.train.runs_message"
_CONFIRM = "studio.train.confirm_delete"
_RENAMING = "studio.train.renaming"
GO_INSPECT = "studio.train.go_inspect"
# Column widths: run, dataset, progress, best, time, actions (wide enough for a row's buttons on one line).
_WIDTHS = [3, 1.4, 2.6, 2, 1.2, 4]


# ---- formatting (pure) --------------------------------------------------------------------------------

def status_badge(status: str) -> str:
    """Streamlit markdown for a coloured status badge, e.g. ':green-badge[completed]'."""
    return f":{_BADGE_COLORS.get(status, 'gray')}-badge[{status}]"


def format_duration(seconds: float | None) -> str:
    """'42 s', '3 min 05 s', '2 h 07 min'; '–' when unknown."""
    if seconds is None or seconds < 0:
        return "–"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def duration(run: RunRecord, now: float | None = None) -> float | None:
    """Seconds the run has been (or was) running."""
    if run.started is None:
        return None
    end = run.ended if run.ended is not None and not run.active else (now or time.time())
    return max(0.0, end - run.started)


def progress(run: RunRecord, now: float | None = None, points: list[tuple[int, float]] | None = None,
             phase: str | None = None) -> tuple[float, str]:
    """(fraction done, text like 'step 120 / 400 · ETA 12 s') from the store's step counters; with the
    logged `points`, the ETA comes from the recent rate (a resumed run's first seconds do not count).
    Before the first step, `phase` (`starting_phase`) says what the run is doing."""
    total = run.total_steps or 0
    if total <= 0:
        if not run.active:
            return 0.0, f"step {run.step}"
        return 0.0, "starting" + (f" · {phase}" if phase else "")
    fraction = min(1.0, run.step / total)
    text = f"step {run.step:,} / {total:,}"
    if run.status == "running" and 0 < run.step < total:
        rate = recent_rate(points) if points is not None else None
        if rate:
            text += f" · ETA {format_duration((total - run.step) / rate)}"
        elif points is None:
            elapsed = duration(run, now)
            if elapsed:
                text += f" · ETA {format_duration((total - run.step) * elapsed / run.step)}"
    return fraction, text


def starting_phase(run: RunRecord) -> str | None:
    """What a run that has not begun its steps is doing: its newest event (queued, worker started,
    connected to Ray with N workers, rank K started). A Ray run spends tens of seconds there."""
    from components.run_store import open_store

    if not run.active or (run.total_steps or 0) > 0:
        return None
    try:
        events = open_store().read_events(run.id)
    except (StudioError, OSError):
        return None
    return events[-1].message[:160] if events else None


def state_action(run: RunRecord) -> str | None:
    """The one state button a row shows: 'stop' while it runs, 'resume' when it can go on, else None.
    A failed run whose error is in its setup (the dataset or the graph) is not offered a resume."""
    if run.active:
        return "stop"
    if run.status in RESUMABLE_STATUSES and not (run.status == "failed" and run.step == 0):
        return "resume"
    return None


def best_metric_text(run: RunRecord) -> str:
    if run.best_metric is None:
        return "–"
    return f"{run.best_metric_name} {run.best_metric:.4g}"


def sweep_tag_text(run: RunRecord) -> str | None:
    """'sweep <id> · trial 3 · lr=0.01, fc1.out_features=128' for a sweep trial; None for other runs."""
    if not run.sweep_id:
        return None
    params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in run.tags.items() if k != "trial")
    return f"sweep {run.sweep_id} · trial {run.tags.get('trial', '?')}" + (f" · {params}" if params else "")


def metrics_csv(store, run_id: str) -> bytes:
    """Every metric row of a run as CSV: step, epoch, split, key, value, wall_time."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(("step", "epoch", "split", "key", "value", "wall_time"))
    writer.writerows(store.metric_rows(run_id))
    return out.getvalue().encode()


def checkpoint_path(run_id: str, which: str) -> Path:
    """checkpoints/best.pt or checkpoints/last.pt of a run (it may not exist yet)."""
    return run_dir(run_id) / "checkpoints" / f"{which}.pt"


def _timing(run_id: str) -> tuple[float | None, list[tuple[int, float]]]:
    """The run's training time and latest logged steps, read from the store in constant time."""
    from components.run_store import open_store

    try:
        return open_store().training_time(run_id)
    except (StudioError, OSError):
        return None, []


# ---- actions (callbacks) ---------------------------------------------------------------------------

def _act(fn, *args, done: str) -> None:
    try:
        fn(*args)
    except StudioError as e:
        st.session_state[_MESSAGE] = ("error", str(e))
    else:
        st.session_state[_MESSAGE] = ("success", done)


def _stop(run: RunRecord) -> None:
    _act(stop_run, run.id, done=f"Stop requested for {run.name}: it finishes its step and saves a checkpoint.")


def _resume(run: RunRecord) -> None:
    _act(resume_run, run.id, done=f"{run.name} resumes from its last checkpoint.")


def _delete(run: RunRecord) -> None:
    st.session_state.pop(_CONFIRM, None)
    _act(delete_run, run.id, done=f"Deleted {run.name} with its metrics and checkpoints.")


def _rename(run: RunRecord) -> None:
    name = st.session_state.get(f"studio.train.rename_text.{run.id}", "")
    st.session_state.pop(_RENAMING, None)
    _act(rename_run, run.id, name, done=f"Renamed to {name.strip()}.")


def _open_inspect(run: RunRecord) -> None:
    session.set_current_run_id(run.id)
    st.session_state[GO_INSPECT] = True


# ---- layout -----------------------------------------------------------------------------------------

def tell(kind: str, text: str) -> None:
    """A message (`success`, `info`, `error`) shown once at the top of the runs table."""
    st.session_state[_MESSAGE] = (kind, text)


def render_message() -> None:
    """The outcome of the last action, shown until the page has been drawn to its end (message_seen)."""
    message = st.session_state.get(_MESSAGE)
    if message:
        kind, text = message
        getattr(st, kind)(st_escape(text))


def message_seen() -> None:
    """Called where the page ends: the message was shown. A rerun of the whole page that starts before it
    (the live view's, when a run ended during this one, e.g. just after its Stop) draws it again instead of
    dropping it."""
    st.session_state.pop(_MESSAGE, None)


def render_runs_table(runs: list[RunRecord], *, now: float | None = None, limit: int = 25) -> None:
    """One row per run (newest first) with its actions; `limit` rows unless the user asks for all."""
    now = now or time.time()
    if not runs:
        st.caption("No runs yet: launch one with the form above.")
        return
    shown = runs if st.session_state.get("studio.train.show_all_runs") else runs[:limit]
    header = st.columns(_WIDTHS)
    for col, title in zip(header, ("Run", "Dataset", "Progress", "Best", "Time", "Actions"), strict=True):
        col.markdown(f"**{title}**")
    for run in shown:
        _render_row(run, now)
    if len(runs) > limit:
        st.checkbox(f"Show all {len(runs)} runs", key="studio.train.show_all_runs")


def _render_row(run: RunRecord, now: float) -> None:
    cols = st.columns(_WIDTHS, vertical_alignment="center")
    cols[0].markdown(f"{status_badge(run.status)} {st_escape(run.name)}  \n:gray[{run.id}]")
    if run.error and run.status in ("failed", "diverged", "lost"):
        with cols[0].expander("Why it " + ("was lost" if run.status == "lost" else run.status)):  # a compact row
            st.caption(st_escape(run.error))
    if sweep_tag := sweep_tag_text(run):
        cols[0].caption(st_escape(sweep_tag))
    cols[1].markdown(st_escape(run.dataset_id))
    if run.backend != backends.DEFAULT_BACKEND:  # where it trained: "ray · 2 workers"
        cols[1].caption(f"{run.backend} · {run.workers} worker{'s' if run.workers != 1 else ''}")
    trained, points = _timing(run.id)
    fraction, text = progress(run, now, points, starting_phase(run))
    cols[2].progress(fraction, text=text)
    cols[3].markdown(st_escape(best_metric_text(run)))
    cols[4].markdown(format_duration(trained if trained is not None else duration(run, now)),
                     help="Training time, summed over every stop and resume")
    # The run's state action and Inspect keep their words; rename and delete are icons with a tooltip, so
    # that a row's actions stay on one line.
    with cols[5].container(horizontal=True, gap="xsmall", vertical_alignment="center"):
        key = f"studio.train.run.{run.id}"
        action = state_action(run)  # one slot, one button: never Stop and Resume at once
        if action == "stop":
            st.button("Stop", key=f"{key}.stop", on_click=_stop, args=(run,), icon=":material/stop:")
        elif action == "resume":
            st.button("Resume", key=f"{key}.resume", on_click=_resume, args=(run,), icon=":material/play_arrow:")
        st.button("Inspect", key=f"{key}.inspect", on_click=_open_inspect, args=(run,),
                  icon=":material/insights:")
        st.button("", key=f"{key}.rename", on_click=lambda r=run: st.session_state.update({_RENAMING: r.id}),
                  icon=":material/edit:", help="Rename the run")
        st.button("", key=f"{key}.delete", disabled=run.status == "running",
                  help="Delete: stop the run first" if run.status == "running" else "Delete the run (asks first)",
                  on_click=lambda r=run: st.session_state.update({_CONFIRM: r.id}), icon=":material/delete:")
        tracking_panel.export_button(run, key)
    tracking_panel.render_export(run)  # its form and outcome, once the row's export button was pressed
    if st.session_state.get(_RENAMING) == run.id:
        with st.container(horizontal=True, vertical_alignment="bottom"):
            st.text_input("New name", value=run.name, key=f"studio.train.rename_text.{run.id}", max_chars=120)
            st.button("Save name", key=f"{key}.rename_save", on_click=_rename, args=(run,), type="primary")
            st.button("Cancel", key=f"{key}.rename_cancel", on_click=lambda: st.session_state.pop(_RENAMING, None))
    if st.session_state.get(_CONFIRM) == run.id:
        with st.container(horizontal=True, vertical_alignment="center"):
            st.warning(f"Delete {st_escape(run.name)}, its metrics and its checkpoints? This cannot be undone.")
            st.button("Yes, delete", key=f"{key}.delete_yes", on_click=_delete, args=(run,), type="primary")
            st.button("Cancel", key=f"{key}.delete_no", on_click=lambda: st.session_state.pop(_CONFIRM, None))
