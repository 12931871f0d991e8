"""Figures as pure functions: data in, plotly `go.Figure` or PNG bytes out, no Streamlit (pages only display them)."""
