"""Benchmarks and reference measurements: commands, not tests (docs/ records their figures)."""
from __future__ import annotations

import json
import sys
import time


def finish_report(result: dict, module: str, argv, out: str | None, started: float) -> int:
    """Add the seconds and the command to `result`, write it whole to `out` (JSON), print it
    without its per-case list; the exit status."""
    result["seconds"] = round(time.time() - started, 1)
    result["command"] = f"python -m {module} " + " ".join(sys.argv[1:] if argv is None else argv)
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "cases"}, indent=1))
    return 0
