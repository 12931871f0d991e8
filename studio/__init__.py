"""Neural Studio's core library: graph documents, the layer palette, analysis, compilation,
data, training and the run store. Nothing below this package imports Streamlit."""

__version__ = "0.1.0"
