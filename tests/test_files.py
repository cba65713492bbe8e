"""cfia/files.py: the content digest that versions a model (a MONAI bundle folder too), and
the path limit of the SQLite job queue, as `cfia serve`, `status` and `requeue` meet it."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cfia.files import SQLITE_PATH_LIMIT, content_digest, sqlite_path_problem
from listener import JobQueue

ROOT = Path(__file__).resolve().parent.parent


def _ordinary_bundle(root: Path) -> Path:
    """Nested folders, a hidden file, names whose order by path parts differs from their
    order as strings ("a-c" / "a/b"), and a symlinked file."""
    for rel, data in {"configs/metadata.json": b"{}", "models/model.pt": b"weights", "a-c": b"1",
                      "a/b": b"2", ".hidden": b"3", "a/deeper/x.bin": b"4"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    os.symlink("models/model.pt", root / "linked.pt")
    return root


def test_an_ordinary_folders_digest_is_the_one_result_uids_were_derived_from(tmp_path):
    """Pinned: the value content_digest gave this folder before it followed symlinked
    folders; another one would change every result UID a node has sent."""
    bundle = _ordinary_bundle(tmp_path / "bundle")
    assert content_digest(bundle) == "2c637b1404db6ab45bf6e4c63c5a701770766f7f9f5a9b31d14adea1b1915403"


def test_a_bundle_whose_models_folder_is_a_symlink_is_versioned_by_the_weights_it_points_to(tmp_path):
    """A site keeps the weights elsewhere and links models/ to them: other weights, another
    version. A link back to a folder it is in is not followed: no walk round for ever."""
    for name, weights in (("one", b"weights one"), ("two", b"weights two")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.pt").write_bytes(weights)
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "configs" / "metadata.json").write_text("{}")
    (bundle / "models").symlink_to(tmp_path / "one")
    first = content_digest(bundle)
    (bundle / "models").unlink()
    (bundle / "models").symlink_to(tmp_path / "two")
    assert content_digest(bundle) != first
    (bundle / "models").unlink()
    (bundle / "models").symlink_to(tmp_path / "one")
    assert content_digest(bundle) == first
    (tmp_path / "one" / "up").symlink_to(bundle)  # a loop: models/up/models/up/...
    (bundle / "configs" / "self").symlink_to(".")
    (bundle / "configs" / "itself").symlink_to("itself")  # ELOOP on every look
    assert content_digest(bundle) == first  # links back to a folder it is in add nothing


def _long_folder(base: Path, queue_bytes: int) -> Path:
    """A folder under `base` (resolved) whose queue.sqlite has a full path of queue_bytes bytes."""
    folder = str(base.resolve())
    need = queue_bytes - len(os.fsencode(folder)) - len("/queue.sqlite")
    while need > 0:
        part = min(200, need - 1)
        folder += "/" + "q" * part
        need -= part + 1
    assert len(os.fsencode(folder + "/queue.sqlite")) == queue_bytes
    return Path(folder)


def test_the_sqlite_path_limit_is_the_one_sqlite_has(tmp_path):
    """The limit checked is where SQLite itself stops opening the queue (the last size
    that opens, one byte more does not); a relative path counts from the working folder."""
    fits, over = _long_folder(tmp_path / "a", SQLITE_PATH_LIMIT), _long_folder(tmp_path / "b", SQLITE_PATH_LIMIT + 1)
    for folder in (fits, over):
        folder.mkdir(parents=True)
    assert sqlite_path_problem(fits / "queue.sqlite") is None
    JobQueue(fits / "queue.sqlite").close()
    problem = sqlite_path_problem(over / "queue.sqlite")
    assert f"{SQLITE_PATH_LIMIT + 1} bytes" in problem and f"at most {SQLITE_PATH_LIMIT} bytes" in problem
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        JobQueue(over / "queue.sqlite")
    cwd = os.getcwd()
    os.chdir(over)
    try:
        assert sqlite_path_problem("queue.sqlite") is not None
    finally:
        os.chdir(cwd)


def test_serve_with_a_spool_too_long_for_sqlite_exits_78_naming_the_limit(tmp_path):
    """Was "unable to open database file", which names neither cause nor limit; now said
    before the spool folder is made."""
    spool = _long_folder(tmp_path, SQLITE_PATH_LIMIT + 20)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"spool": {"folder": str(spool)}, "listener": {"port": 0},
                                      "http": {"enabled": False}}))
    out = subprocess.run([sys.executable, "-m", "cfia.cli", "serve", "--config", str(config)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 78, out.stderr
    assert f"{SQLITE_PATH_LIMIT + 20} bytes" in out.stderr and f"at most {SQLITE_PATH_LIMIT} bytes" in out.stderr
    assert "spool.folder" in out.stderr and "Traceback" not in out.stderr
    assert not spool.exists()


def test_status_and_requeue_name_the_sqlite_path_limit(tmp_path, capsys):
    """A queue file at a path SQLite cannot open (made here directly) is one line naming the
    limit, exit 2, not "unable to open database file"."""
    from cfia import cli

    spool = _long_folder(tmp_path, SQLITE_PATH_LIMIT + 1)
    spool.mkdir(parents=True)
    (spool / "queue.sqlite").write_bytes(b"")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"spool": {"folder": str(spool)}}))
    for command in (["status"], ["requeue", "1"]):
        assert cli.main([*command, "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("cfia: error: ") and err.count("\n") == 1, err
        assert f"at most {SQLITE_PATH_LIMIT} bytes" in err and "unable to open" not in err


def test_a_long_written_path_to_a_short_folder_is_too_long_as_well(tmp_path):
    """SQLite builds the path as written and resolves a symlink only when it reaches it: a
    long path ending in a link to a short folder fails to open too."""
    short = tmp_path / "short"
    short.mkdir()
    link = _long_folder(tmp_path / "l", SQLITE_PATH_LIMIT + 40)
    link.parent.mkdir(parents=True)
    link.symlink_to(short)
    assert len(os.fsencode(str(link / "queue.sqlite"))) > SQLITE_PATH_LIMIT
    assert sqlite_path_problem(link / "queue.sqlite") is not None
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        JobQueue(link / "queue.sqlite")
