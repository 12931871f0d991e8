"""The one generated form: a widget per `studio.schema.Field`, chosen by its kind, and one reading of
what was typed (`Field.parse_text`). The inspector's layer params, the Train form and its augmentation
settings all render through `field_widget` and read back through `widget_value` / `read_fields`.

Two ways to hold a value, as the callers need them:
- created from the value (`state=False`): the widget shows `value`; the inspector makes it under a
  new key whenever that value changes (`components.widget_keys`) and applies edits in `on_change`.
- kept in session state (`state=True`): the key holds the value across reruns and page visits
  (`persist_state="session"`); the Train form reads every key when Launch is pressed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import streamlit as st

from studio.schema import TEXT_KINDS, Field, SettingError, to_text


def help_text(f: Field) -> str:
    """The field's help, its default and its bounds, for the widget's tooltip."""
    lo = f"{'>' if f.min_exclusive else '>='} {f.min:g}" if f.min is not None else ""
    hi = f"{'<' if f.max_exclusive else '<='} {f.max:g}" if f.max is not None else ""
    bounds = ", ".join(b for b in (lo, hi) if b)
    text = f"{f.help} Default: {to_text(f.default) or 'None'}." + (f" ({bounds})" if bounds else "")
    text += " Comma-separated." if f.kind in ("ints", "floats") else ""
    return text + (f" Setting `{f.name}`." if f.label else "")  # the name the CLI and config documents use


def fits_widget(f: Field, value) -> bool:
    """Whether `value` can be shown by the field's own widget (a graph may hold a value of the wrong type)."""
    if value is None:
        return f.optional and f.kind not in ("bool", "choice")
    if f.kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if f.kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if f.kind == "bool":
        return isinstance(value, bool)
    if f.kind == "choice":
        return value in f.choices
    if f.kind in ("str", "run"):
        return isinstance(value, str)
    return True  # list kinds show anything as text


def _uses_number_box(f: Field, numbers: str) -> bool:
    return (numbers == "number" and f.kind in ("int", "float")) or (numbers == "ints" and f.kind == "int")


def _int_bounds(f: Field, value) -> dict:
    """An int number box's min_value/max_value from the field's bounds (an exclusive bound moves by one);
    none where the value shown lies outside them (a hand-edited file: the issue list says what is wrong,
    and Streamlit refuses a box whose value is out of its bounds)."""
    if f.kind != "int":
        return {}
    lo = None if f.min is None else math.floor(f.min) + 1 if f.min_exclusive else math.ceil(f.min)
    hi = None if f.max is None else math.ceil(f.max) - 1 if f.max_exclusive else math.floor(f.max)
    if isinstance(value, int) and ((lo is not None and value < lo) or (hi is not None and value > hi)):
        return {}
    return {k: v for k, v in (("min_value", lo), ("max_value", hi)) if v is not None}


def shown_value(f: Field, value, numbers: str = "text"):
    """What the field's widget holds for `value`: the value itself, or its text for text boxes."""
    if f.kind in ("bool", "choice") or _uses_number_box(f, numbers) or (f.kind == "run" and value is not None):
        return value
    return to_text(value)


def widget_value(f: Field, raw, numbers: str = "text"):
    """The widget's content as the field's value; SettingError says what the typed text should be."""
    if f.kind in TEXT_KINDS and isinstance(raw, str) and not (f.kind == "run" and raw == ""):
        return f.parse_text(raw)
    return raw


def field_widget(f: Field, key: str, value=None, *, state: bool = False, numbers: str = "text",
                 on_change: Callable | None = None, args: tuple = (), runs: Sequence[str] | None = None,
                 label: str | None = None) -> None:
    """One widget for one field, chosen by its kind only (no per-field UI).

    bool: checkbox; choice: selectbox; int/float: a text box (`numbers="text"`, exact and readable:
    1e-05), a number box (`numbers="number"`), or a number box for ints only (`numbers="ints"`), an int
    box bounded by the field's min and max; "run": a selectbox of `runs` when given; everything
    else, lists included, a text box read by `Field.parse_text`.
    """
    kw = {"key": key, "help": help_text(f)}
    if on_change is not None:
        kw.update(on_change=on_change, args=args)
    shown = shown_value(f, value, numbers)
    if state:  # the value lives in session state: set once, then the widget keeps it
        st.session_state.setdefault(key, shown)
        kw["persist_state"] = "session"
    label = label or f.name
    if f.kind == "bool":
        st.checkbox(label, **({} if state else {"value": bool(shown)}), **kw)
    elif f.kind == "choice":
        st.selectbox(label, list(f.choices), **({} if state else {"index": list(f.choices).index(shown)}), **kw)
    elif f.kind == "run" and runs is not None:  # a finished run, or none
        options = ["", *runs]
        if state and st.session_state.get(key) not in options:
            st.session_state[key] = ""
        st.selectbox(label, options, format_func=lambda r: r or "none",
                     **({} if state else {"index": options.index(shown) if shown in options else 0}), **kw)
    elif _uses_number_box(f, numbers):
        fmt = {"step": 1, **_int_bounds(f, st.session_state.get(key) if state else shown)} if f.kind == "int" else {
            "format": "%g", "step": None}
        st.number_input(label, **({} if state else {"value": shown}), **fmt, **kw)
    else:
        st.text_input(label, **({} if state else {"value": shown}), **kw,
                      placeholder="None (default)" if f.optional else None)


def read_fields(fields: Sequence[Field], prefix: str, numbers: str = "text") -> tuple[dict, list[tuple[str, str]]]:
    """The values held under `prefix + name` as a document, and (name, message) for text that does not read."""
    doc, problems = {}, []
    for f in fields:
        raw = st.session_state.get(prefix + f.name, shown_value(f, f.default, numbers))
        try:
            doc[f.name] = widget_value(f, raw, numbers)
        except SettingError as e:
            problems.append((f.name, str(e)))
    return doc, problems
