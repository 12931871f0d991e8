"""Runs where PyTorch users already look: TensorBoard and MLflow, in and out.

One module per job, each importing its optional library only when used:

- `common`: `TrackingError`, the optional-dependency check (`require`) and the log directory check.
- `events`: `EventFile`, a TensorBoard event file written synchronously with tensorboardX's record
  writer (every call is on disk when it returns), and the summaries the studio writes into it.
- `live`: TensorBoard logging while a run trains (the worker's `live_tensorboard`, `launch_tags`
  for the CLI and the Train page).
- `export`: `export_run(run_id, to, target)`: a run's store rows, graph, config and best checkpoint
  to a TensorBoard log directory or an MLflow tracking store.
- `external`: reading a TensorBoard log directory or an MLflow run back (`read_tensorboard`,
  `read_mlflow`) as `ExternalRun`s the Compare page overlays, read-only.

Nothing here imports Streamlit; tensorboardX, tensorboard and mlflow are imported only on the paths
that use them, with a `TrackingError` naming the package to install when one is missing.
"""

from studio.tracking.common import TrackingError

__all__ = ["TrackingError"]
