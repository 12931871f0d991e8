"""The Build page's parts: canvas, layer palette, inspector, panels, graph files (open, save, rescue)."""
