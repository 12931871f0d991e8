"""The Train page's "Where it runs" choice: one option per registered backend (`studio.runs.backends`),
and the chosen backend's settings through the one generated form (`components.schema_form`).

It says plainly why a launch is refused: a setting out of range, the backend's software missing, or,
for Ray, a cluster that cannot be reached or a request that does not fit. For Ray it shows the
cluster's CPUs, GPUs and nodes before launch (asked by a short-lived subprocess, so the Streamlit
server never joins a cluster; cached for half a minute). `render()` returns (backend for start_run or
None for this machine, refusal or None).
"""

from __future__ import annotations

import streamlit as st

from components import clicks, schema_form
from components.text import st_escape
from studio.errors import StudioError
from studio.runs.backends import BACKENDS, Backend, start_argument
from studio.runs.ray_backend import ClusterInfo, RaySettings, check_fits, cluster_resources
from studio.schema import Field, SettingError

KEY = "studio.train.backend."
# Ray's widgets keep the keys they had before this form was generated from RaySettings' schema (open
# sessions and tests/test_ray.py hold them); any other backend's are KEY + "<backend>.<field>".
_KEPT_KEYS = {("ray", "address"): "address", ("ray", "workers"): "workers", ("ray", "cpus_per_worker"): "cpus",
              ("ray", "gpus_per_worker"): "gpus", ("ray", "max_failures"): "max_failures",
              ("ray", "storage_path"): "storage"}
CACHE_S = 30


def _key(backend: Backend, f: Field) -> str:
    return KEY + _KEPT_KEYS.get((backend.name, f.name), f"{backend.name}.{f.name}")


@st.cache_data(ttl=CACHE_S, show_spinner="Asking the Ray cluster for its resources...")
def _resources(address: str) -> tuple[dict | None, str | None]:
    """(ClusterInfo fields, None) or (None, why it cannot be reached); errors are cached too."""
    try:
        return vars(cluster_resources(address)), None
    except StudioError as e:
        return None, str(e)


def _ray_cluster(settings: RaySettings) -> str | None:
    """The cluster's resources beside what the run asks for; the refusal when the cluster cannot be
    reached or the request does not fit."""
    cols = st.columns([6, 1])
    if clicks.button(cols[1].button, "Refresh", key=KEY + "refresh", icon=":material/refresh:",
                     help="Ask the cluster again"):
        _resources.clear()
    found, error = _resources(settings.address)
    if error:
        return error
    info = ClusterInfo(**found)
    free = (f" ({info.available_cpus:g} CPUs, {info.available_gpus:g} GPUs free now)"
            if info.available_cpus is not None else "")
    where = ("this machine (Ray starts when the run does)" if settings.address == "local"
             else f"`{st_escape(settings.address)}`")
    cols[0].caption(f"Cluster at {where}: **{info.describe()}**{free}. This run asks for "
                    f"{settings.total('CPU'):g} CPUs and {settings.total('GPU'):g} GPUs.")
    try:
        check_fits(settings, info)
    except StudioError as e:
        return str(e)
    return None


# What a backend shows once its settings pass its checks (by name; a backend without one needs none).
_VIEWS = {"ray": _ray_cluster}


def _widgets(backend: Backend, fields: list[Field]) -> None:
    """One row: text settings wide, numbers narrow."""
    for col, f in zip(st.columns([3 if f.kind == "str" else 1 for f in fields]), fields, strict=True):
        with col:
            schema_form.field_widget(f, _key(backend, f), f.default, state=True, numbers="number")


def render() -> tuple[dict | None, str | None]:
    """Draw the choice; returns (backend dict or None for this machine, a refusal message or None)."""
    st.markdown("**Where it runs**")
    name = st.radio("Where it runs", list(BACKENDS), format_func=lambda n: BACKENDS[n].label, horizontal=True,
                    key=KEY + "where", label_visibility="collapsed", persist_state="session",
                    help=". ".join(f"{b.label}: {b.description}" for b in BACKENDS.values())
                    + "; same charts, probes and resume.")
    backend = BACKENDS[name]
    schema = backend.schema()
    basic, advanced = [f for f in schema if not f.advanced], [f for f in schema if f.advanced]
    if basic:
        _widgets(backend, basic)
    if advanced:
        with st.expander(f"More {backend.noun} settings"):
            _widgets(backend, advanced)
    values, problems = {}, []
    for f in schema:
        raw = st.session_state.get(_key(backend, f), schema_form.shown_value(f, f.default, "number"))
        try:
            values[f.name] = schema_form.widget_value(f, raw, "number")
        except SettingError as e:
            problems.append(str(e))
    if problems:
        return None, "; ".join(problems)
    settings = backend.settings(**values)
    try:
        backend.check(settings)
    except StudioError as e:
        return None, str(e)
    view = _VIEWS.get(backend.name)
    refusal = view(settings) if view else None
    return (None, refusal) if refusal else (start_argument(settings), None)
