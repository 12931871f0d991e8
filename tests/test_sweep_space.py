"""The sweep form's search-space table and its JSON view (components/train/sweep_space.py)."""

import json

from streamlit.testing.v1 import AppTest

from components.train.sweep_space import rows_of, space_of

SPACE = {"lr": {"log_uniform": [0.0001, 0.1]}, "optimizer": {"choice": ["adam", "sgd"]},
         "fc1.out_features": {"grid": [8, 16, 32]}}


def test_rows_and_space_are_the_same_thing_written_twice():
    rows = rows_of(SPACE)
    assert rows[0] == {"parameter": "lr", "kind": "log_uniform", "values": "0.0001, 0.1"}
    assert rows[1]["values"] == "adam, sgd"  # words as a person writes them, no quotes
    assert space_of(rows) == SPACE
    assert space_of([*rows, {"parameter": None, "kind": "choice", "values": ""}]) == SPACE  # an empty new row


def _page():
    import json

    import streamlit as st

    from components.train import sweep_space

    space = sweep_space.render("g", {"lr": {"log_uniform": [0.001, 0.1]}}, ["lr", "batch_size", "fc1.out_features"])
    st.write(json.dumps(space))


def test_editing_the_json_fills_the_table_and_a_bad_json_is_refused_without_losing_it():
    at = AppTest.from_function(_page).run()
    assert json.loads(at.markdown[-1].value) == {"lr": {"log_uniform": [0.001, 0.1]}}
    (box,) = at.text_area
    box.input(json.dumps({"batch_size": {"choice": [32, 64]}})).run()
    assert json.loads(at.markdown[-1].value) == {"batch_size": {"choice": [32, 64]}}
    assert at.session_state["studio.sweep.space_rows"]["g"] == [
        {"parameter": "batch_size", "kind": "choice", "values": "32, 64"}]
    (box,) = at.text_area
    box.input("{not json").run()
    assert any("Not applied" in e.value for e in at.error)
    assert json.loads(at.markdown[-1].value) == {"batch_size": {"choice": [32, 64]}}
