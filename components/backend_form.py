"""The Train page's "Where it runs" choice: this machine, or a Ray cluster with its workers.

For Ray it shows the cluster's CPUs, GPUs and nodes before launch (asked by a short-lived
subprocess, so the Streamlit server never joins a cluster; cached for half a minute) and says
plainly why a launch is refused: Ray missing, the cluster unreachable, or a request that does not
fit. `render()` returns (backend for start_run or None for this machine, refusal or None).
"""

from __future__ import annotations

import streamlit as st

from components.canvas import st_escape
from studio.errors import StudioError
from studio.runs.ray_backend import ClusterInfo, RaySettings, check_fits, cluster_resources, require_ray

KEY = "studio.train.backend."
CHOICES = {"local": "This machine", "ray": "Ray cluster"}
CACHE_S = 30


@st.cache_data(ttl=CACHE_S, show_spinner="Asking the Ray cluster for its resources...")
def _resources(address: str) -> tuple[dict | None, str | None]:
    """(ClusterInfo fields, None) or (None, why it cannot be reached); errors are cached too."""
    try:
        return vars(cluster_resources(address)), None
    except StudioError as e:
        return None, str(e)


def render() -> tuple[dict | None, str | None]:
    """Draw the choice; returns (backend dict or None for this machine, a refusal message or None)."""
    st.markdown("**Where it runs**")
    where = st.radio("Where it runs", list(CHOICES), format_func=CHOICES.get, horizontal=True,
                     key=KEY + "where", label_visibility="collapsed", persist_state="session",
                     help="This machine: one background process. Ray: data-parallel workers on a Ray cluster "
                          "(an embedded one on this machine with address 'local'); same charts, probes and "
                          "resume.")
    if where == "local":
        return None, None
    cols = st.columns([3, 1, 1, 1])
    address = cols[0].text_input("Ray address", value="local", key=KEY + "address", persist_state="session",
                                 help="local: start Ray on this machine; auto: join the cluster running here "
                                      "(ray start --head); ray://HOST:10001: a remote cluster").strip()
    workers = cols[1].number_input("Workers", min_value=1, max_value=256, value=2, step=1, key=KEY + "workers",
                                   persist_state="session", help="Data-parallel ranks; each trains on its share "
                                   "of every batch (the batch size stays the global batch)")
    cpus = cols[2].number_input("CPUs per worker", min_value=0.1, value=1.0, step=1.0, key=KEY + "cpus",
                                persist_state="session")
    gpus = cols[3].number_input("GPUs per worker", min_value=0.0, value=0.0, step=1.0, key=KEY + "gpus",
                                persist_state="session", help="> 0: the ranks train on CUDA with NCCL")
    with st.expander("Ray settings for long runs"):
        c1, c2 = st.columns([1, 3])
        max_failures = c1.number_input("Max failures", min_value=0, max_value=100, value=2, step=1,
                                       key=KEY + "max_failures", persist_state="session",
                                       help="Restarts of the workers from the last checkpoint after one dies")
        storage = c2.text_input("Storage path (optional)", key=KEY + "storage", persist_state="session",
                                help="Ray Train's storage: on a multi-node cluster a directory every node shares "
                                     "or an s3:// / gs:// URI. Checkpoints reach this machine either way.").strip()
    settings = RaySettings(address=address, workers=int(workers), cpus_per_worker=float(cpus),
                           gpus_per_worker=float(gpus), max_failures=int(max_failures), storage_path=storage or None)
    try:
        settings.validate()
        require_ray()
    except StudioError as e:
        return None, str(e)
    cols = st.columns([6, 1])
    if cols[1].button("Refresh", key=KEY + "refresh", icon=":material/refresh:", help="Ask the cluster again"):
        _resources.clear()
    found, error = _resources(address)
    if error:
        return None, error
    info = ClusterInfo(**found)
    free = (f" ({info.available_cpus:g} CPUs, {info.available_gpus:g} GPUs free now)"
            if info.available_cpus is not None else "")
    where_text = "this machine (Ray starts when the run does)" if address == "local" else f"`{st_escape(address)}`"
    cols[0].caption(f"Cluster at {where_text}: **{info.describe()}**{free}. This run asks for "
                    f"{settings.total('CPU'):g} CPUs and {settings.total('GPU'):g} GPUs.")
    try:
        check_fits(settings, info)
    except StudioError as e:
        return None, str(e)
    return settings.to_dict(), None
