"""Streamlit building blocks shared by the pages: the session's current graph, the canvas, the
inspector, the palette and the Build page's panels. They may import streamlit and studio; studio
never imports them.
"""
