"""Home under AppTest: it renders, lists the templates (or says there are none yet), and opens one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from components.text import st_escape
from studio.templates import list_templates

ROOT = Path(__file__).resolve().parents[1]


def home() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_home_renders_and_lists_templates():
    at = home()
    assert at.title[0].value == "Neural Studio"
    text = " ".join(m.value for m in at.markdown)
    for t in list_templates():
        assert f"**{st_escape(t.title)}**" in text
        assert at.button(key=f"studio.home.template.{t.name}").label == "Open in Build"
    # the sidebar names every page, the entry page "Home" (not its file name); Quick start links the others
    assert [el.proto.label for el in at.sidebar.get("page_link")] == [
        "Home", "Build", "Data", "Train", "Inspect", "Compare", "Deploy"]
    assert [el.proto.label.split(":")[0] for el in at.main.get("page_link")] == [
        f"Open the {p} page" for p in ("Build", "Data", "Train", "Inspect", "Compare", "Deploy")]


def test_home_lists_recent_saved_graphs_and_opens_one(_workspace):
    doc = {"format": "studio.graph/1", "name": "saved-mlp",
           "nodes": [{"id": "input", "type": "Input", "params": {"shape": [4]}},
                     {"id": "fc", "type": "Linear", "params": {"out_features": 2}}],
           "edges": [{"source": "input", "target": "fc"}]}
    (_workspace / "graphs").mkdir(parents=True, exist_ok=True)
    (_workspace / "graphs" / "saved-mlp.json").write_text(json.dumps(doc))
    at = home()
    assert any(st_escape("saved-mlp") in m.value for m in at.markdown)
    at.button(key="studio.home.open.saved-mlp").click()
    at.run()
    assert not at.exception
    assert [n.id for n in at.session_state["studio.session.graph"].nodes] == ["input", "fc"]


def test_home_opens_a_template_into_build(_workspace):
    t = list_templates()[0]
    at = home()
    at.button(key=f"studio.home.template.{t.name}").click()
    at.run()
    assert not at.exception
    assert at.session_state["studio.session.template"] == t.name
    assert at.get("component_instance"), "the Build page (with its canvas) should be showing"


@pytest.mark.parametrize("page", ["app.py", *sorted(f"pages/{p.name}" for p in (ROOT / "pages").glob("*.py"))])
def test_every_page_file_also_runs_on_its_own(page):
    """AppTest.from_file on one page (no multipage app around it, an empty workspace): it renders without
    an exception; its links to other pages are left out, as there are none to go to."""
    at = AppTest.from_file(str(ROOT / page), default_timeout=60)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.main.children, "the page drew nothing"
