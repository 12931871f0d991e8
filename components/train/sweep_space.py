"""The sweep's search space as a table a person fills in, with its JSON (the sweep file's "space") in sync.

One row per searched parameter: a training setting (lr, batch_size, optimizer, ...) or a graph param
(NODE_ID.PARAM), how it is searched (a list of choices, a range, a log-scale range, grid values) and
the values as a person writes them ("1e-4, 0.1", "32, 64, 128", "adam, sgd"). The JSON below the
table is the same space: edit either, the other follows. What the values mean is checked when the
sweep starts (`studio.sweeps.parse_sweep` names the row and says what is expected).
"""

from __future__ import annotations

import json

import streamlit as st

from components import widget_keys

KINDS = ("choice", "uniform", "log_uniform", "grid")
KIND_TITLES = {"choice": "one of", "uniform": "range", "log_uniform": "range, log scale", "grid": "grid values"}
_ROWS = "studio.sweep.space_rows"  # {graph name: [{"parameter", "kind", "values"}, ...]}
_JSON_ERROR = "studio.sweep.space_json_error"


def _value_text(v) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def rows_of(space: dict) -> list[dict]:
    """The table's rows for a space document ({"lr": {"log_uniform": [1e-4, 0.1]}, ...})."""
    rows = []
    for name, dist in space.items():
        (kind, values), = dist.items() if isinstance(dist, dict) and len(dist) == 1 else (("choice", dist),)
        values = values if isinstance(values, list) else [values]
        rows.append({"parameter": name, "kind": kind, "values": ", ".join(_value_text(v) for v in values)})
    return rows


def _read_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare word: a choice such as adam or cosine


def space_of(rows: list[dict]) -> dict:
    """The space document of the table's rows (rows without a parameter are left out)."""
    space = {}
    for row in rows:
        name = str(row.get("parameter") or "").strip()
        if not name:
            continue
        kind = row.get("kind") or "choice"
        parts = [p.strip() for p in str(row.get("values") or "").split(",") if p.strip()]
        space[name] = {kind: [_read_value(p) for p in parts]}
    return space


def _on_json(graph_name: str, key: str) -> None:
    try:
        space = json.loads(st.session_state[key])
        if not isinstance(space, dict):
            raise ValueError(f"the space is a JSON object such as {{\"lr\": {{\"log_uniform\": [0.0001, 0.1]}}}}, "
                             f"got {type(space).__name__}")
        rows = rows_of(space)
    except ValueError as e:
        st.session_state[_JSON_ERROR] = f"Not applied: {e}"
        return
    st.session_state.pop(_JSON_ERROR, None)
    st.session_state.setdefault(_ROWS, {})[graph_name] = rows


def render(graph_name: str, default: dict, parameters: list[str]) -> dict:
    """The table and its JSON; returns the space they hold."""
    rows = st.session_state.setdefault(_ROWS, {}).setdefault(graph_name, rows_of(default))
    key = widget_keys.for_value(f"studio.sweep.space_table.{graph_name}", rows)
    edited = st.data_editor(
        rows, key=key, num_rows="dynamic", width="stretch", hide_index=True,
        column_config={
            "parameter": st.column_config.SelectboxColumn(
                "Parameter", options=sorted({*parameters, *(r["parameter"] for r in rows)}), required=True,
                help="A training setting, or NODE_ID.PARAM of the graph"),
            "kind": st.column_config.SelectboxColumn(
                "Searched as", options=list(KINDS), required=True, default="choice",
                help="; ".join(f"{k}: {t}" for k, t in KIND_TITLES.items()) + " (grid values: the grid sampler)"),
            "values": st.column_config.TextColumn(
                "Values", required=True, help="one of / grid: a, b, c · range: low, high (e.g. 0.0001, 0.1)"),
        })
    rows_now = [{"parameter": r.get("parameter"), "kind": r.get("kind"), "values": r.get("values")}
                for r in (edited.to_dict("records") if hasattr(edited, "to_dict") else edited)]
    if rows_now != rows:
        st.session_state[_ROWS][graph_name] = rows_now
    space = space_of(rows_now)
    with st.expander("The space as JSON (advanced: edit it here, the table follows)"):
        text = json.dumps(space)
        json_key = widget_keys.for_value(f"studio.sweep.space_json.{graph_name}", text)
        st.text_area("Search space (JSON)", text, key=json_key, height=100, on_change=_on_json,
                     args=(graph_name, json_key))
        if st.session_state.get(_JSON_ERROR):
            st.error(st.session_state[_JSON_ERROR], icon=":material/error:")
    return space
