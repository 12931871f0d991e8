"""Keys for widgets created from a value they show (the inspector's params, a block's repeat box).

Such a widget must be made anew when its value changes from outside (an undo, a redo, a file opened),
and the new one must not inherit anything the browser remembers. The browser keeps what was committed
to a widget under its id, and forgets ids that left the page only after a run that was not preempted
(`WidgetStateManager.removeInactive`, in Streamlit's App.tsx); a widget mounted again under a known id
starts from the remembered value and sends it back as an edit. A key that named the value shown came
back on every undo: measured in CI, the repeat box made again for "not repeated" after an Undo sent the
3 typed into it before, and the undone edit came back (and the first field made for 128 after a fast
double Undo sent 88). So a place's key gets a new number whenever the value it shows changes, and a
number is never used twice in a session.

Streamlit can also call a widget's `on_change` again, with the value it showed, after that value was
undone (measured: two Undos clicked 100 ms apart, the box made for 14 reported 14 once the graph held 12,
and the undone edit came back with Redo cleared). So an edit is applied only while the widget is the
one its place shows and the value it was made for is still the graph's (`still_shows`): a
compare-and-set, as a form that saw an old version must not overwrite a newer one.
"""

from __future__ import annotations

import json

import streamlit as st

_GENERATIONS = "studio.widget_keys"  # {place: [generation, the value it was made for, as JSON]}


def _marker(value) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def for_value(place: str, value) -> str:
    """The key of the widget at `place` (e.g. "studio.build.param.conv1.out_channels") showing `value`:
    the same key while the value stays, a key never used before once it changes."""
    marker = _marker(value)
    made = st.session_state.setdefault(_GENERATIONS, {})
    generation, made_for = made.get(place, (0, marker))
    if made_for != marker:
        generation += 1
    made[place] = (generation, marker)
    return f"{place}.{generation}"


def still_shows(key: str, value) -> bool:
    """Whether the widget `key` (from `for_value`) is the newest at its place and was made for `value`
    (the value its place holds now): an edit from it is the user's, not a late echo of an older view."""
    place, _, generation = key.rpartition(".")
    made = st.session_state.get(_GENERATIONS, {}).get(place)
    return made is not None and str(made[0]) == generation and made[1] == _marker(value)
