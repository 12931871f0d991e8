"""`make bench`: run every bench/bench_*.py in turn; each prints its figures next to its goal."""

from __future__ import annotations

import importlib
import platform
import sys
import time
from pathlib import Path

import torch


def main() -> int:
    names = sorted(p.stem for p in Path(__file__).parent.glob("bench_*.py"))
    if len(sys.argv) > 1:
        names = [n for n in names if any(a in n for a in sys.argv[1:])]
    print(f"# {platform.node()}  {platform.processor() or platform.machine()}  cores={torch.get_num_threads()}"
          f"  torch {torch.__version__}  python {platform.python_version()}")
    failed = []
    for name in names:
        print(f"\n## {name}", flush=True)
        t = time.perf_counter()
        try:
            importlib.import_module(f"bench.{name}").main()
        except Exception as e:  # a broken bench must not hide the others' figures
            failed.append(name)
            print(f"ERROR  {name}: {type(e).__name__}: {e}")
        print(f"({time.perf_counter() - t:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
