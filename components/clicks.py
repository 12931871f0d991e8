"""Buttons whose click is never lost.

Streamlit reports a click as a one-run "trigger": the run the click starts sees the button return True.
When another rerun preempts that run before the script reaches the button (the canvas answering a new
picture, a widget edited at the same moment), the next run starts with the trigger reset and the click
is gone: the user pressed "Train this graph" or "Launch run" and nothing happened. A click callback
runs first, before the script body and before any preemption can stop it, so `button` records the
click there and reports it in whichever run of the same page reaches the button next.

A click recorded on one page and not yet acted on when the user leaves for another (the page's run was
preempted by the navigation) is forgotten there (`forget_other_pages`, called by every page through
`nav.render`): coming back later never acts on an old click.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

_CLICKS = "studio.clicks"  # {button key: the page it was clicked on}


def _page() -> str:
    ctx = get_script_run_ctx()
    return ctx.page_script_hash if ctx is not None else ""


def _record(key: str) -> None:
    st.session_state.setdefault(_CLICKS, {})[key] = _page()


def button(draw: Callable[..., object], label: str, *, key: str, **kwargs) -> bool:
    """Draw a button with `draw` (`st.button`, `st.form_submit_button`, `column.button`) and return
    whether it was clicked since the last run of this page that reached it. `kwargs` go to `draw`
    (an `on_click` of its own is not supported: act on the returned value)."""
    draw(label, key=key, on_click=_record, args=(key,), **kwargs)
    return st.session_state.get(_CLICKS, {}).pop(key, None) == _page()


def forget_other_pages() -> None:
    """Drop the clicks recorded on pages other than this one (their runs were cut short by leaving)."""
    clicks = st.session_state.get(_CLICKS)
    if clicks:
        page = _page()
        st.session_state[_CLICKS] = {k: p for k, p in clicks.items() if p == page}
