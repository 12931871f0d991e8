"""The pages' side of long histories: each session keeps one bounded `MetricHistory` per run shown
(at most the drawn points, never the whole history), and a step range to zoom into.

    >>> histories = update_histories("studio.compare.histories", picked, records, store, 0.6, None)  # doctest: +SKIP
"""

from __future__ import annotations

import streamlit as st

from studio.runs.history import MetricHistory


def update_histories(state_key: str, run_ids: list[str], records: dict, store, smoothing: float,
                     zoom: tuple[int, int] | None) -> dict[str, MetricHistory]:
    """The session's views of `run_ids`, brought up to date (only what changed is read). A view whose
    run restarted (resumed: steps after its checkpoint are rewritten) is read again."""
    cache = st.session_state.setdefault(state_key, {})
    for run_id in list(cache):
        if run_id not in records:
            del cache[run_id]
    for run_id in run_ids:
        history = cache.get(run_id)
        if history is None or history.started != records[run_id].started:
            history = cache[run_id] = MetricHistory(run_id, started=records[run_id].started)
        history.zoom(zoom)
        history.update(store, smoothing)
    return {r: cache[r] for r in run_ids}


def zoom_control(key: str, last_step: int, *, container=st) -> tuple[int, int] | None:
    """A step-range slider; the whole range means "follow the whole run" (None). A narrower range is
    read at full detail (every logged point) once its rows fit on the chart."""
    if last_step < 2:
        return None
    lo, hi = container.slider("Steps shown", 0, int(last_step), (0, int(last_step)), key=key,
                              help="Narrow the range to zoom in: the charts re-read it from the run store, at full "
                                   "detail once the range holds at most 1,000 logged points.")
    return None if (lo, hi) == (0, int(last_step)) else (int(lo), int(hi))
