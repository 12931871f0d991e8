"""The Train page's settings form: TrainConfig's schema laid out by group through the one generated
form (`components.schema_form`), its values kept in session state, and read back into a checked
TrainConfig when Launch is pressed. The starting values are `studio.training.config.training_defaults`,
the same the CLI's `train` starts from.
"""

from __future__ import annotations

import streamlit as st

from components import schema_form
from components.text import st_escape
from studio.errors import StorageError, StudioError
from studio.runs import list_runs
from studio.schema import Field
from studio.training.config import SCHEMA, TrainConfig, training_defaults

CFG = "studio.train.cfg."  # + field name: one widget per TrainConfig field
DEFAULTS_FOR = "studio.train.defaults_for"
GROUP_TITLES = {"optimizer": "Optimizer", "training": "Length and batches", "schedule": "Learning-rate schedule",
                "monitor": "Best checkpoint and early stopping", "recording": "Recording", "system": "System"}
FIELDS: list[Field] = [f for f in SCHEMA if f.group != "meta"]  # every setting the form shows


def start_from_defaults(signature: tuple, template: str | None, task: str | None) -> dict:
    """The defaults for this template and task; a new template or task drops what was typed before."""
    if st.session_state.get(DEFAULTS_FOR) != signature:
        for f in FIELDS:
            st.session_state.pop(CFG + f.name, None)
        st.session_state[DEFAULTS_FOR] = signature
    return training_defaults(template, task)


def render_field(f: Field, default) -> None:
    """One setting's widget, its value kept in session state (still there after a visit elsewhere)."""
    runs = None
    if f.kind == "run":
        try:
            runs = [r.id for r in list_runs() if r.status in ("completed", "stopped", "imported")]
        except StorageError:  # the Runs section of the page shows why the store cannot be read
            runs = []
    schema_form.field_widget(f, CFG + f.name, default, state=True, numbers="number", runs=runs, label=f.title)


BASICS = ("epochs", "batch_size", "optimizer", "lr")  # what most runs set: first, on one row


def render_settings(defaults: dict) -> None:
    """The basics on one row, then the other settings by group behind an expander, then the advanced ones."""
    by_name = {f.name: f for f in FIELDS}
    for col, name in zip(st.columns(len(BASICS)), BASICS, strict=True):
        with col:
            render_field(by_name[name], defaults[name])
    shown = [f for f in FIELDS if f.group != "transfer" and f.name not in BASICS]
    with st.expander("More settings: " + ", ".join(
            GROUP_TITLES.get(g, g).lower() for g in dict.fromkeys(f.group for f in shown if not f.advanced))):
        cols = st.columns(3)
        for i, group in enumerate(dict.fromkeys(f.group for f in shown if not f.advanced)):
            with cols[i % 3]:
                st.markdown(f"*{GROUP_TITLES.get(group, group.title())}*")
                for f in (f for f in shown if f.group == group and not f.advanced):
                    render_field(f, defaults[f.name])
    with st.expander("Advanced settings"):
        cols = st.columns(3)
        for i, f in enumerate(f for f in shown if f.advanced):
            with cols[i % 3]:
                render_field(f, defaults[f.name])


def render_transfer(defaults: dict, graph, task: str | None) -> None:
    """Teacher, warm start and pruned fine-tuning, outside the form: what a warm start copies and what it
    leaves shows as soon as a run is picked, before launch."""
    from studio.training.transfer import check_teacher, match_graph

    st.markdown("**Start from other runs** (distillation, warm start): optional, applied at launch")
    cols = st.columns(3)
    for i, f in enumerate(f for f in FIELDS if f.group == "transfer"):
        with cols[i % 3]:
            render_field(f, defaults[f.name])
    teacher, init_from = st.session_state.get(CFG + "teacher"), st.session_state.get(CFG + "init_from")
    try:
        if teacher and task:
            check_teacher(graph, teacher, task)
            st.caption(f"Teacher {teacher}: same input and output shape as this graph.")
        if init_from:
            match = match_graph(graph, init_from)
            (st.info if match.matched else st.warning)("\n\n".join(st_escape(line) for line in match.lines()))
        last_blocks = st.session_state.get(CFG + "train_last_blocks")
        if isinstance(last_blocks, int) and last_blocks >= 0:  # what freezing by blocks keeps (finetune)
            from studio.training.finetune import freeze_plan

            st.caption(st_escape(freeze_plan(graph, last_blocks)))
    except StudioError as e:
        st.error(st_escape(str(e)))


def read_config() -> tuple[TrainConfig | None, list[tuple[str, str]]]:
    """The form as a checked TrainConfig, or None and every (setting, message) problem."""
    doc, problems = schema_form.read_fields(FIELDS, CFG, numbers="number")
    if problems:
        return None, problems
    try:
        config = TrainConfig.from_dict({**doc, "version": TrainConfig().version})
        problems = config.validate(raise_on_error=False)
    except StudioError as e:
        return None, list(getattr(e, "problems", [("config", str(e))]))
    return (None if problems else config), problems


def model_of(graph_doc: dict) -> tuple:
    """A graph document without what does not change the model (node positions on the canvas)."""
    nodes = [{k: v for k, v in n.items() if k != "position"} for n in graph_doc.get("nodes", [])]
    return graph_doc.get("name"), nodes, graph_doc.get("edges", [])
