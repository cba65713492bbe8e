"""Small file helpers shared by the composition root."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterator, Optional

# SQLite's Unix VFS builds a database's full path (as written, then each symlink resolved as it
# is reached), with "-journal" appended, in 512 bytes (SQLITE_MAX_PATHNAME, a compile-time default): a longer one fails to open as
# "unable to open database file", which names neither the cause nor the limit.
SQLITE_PATH_LIMIT = 512 - len("-journal")


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (model weights can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_digest(path: str | Path) -> str:
    """Hex sha256 of a file, or of a folder's files (a MONAI bundle): each one's path
    relative to the folder and its own sha256, in sorted order. Symlinked folders are
    followed: a bundle's models/ may be a link to the weights, and they are its version."""
    path = Path(path)
    if path.is_file():
        return sha256(path)
    digest = hashlib.sha256()
    for item in sorted(_files(path)):  # Path order (by parts), as for the result UIDs already sent
        digest.update(f"{item.relative_to(path).as_posix()}\0{sha256(item)}\0".encode())
    return digest.hexdigest()


def _files(folder: Path, above: frozenset = frozenset()) -> Iterator[Path]:
    """The files under `folder`, through symlinked folders; a link to a folder it is already
    inside is not followed again, so a loop ends."""
    real = os.path.realpath(folder)
    if real in above:
        return
    try:
        entries = list(os.scandir(folder))
    except OSError:  # unreadable: skipped, as Path.rglob skipped it
        return
    for entry in entries:
        try:
            is_dir, is_file = entry.is_dir(), entry.is_file()
        except OSError:  # a link to itself (ELOOP)
            continue
        if is_dir:
            yield from _files(Path(entry.path), above | {real})
        elif is_file:
            yield Path(entry.path)


def sqlite_path_problem(path: str | Path) -> Optional[str]:
    """Why SQLite cannot open a database at `path` (its full path, as written or with its
    symlinks resolved, too long), or None."""
    # SQLite builds the path as written and resolves each symlink as it reaches it: both count.
    length = max(len(os.fsencode(os.path.abspath(path))), len(os.fsencode(os.path.realpath(path))))
    if length <= SQLITE_PATH_LIMIT:
        return None
    return (f"{path}: its full path is {length} bytes; SQLite opens a database at most {SQLITE_PATH_LIMIT} "
            f"bytes long (512 with its -journal suffix)")
