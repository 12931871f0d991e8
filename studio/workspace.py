"""Where the studio keeps its files: `STUDIO_WORKSPACE` or ./workspace."""

from __future__ import annotations

import os
from pathlib import Path


def workspace_dir(create: bool = True) -> Path:
    root = Path(os.environ.get("STUDIO_WORKSPACE") or "workspace").resolve()
    if create:
        for sub in ("graphs", "datasets", "runs"):
            (root / sub).mkdir(parents=True, exist_ok=True)
    return root
