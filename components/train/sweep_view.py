"""The Sweep tab of the Train page: a form that starts a sweep of the current graph on the current
dataset, and the live view of a sweep: its trials, the objective over trials with the best so far,
a parallel-coordinates plot of parameters against the objective, Optuna's parameter importances,
and "open the best trial" in Build and Train.

A sweep is a detached process (studio.sweeps); this view only starts, stops and resumes it and
reads what it wrote (the study and the run store), so closing the tab stops nothing. The figures
are pure functions of the sweep summary.
"""

from __future__ import annotations

import json
import math

import plotly.graph_objects as go
import streamlit as st

from components import clicks, nav, session
from components.run_store import shows_store_errors
from components.text import safe_figure, st_escape
from components.train import backend_form, run_table, sweep_space
from studio.errors import StudioError
from studio.graph import parse_graph
from studio.layers import REGISTRY
from studio.runs import backends, run_dir
from studio.schema import to_text
from studio.sweeps import (
    PRUNERS,
    SAMPLERS,
    SweepError,
    list_sweeps,
    param_importances,
    parse_sweep,
    resume_sweep,
    start_sweep,
    stop_sweep,
    sweep_summary,
)
from studio.training.config import FIELDS as CONFIG_FIELDS
from studio.training.config import MAXIMIZED_METRICS

REFRESH_S = 1.0
PICKED = "studio.sweep.picked"
MESSAGE = "studio.sweep.message"
IMPORTANCES = "studio.sweep.importances"  # (sweep id, completed trials) -> (importances, why none)
GO_BUILD = "studio.sweep.go_build"
# The Train page's own form keys: "open the best trial" fills the run form with the trial's settings.
TRAIN_CFG = "studio.train.cfg."
TRAIN_TAB = "studio.train.tab"  # the Train page's Runs/Sweep tabs
GO_RUNS = "studio.sweep.go_runs"
TRAIN_DEFAULTS_FOR = "studio.train.defaults_for"
TRAIN_PICKED = "studio.train.picked_runs"
_STATUS_COLORS = {"starting": "gray", "running": "blue", "completed": "green", "stopped": "orange",
                  "failed": "red", "lost": "violet"}
_SAMPLER_TITLES = {"tpe": "TPE (Bayesian)", "random": "random", "grid": "grid (every combination)"}
_PRUNER_TITLES = {"none": "none", "median": "median (stop below-median trials)", "halving": "successive halving"}


# ---- figures (pure) ---------------------------------------------------------------------------------

def objective_figure(summary: dict) -> go.Figure:
    """Each finished trial's objective by trial number (coloured by status), and the best so far."""
    name, maximize = summary["objective_name"], summary["direction"] == "maximize"
    fig = go.Figure()
    colors = {"completed": "#2e7d32", "pruned": "#ef6c00"}
    for status, color in colors.items():
        pts = [t for t in summary["trials"] if t["status"] == status and t["objective"] is not None]
        fig.add_scatter(x=[t["number"] for t in pts], y=[t["objective"] for t in pts], mode="markers", name=status,
                        marker={"color": color, "size": 9},
                        hovertext=[json.dumps(t["params"]) for t in pts])
    best, xs, ys = None, [], []
    for t in sorted(summary["trials"], key=lambda t: t["number"]):
        if t["status"] == "completed" and t["objective"] is not None:
            if best is None or (t["objective"] > best if maximize else t["objective"] < best):
                best = t["objective"]
        if best is not None:
            xs.append(t["number"])
            ys.append(best)
    fig.add_scatter(x=xs, y=ys, mode="lines", name="best so far", line={"shape": "hv", "color": "#1565c0"})
    fig.update_layout(title={"text": f"{name} over trials, best so far"}, xaxis_title="trial", yaxis_title=name,
                      height=320, margin={"l": 50, "r": 20, "t": 50, "b": 40},
                      legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"})
    return safe_figure(fig)


def parallel_figure(summary: dict) -> go.Figure | None:
    """Parallel coordinates: one axis per parameter, the last axis the objective (finished trials)."""
    trials = [t for t in summary["trials"] if t["objective"] is not None]
    if not trials:
        return None
    names = list(trials[0]["params"])
    dims = []
    for name in names:
        values = [t["params"].get(name) for t in trials]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            log = min(values) > 0 and max(values) / min(values) >= 100
            shown = [math.log10(v) for v in values] if log else values
            dims.append({"label": f"log10 {name}" if log else name, "values": shown})
        else:
            labels = sorted({json.dumps(v) for v in values})
            dims.append({"label": name, "values": [labels.index(json.dumps(v)) for v in values],
                         "tickvals": list(range(len(labels))), "ticktext": labels})
    objective = [t["objective"] for t in trials]
    dims.append({"label": summary["objective_name"], "values": objective})
    fig = go.Figure(go.Parcoords(dimensions=dims, line={"color": objective, "colorscale": "Viridis",
                                                        "showscale": True}))
    fig.update_layout(title={"text": "Parameters against the objective"}, height=340,
                      margin={"l": 60, "r": 60, "t": 100, "b": 30})
    return safe_figure(fig)


FEW_TRIALS = 20  # below this, Optuna's importances (a random forest fitted on the trials) are rough


def importance_caveat(completed: int) -> str:
    return (f"Read these importances loosely: they come from a model fitted on {completed} completed trial"
            f"{'s' * (completed != 1)}; below about {FEW_TRIALS} they can change a lot with the next few.")


def importance_figure(importances: dict[str, float]) -> go.Figure:
    names = sorted(importances, key=importances.get)
    fig = go.Figure(go.Bar(x=[importances[n] for n in names], y=names, orientation="h", marker_color="#6a1b9a"))
    fig.update_layout(title={"text": "Parameter importance (Optuna)"}, xaxis_title="importance (sums to 1)",
                      height=max(200, 60 + 40 * len(names)), margin={"l": 140, "r": 20, "t": 50, "b": 40})
    return safe_figure(fig)


def trial_rows(summary: dict) -> list[dict]:
    """One row per trial for the table: number, status, each parameter, objective, steps, run, error."""
    rows = []
    for t in summary["trials"]:
        row = {"trial": t["number"], "status": t["status"]}
        row.update({k: (v if isinstance(v, (int, float, str)) else json.dumps(v)) for k, v in t["params"].items()})
        row[summary["objective_name"]] = t["objective"]
        row["steps"] = f"{t['step']}/{t['total_steps'] or '?'}"
        row["run"] = t["run_id"] or "–"
        row["error"] = t["error"] or ""
        rows.append(row)
    return rows


def _short(value) -> str:
    """A parameter value for a sentence: floats to 4 significant digits, the rest as JSON."""
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value)


def default_space(graph) -> dict:
    """A starting search space: the learning rate, the batch size and the first dense layer's width."""
    space = {"lr": {"log_uniform": [1e-4, 1e-1]}, "batch_size": {"choice": [32, 64, 128]}}
    dense = [n for n in graph.nodes if n.type in REGISTRY and REGISTRY[n.type].dense]
    if len(dense) > 1:  # the last one is the output layer: its width is the number of classes
        param = REGISTRY[dense[0].type].size_param[0]
        width = int(dense[0].params.get(param, 64))
        space[f"{dense[0].id}.{param}"] = {"choice": sorted({max(1, width // 2), width, width * 2})}
    return space


def searchable(graph) -> list[str]:
    """What a space may search: the training settings a trial can vary, then the graph's numeric params."""
    settings = [f.name for f in CONFIG_FIELDS.values() if f.kind in ("int", "float", "choice") and f.name != "seed"]
    return settings + graph_params(graph)


def graph_params(graph) -> list[str]:
    """NODE_ID.PARAM names of the graph's numeric params (what a space may search besides settings)."""
    from studio.layers import get_spec

    names = []
    for node in graph.nodes:
        if node.type == "Input":
            continue
        for p in get_spec(node.type).params:
            if p.kind in ("int", "float", "size") and not p.advanced:
                names.append(f"{node.id}.{p.name}")
    return names


# ---- actions ----------------------------------------------------------------------------------------

def _act(fn, *args, done: str) -> None:
    try:
        fn(*args)
    except StudioError as e:
        st.session_state[MESSAGE] = ("error", str(e))
    else:
        st.session_state[MESSAGE] = ("success", done)


def open_trial(run, *, go_build: bool) -> None:
    """Make a trial's graph, dataset and settings the current ones (Build and the run form show them)."""
    options = {}
    try:
        options = json.loads((run_dir(run.id) / "run.json").read_text()).get("dataset_options") or {}
    except (OSError, ValueError):
        pass
    graph = parse_graph(run.graph)
    session.open_graph(graph, dataset_id=run.dataset_id, dataset_options=options)
    session.set_current_run_id(run.id)
    changes = []
    for key, value in run.config.items():
        shown = as_written(value)
        before = st.session_state.get(TRAIN_CFG + key, CONFIG_FIELDS[key].default if key in CONFIG_FIELDS else None)
        if key in CONFIG_FIELDS and before != shown:
            changes.append(f"{key} {to_text(before) or 'none'} → {to_text(shown) or 'none'}")
        st.session_state[TRAIN_CFG + key] = shown
    from studio.data import get_info

    try:
        task = get_info(run.dataset_id, options=options or None).task
    except StudioError:
        task = None
    st.session_state[TRAIN_DEFAULTS_FOR] = (graph.name, None, task)  # keep these settings in the run form
    st.session_state[TRAIN_PICKED] = [run.id]
    st.session_state[GO_BUILD] = go_build
    st.session_state[MESSAGE] = ("success", f"Opened trial run {run.id}: its graph is the current graph and its "
                                            "settings fill the run form (Runs tab).")
    if not go_build:  # the form is on the Runs tab: show it there, with what changed
        st.session_state[TRAIN_TAB] = "Runs"
        st.session_state[GO_RUNS] = True
        run_table.tell("success", f"The run form now holds the settings of trial run {run.id} ({run.name}) and its "
                                  "graph is the current graph. "
                       + ("Changed: " + "; ".join(changes) + "." if changes else "The settings were already these."))


def as_written(value):
    """A trial's setting as a person writes it in the form: lists as "3, 5", floats with 4 significant
    digits (a sampled learning rate 0.004430375245218269 is 0.00443)."""
    if isinstance(value, list):
        return ", ".join(map(str, value))
    if isinstance(value, float) and math.isfinite(value) and value != 0:
        return float(f"{value:.4g}")
    return value


# ---- layout -----------------------------------------------------------------------------------------

def render(graph, dataset_id: str | None, options: dict, info, reasons: list[str], store) -> None:
    """The whole Sweep tab: the form, the sweep picker, and the live view of the picked sweep."""
    if st.session_state.pop(GO_BUILD, False):
        nav.go("pages/1_Build.py")
    message = st.session_state.pop(MESSAGE, None)
    if message:
        getattr(st, message[0])(st_escape(message[1]))
    sweeps = list_sweeps()
    with st.expander("New sweep", expanded=not sweeps, icon=":material/tune:"):
        _form(graph, dataset_id, options, info, reasons)
    if not sweeps:
        st.caption("No sweeps yet: start one with the form above.")
        return
    by_id = {s.id: s for s in sweeps}
    if st.session_state.get(PICKED) not in by_id:
        st.session_state[PICKED] = sweeps[0].id
    # No status in the label: the browser keeps showing an option's first label while the selection stands
    # (streamlit/streamlit#13788), so a finished sweep read "· starting". The badge below has the status.
    st.selectbox("Sweep", list(by_id), key=PICKED, format_func=lambda i: f"{by_id[i].name} ({i})")
    active = by_id[st.session_state[PICKED]].status in ("starting", "running")
    live = st.fragment(shows_store_errors(_live), run_every=REFRESH_S if active else None)
    live(st.session_state[PICKED], store, active)


def _form(graph, dataset_id, options, info, reasons) -> None:
    task = info.task if info is not None else None
    objective_default = "val_accuracy" if task == "classification" else "val_loss"
    # Where the trials train: the same choice as a single run's (outside the form, so that choosing
    # Ray shows its settings and the cluster's resources at once).
    backend, refusal = backend_form.render()
    if refusal:
        reasons = [*reasons, refusal]
    st.markdown(f"**Base graph** {st_escape(graph.name)} (the current graph) · **dataset** "
                f"{st_escape(dataset_id or 'none chosen')}")
    st.markdown("**Search space**: what each trial draws")
    space = sweep_space.render(graph.name, default_space(graph), searchable(graph))
    with st.form("studio.sweep.form", border=False):
        st.markdown("**Every trial** trains with these settings, besides the searched ones")
        row = st.columns([1, 1, 3])
        epochs = row[0].number_input("Epochs", min_value=1, max_value=10_000, value=3, step=1,
                                     key="studio.sweep.epochs")
        seed = row[1].number_input("Seed", min_value=0, value=0, step=1, key="studio.sweep.seed")
        more_text = row[2].text_input(
            "More settings (optional, JSON)", value="", key="studio.sweep.config", placeholder='{"max_steps": 200}',
            help="Any TrainConfig field shared by every trial, as in a sweep file's \"config\".")
        row = st.columns(4)
        objective = row[0].text_input("Objective (a logged metric)", value=objective_default,
                                      key=f"studio.sweep.objective.{objective_default}")
        direction = row[1].selectbox("Direction", ("maximize", "minimize"),
                                     index=0 if objective_default in MAXIMIZED_METRICS else 1,
                                     key=f"studio.sweep.direction.{objective_default}")
        trials = row[2].number_input("Trials", min_value=1, max_value=1000, value=8, step=1, key="studio.sweep.trials")
        parallel = row[3].number_input("At once", min_value=1, max_value=16, value=1, step=1,
                                       key="studio.sweep.parallel",
                                       help="Trials under way together (the run launcher's slot limit still applies)")
        row = st.columns(3)
        sampler = row[0].selectbox("Sampler", SAMPLERS, format_func=_SAMPLER_TITLES.get, key="studio.sweep.sampler")
        pruner = row[1].selectbox("Pruner", PRUNERS, format_func=_PRUNER_TITLES.get, key="studio.sweep.pruner")
        name = row[2].text_input("Sweep name (optional)", key="studio.sweep.name", max_chars=120)
        if reasons:
            st.error("A sweep is not possible yet:\n\n" + "\n".join(f"- {st_escape(r)}" for r in reasons))
        submitted = clicks.button(st.form_submit_button, "Start sweep", key="studio.sweep.start", type="primary",
                                  icon=":material/science:", disabled=bool(reasons))
    if not submitted or reasons:
        return
    problems = []
    try:
        config = json.loads(more_text) if more_text.strip() else {}
        if not isinstance(config, dict):
            raise ValueError(f"write a JSON object such as {{\"max_steps\": 200}}, got {more_text.strip()!r}")
    except ValueError as e:
        problems.append(f"More settings: {e}")
        config = {}
    config = {"epochs": int(epochs), "seed": int(seed), **config}
    doc = {"format": "studio.sweep/1", "graph": graph.to_dict(), "data": dataset_id, "data_options": options,
           "config": config, "space": space, "objective": objective.strip(), "direction": direction,
           "trials": int(trials), "parallel": int(parallel), "sampler": sampler, "pruner": pruner,
           "backend": backends.of(backend).name}
    if backend:  # the backend's settings sit under its name, as in a sweep file
        doc[backends.of(backend).name] = {k: v for k, v in backend.items() if k != "kind"}
    if name.strip():
        doc["name"] = name.strip()
    if not problems:
        try:
            sweep_id = start_sweep(parse_sweep(doc))
        except SweepError as e:
            problems += [f"{f}: {m}" for f, m in e.problems]
        except StudioError as e:
            problems.append(str(e))
        else:
            st.session_state[PICKED] = sweep_id
            st.session_state[MESSAGE] = ("success", f"Started {sweep_id}: its trials run in the background.")
            st.rerun()
    st.error("The sweep was not started:\n\n" + "\n".join(f"- {st_escape(p)}" for p in problems))


def _live(sweep_id: str, store, was_active: bool) -> None:
    if st.session_state.pop(GO_BUILD, False):  # a button here reruns only this fragment
        nav.go("pages/1_Build.py")
    if st.session_state.pop(GO_RUNS, False):
        st.rerun(scope="app")  # the whole page, now on its Runs tab
    if st.session_state.pop(run_table.GO_INSPECT, False):
        nav.go(run_table.INSPECT_PAGE)
    summary = sweep_summary(sweep_id, store=store)
    if (summary["status"] in ("starting", "running")) != was_active:
        st.rerun(scope="app")  # started or ended: the page refreshes its timer around the fragment
    status = summary["status"]
    done = sum(t["status"] not in ("queued", "running") for t in summary["trials"])
    head = st.columns([5, 2], vertical_alignment="center")
    head[0].markdown(f":{_STATUS_COLORS.get(status, 'gray')}-badge[{status}] **{st_escape(summary['name'])}** · "
                     f"{done} of {summary['trials_asked']} trials done · objective `{summary['objective_name']}` "
                     f"({summary['direction']})")
    with head[1].container(horizontal=True):
        if status in ("starting", "running"):
            st.button("Stop sweep", key=f"studio.sweep.stop.{sweep_id}", icon=":material/stop:",
                      on_click=_act, args=(stop_sweep, sweep_id),
                      kwargs={"done": "Stop requested: the trials under way stop and keep their checkpoints."})
        elif status in ("stopped", "lost", "failed"):
            st.button("Resume sweep", key=f"studio.sweep.resume.{sweep_id}", icon=":material/play_arrow:",
                      on_click=_act, args=(resume_sweep, sweep_id),
                      kwargs={"done": "Resumed: unfinished trials continue from their checkpoints."})
    if summary["error"] and status in ("failed", "lost"):
        st.caption(st_escape(summary["error"]))
    if not summary["trials"]:
        st.caption("Waiting for the first trial (the sweep process needs a few seconds to start)...")
        return

    best = summary["best"]
    if best:
        with st.container(border=True):
            st.markdown(f"**Best trial {best['number']}** · {summary['objective_name']} **{best['objective']:.4g}** · "
                        + ", ".join(f"`{k}` = {st_escape(_short(v))}" for k, v in best["params"].items()))
            if best["run_id"]:
                run = store.get_run(best["run_id"])
                with st.container(horizontal=True):
                    st.button("Open the best trial in Build", key=f"studio.sweep.best_build.{sweep_id}",
                              icon=":material/account_tree:", on_click=open_trial, args=(run,),
                              kwargs={"go_build": True})
                    st.button("Use its settings in Train", key=f"studio.sweep.best_train.{sweep_id}",
                              icon=":material/model_training:", on_click=open_trial, args=(run,),
                              kwargs={"go_build": False})
                    st.button("Inspect it", key=f"studio.sweep.best_inspect.{sweep_id}", icon=":material/insights:",
                              on_click=run_table._open_inspect, args=(run,))

    st.dataframe(trial_rows(summary), hide_index=True, key=f"studio.sweep.table.{sweep_id}",
                 column_config={summary["objective_name"]: st.column_config.NumberColumn(format="%.4f")})
    cols = st.columns(2)
    cols[0].plotly_chart(objective_figure(summary), key=f"studio.sweep.objective_chart.{sweep_id}")
    parallel = parallel_figure(summary)
    if parallel is not None:
        cols[1].plotly_chart(parallel, key=f"studio.sweep.parallel_chart.{sweep_id}")
    completed = sum(t["status"] == "completed" for t in summary["trials"])
    cache = st.session_state.setdefault(IMPORTANCES, {})
    if (sweep_id, completed) not in cache:  # Optuna's evaluator is costly: once per new completed trial
        cache[(sweep_id, completed)] = param_importances(sweep_id)
    importances, why = cache[(sweep_id, completed)]
    if importances:
        st.plotly_chart(importance_figure(importances), key=f"studio.sweep.importance_chart.{sweep_id}")
        if completed < FEW_TRIALS:
            st.caption(importance_caveat(completed))
    else:
        st.caption(f"Parameter importances: {why}.")
