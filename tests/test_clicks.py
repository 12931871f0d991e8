"""components.clicks: a click is acted on once, also when the run it started was preempted before the
script reached the button, and never on another page (AppTest, no browser)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _page():
    import streamlit as st

    from components import clicks, nav

    nav.render()
    st.session_state["acted"] = st.session_state.get("acted", 0)
    if st.session_state.get("stop_before_button"):
        st.stop()  # what a preempted run looks like from the session: the callback ran, the button did not
    if clicks.button(st.button, "Go", key="go"):
        st.session_state["acted"] += 1


def _app() -> AppTest:
    at = AppTest.from_function(_page, default_timeout=30)
    at.run()
    assert not at.exception
    return at


def test_a_click_is_acted_on_once():
    at = _app()
    at.button(key="go").click().run()
    assert at.session_state["acted"] == 1
    at.run()  # a later run (another widget, a live refresh) does not repeat it
    assert at.session_state["acted"] == 1


def test_a_click_whose_run_stopped_before_the_button_is_acted_on_in_the_next_run():
    at = _app()
    at.session_state["stop_before_button"] = True
    at.button(key="go").click().run()
    assert at.session_state["acted"] == 0  # that run never reached the button
    at.session_state["stop_before_button"] = False
    at.run()  # the next run of the page (in the browser: the preempting rerun) acts on it
    assert at.session_state["acted"] == 1
    at.run()
    assert at.session_state["acted"] == 1


def test_a_click_left_on_another_page_is_forgotten():
    at = _app()
    at.session_state["studio.clicks"] = {"go": "another page's hash"}
    at.run()
    assert at.session_state["acted"] == 0 and at.session_state["studio.clicks"] == {}
