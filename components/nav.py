"""The sidebar's page list, drawn by every page: Streamlit's own list (hidden in .streamlit/config.toml)
names the entry page after its file, "app"; this one says "Home" and gives each page an icon."""

from __future__ import annotations

import streamlit as st

PAGES = (
    ("app.py", "Home", ":material/home:"),
    ("pages/1_Build.py", "Build", ":material/account_tree:"),
    ("pages/2_Data.py", "Data", ":material/dataset:"),
    ("pages/3_Train.py", "Train", ":material/model_training:"),
    ("pages/4_Inspect.py", "Inspect", ":material/biotech:"),
    ("pages/5_Compare.py", "Compare", ":material/compare_arrows:"),
)


def render() -> None:
    with st.sidebar:
        for path, label, icon in PAGES:
            st.page_link(path, label=label, icon=icon)
        st.divider()
