"""The sweep's "Use its settings in Train" under AppTest: the run form gets the trial's settings as a
person writes them, the page turns to the Runs tab, and a message says what changed."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from components.train.sweep_view import as_written


def _use_trial_settings():
    from types import SimpleNamespace

    import streamlit as st

    from components.train import run_table, sweep_view
    from tests.conftest import chain

    if "used" not in st.session_state:
        st.session_state["used"] = True
        st.session_state["studio.train.cfg.lr"] = 0.01  # what the user had typed in the run form
        graph = chain(("input", "Input", {"shape": [1, 8, 8]}), ("flat", "Flatten", None),
                      ("fc", "Linear", {"out_features": 10}), name="trial-mlp")
        run = SimpleNamespace(id="20261207-000000-abcdef", name="sweep trial 2", dataset_id="digits", graph=graph,
                              config={"lr": 0.004430375245218269, "batch_size": 64, "epochs": 3})
        sweep_view.open_trial(run, go_build=False)
    run_table.render_message()


def test_use_its_settings_fills_the_form_as_written_and_says_what_changed(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_WORKSPACE", str(tmp_path))
    at = AppTest.from_function(_use_trial_settings, default_timeout=60)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.session_state["studio.train.cfg.lr"] == 0.00443  # not 0.004430375245218269
    assert at.session_state["studio.train.cfg.epochs"] == 3
    assert at.session_state["studio.train.tab"] == "Runs"  # the form is on the Runs tab
    (message,) = [s.value.replace("\\", "") for s in at.success]  # markdown escapes removed
    assert "lr 0.01 → 0.00443" in message and "epochs 10 → 3" in message, message
    assert "batch_size" not in message  # 64 is what the form held already (the default)


@pytest.mark.parametrize("value, shown", [(0.004430375245218269, 0.00443), (3e-05, 3e-05), (0.0, 0.0),
                                          (64, 64), ([3, 5], "3, 5"), ("adamw", "adamw"), (None, None)])
def test_as_written(value, shown):
    assert as_written(value) == shown
