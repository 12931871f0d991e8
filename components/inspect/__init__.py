"""The Inspect page's parts: probe snapshots, a checkpoint's results, a drawing as model input."""
