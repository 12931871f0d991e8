"""Keys of widgets made from a graph value: never reused, and an edit counts only from the newest
widget while the graph still holds the value it was made for (components/widget_keys.py)."""

from streamlit.testing.v1 import AppTest


def _script():
    import streamlit as st

    from components import widget_keys

    k14 = widget_keys.for_value("place", 14)
    same = widget_keys.for_value("place", 14) == k14  # a rerun that changes nothing keeps the widget
    fresh14 = widget_keys.still_shows(k14, 14)
    k12 = widget_keys.for_value("place", 12)  # an undo: the graph now holds 12
    fresh12 = widget_keys.still_shows(k12, 12)
    late_echo = widget_keys.still_shows(k14, 12) or widget_keys.still_shows(k14, 14)
    k14_again = widget_keys.for_value("place", 14)  # a redo
    other = widget_keys.for_value("other place", 14)
    st.write(repr((same, fresh14, fresh12, late_echo,
                   len({k14, k12, k14_again}), other != k14)))


def test_a_key_is_never_reused_and_only_the_newest_widget_edits():
    at = AppTest.from_function(_script).run()
    assert not at.exception
    assert at.markdown[0].value == repr((True, True, True, False, 3, True))
