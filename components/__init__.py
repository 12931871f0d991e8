"""Streamlit building blocks for the pages: one folder per page (build/, data/, train/, inspect/),
figures/ for pure figure functions, and at the top what every page shares (session, nav, run_store,
schema_form, text). They may import streamlit and studio; studio never imports them.
"""
