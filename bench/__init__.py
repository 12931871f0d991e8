"""Benchmarks that print ratios measured side by side (`make bench`, `python -m bench.<name>`).

Warm spare workers (studio.runs.spare) are off here: a spare warming up in the background would count
in the figures of whatever runs beside it. bench_launch turns them on for its own figure.
"""

import os

os.environ.setdefault("STUDIO_SPARE_WORKER", "0")
