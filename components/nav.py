"""Links between pages. The sidebar's page list is drawn by every page: Streamlit's own list (hidden in
.streamlit/config.toml) names the entry page after its file, "app"; this one says "Home" and gives
each page an icon. A page run on its own (`streamlit run pages/...`, AppTest of one page file) has no
other pages to link to: the links are left out there and the page works as usual."""

from __future__ import annotations

import streamlit as st
from streamlit.errors import StreamlitPageNotFoundError

from components import clicks

PAGES = (
    ("app.py", "Home", ":material/home:"),
    ("pages/1_Build.py", "Build", ":material/account_tree:"),
    ("pages/2_Data.py", "Data", ":material/dataset:"),
    ("pages/3_Train.py", "Train", ":material/model_training:"),
    ("pages/4_Inspect.py", "Inspect", ":material/biotech:"),
    ("pages/5_Compare.py", "Compare", ":material/compare_arrows:"),
    ("pages/6_Deploy.py", "Deploy", ":material/deployed_code:"),
)


def render() -> None:
    """The page list at the top of the sidebar (and, first, the clicks left on other pages dropped)."""
    clicks.forget_other_pages()
    with st.sidebar:
        if all([link(path, label, icon) for path, label, icon in PAGES]):  # a list: every link is drawn
            st.divider()


def link(path: str, label: str, icon: str | None = None) -> bool:
    """A link to another page (`path` relative to app.py); False, and nothing drawn, where the page
    runs on its own."""
    try:
        st.page_link(path, label=label, icon=icon)
    except StreamlitPageNotFoundError:
        return False
    return True


def go(path: str) -> None:
    """Switch to another page (`path` relative to app.py). The query parameters are dropped as
    `st.switch_page` does by default, but also those bound to a widget (the Train page's tab): the
    default refuses to clear those and the page crashes ("Cannot clear query parameters")."""
    st.switch_page(path, query_params={})
