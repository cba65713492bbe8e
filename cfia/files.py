"""Small file helpers shared by the composition root."""
from __future__ import annotations

import hashlib
from pathlib import Path


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (model weights can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_digest(path: str | Path) -> str:
    """Hex sha256 of a file, or of a folder's files (a MONAI bundle): each one's path
    relative to the folder and its own sha256, in sorted order."""
    path = Path(path)
    if path.is_file():
        return sha256(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{item.relative_to(path).as_posix()}\0{sha256(item)}\0".encode())
    return digest.hexdigest()
