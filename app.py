"""Neural Studio's entry point: the page list. Each page is a file in pages/; this names them in the
sidebar (the Home page as "Home", not the entry file's name) and runs the one the browser asked for."""

import streamlit as st

PAGES = [
    st.Page("pages/0_Home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/1_Build.py", title="Build", icon=":material/account_tree:"),
    st.Page("pages/2_Data.py", title="Data", icon=":material/dataset:"),
    st.Page("pages/3_Train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/4_Inspect.py", title="Inspect", icon=":material/biotech:"),
    st.Page("pages/5_Compare.py", title="Compare", icon=":material/compare_arrows:"),
]

st.navigation(PAGES).run()
