"""Benchmarks and reference measurements: commands, not tests (docs/ records their figures)."""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import NoReturn


def refuse(message) -> int:
    """A one-line `error: ...` on stderr (bad input, before or instead of the work); the exit status, 2."""
    print(f"error: {message}", file=sys.stderr)
    return 2


def fail(message) -> NoReturn:
    """refuse(), then exit."""
    raise SystemExit(refuse(message))


def check_output(path: str | None, flag: str = "--out", create: bool = False) -> None:
    """Before any work, fail() unless a file can be written at `path` (None: nothing to check):
    not a folder, its folder there (made first with create=True) and writable."""
    if not path:
        return
    out = Path(path)
    if out.is_dir():
        fail(f"{flag} {path}: is a folder, not a file")
    try:
        if create:
            out.parent.mkdir(parents=True, exist_ok=True)
        if not out.parent.is_dir():
            fail(f"{flag} {path}: no folder {out.parent}")
        tempfile.TemporaryFile(dir=out.parent).close()
    except OSError as exc:
        fail(f"{flag} {path}: cannot write in {out.parent} ({exc.strerror or exc})")


def finish_report(result: dict, module: str, argv, out: str | None, started: float) -> int:
    """Add the seconds and the command to `result`, print it without its per-case list, then
    write it whole to `out` (JSON); the exit status (2 when `out` cannot be written)."""
    result["seconds"] = round(time.time() - started, 1)
    result["command"] = f"python -m {module} " + " ".join(sys.argv[1:] if argv is None else argv)
    print(json.dumps({k: v for k, v in result.items() if k != "cases"}, indent=1), flush=True)
    if out:
        try:
            with open(out, "w") as f:
                json.dump(result, f, indent=1)
        except OSError as exc:
            print(f"error: {out}: cannot write the report ({exc.strerror or exc})", file=sys.stderr)
            return 2
    return 0
