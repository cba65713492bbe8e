"""The spool folder: received images, built results, dead letters and the queue file.

Every file is written durably (temp file, fsync, atomic rename, fsync of the folder)
with mode 0600, so a C-STORE is acknowledged only once the image would survive a
power cut, and a reader never sees half a file.

    spool/
      incoming/<uuid>.dcm       received images waiting for (or in) processing
      results/<job id>/<type>.dcm  built result objects waiting to be sent
      dead-letter/<job id>/     source, results and reason.json of a failed job
      dead-letter/<job id>.requeued-<time>[-n]/  reason.json of a failed job sent back to the queue
                                (and its source while the requeue runs)
      dead-letter/<job id>.other-<time>/  a dead letter of another image under a reused job id
      queue.sqlite              the job queue (listener.jobqueue)
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Iterator, Optional, Sequence

import pydicom
from pydicom.dataset import Dataset

FILE_MODE = 0o600
DIR_MODE = 0o700


def write_durably(path: Path, data: bytes | Sequence[bytes | memoryview]) -> None:
    """Write `data` (bytes, or parts written one after another) to `path` so that it
    is either all there or not there at all."""
    parts = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            for part in parts:
                f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    """Make a rename or unlink in `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encode(ds: Dataset) -> bytes:
    buffer = BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


class Spool:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.incoming = self.root / "incoming"
        self.results = self.root / "results"
        self.dead_letter = self.root / "dead-letter"
        self.queue_file = self.root / "queue.sqlite"

    def create(self) -> "Spool":
        for folder in (self.root, self.incoming, self.results, self.dead_letter):
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(folder, DIR_MODE)
        return self

    def write_incoming(self, data: bytes | Sequence[bytes | memoryview]) -> Path:
        """Store one received image (as sent, file meta included; bytes or parts);
        returns its path."""
        path = self.incoming / f"{uuid.uuid4().hex}.dcm"
        write_durably(path, data)
        return path

    def write_results(self, job_id: int, results: dict[str, Dataset]) -> Path:
        """Store a job's result objects; returns their folder. Rewriting is harmless:
        result UIDs are deterministic, so a rerun writes the same objects."""
        folder = self.results / str(job_id)
        folder.mkdir(exist_ok=True, mode=DIR_MODE)
        try:
            for stale in folder.glob("*.dcm"):  # an earlier run's object this one does not build (outputs changed)
                if stale.stem not in results:
                    stale.unlink()
            for object_type, ds in results.items():
                write_durably(folder / f"{object_type}.dcm", encode(ds))
        except OSError:  # disk full: a partial set must neither be sent nor keep the space
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return folder

    @staticmethod
    def result_files(folder: str | Path) -> list[Path]:
        return sorted(Path(folder).glob("*.dcm"))

    def move_to_dead_letter(self, job_id: int, source: Path, results: Path | None, reason: dict) -> Path:
        """Keep a failed job's files with the reason; nothing is deleted."""
        folder = self.dead_letter / str(job_id)
        self._set_aside_another_image(folder, job_id, reason.get("sop_instance_uid"))
        folder.mkdir(exist_ok=True, mode=DIR_MODE)
        fsync_folder(self.dead_letter)  # the new folder's entry is durable before the source moves into it
        write_durably(folder / "reason.json", json.dumps(reason, indent=2).encode())
        if source.exists():
            os.rename(source, folder / "source.dcm")
            fsync_folder(source.parent)
        if results is not None and results.exists():
            # A requeue that crashed before retiring this folder left the earlier results:
            # these replace them (os.rename cannot replace a folder that is not empty).
            shutil.rmtree(folder / "results", ignore_errors=True)
            os.rename(results, folder / "results")
        fsync_folder(folder)
        return folder

    def retire_dead_letter(self, job_id: int, stamp: str) -> Path:
        """First step of a requeue, before the job can be claimed: dead-letter/<job id>/
        becomes dead-letter/<job id>.requeued-<stamp>/, the source still in it (results
        dropped). A worker that fails the requeued job again makes a new dead-letter/<job id>/
        that the rest of the requeue does not touch. A requeue that crashed after this step
        left the source in the retired folder: the next one takes it from there."""
        folder = self.dead_letter / str(job_id)
        if not (folder / "source.dcm").is_file():
            return self._retired_with_source(job_id, folder)
        shutil.rmtree(folder / "results", ignore_errors=True)
        return self._renamed_retired(folder, job_id, stamp)

    def retire_leftover_letter(self, job_id: int, stamp: str) -> Path:
        """dead-letter/<job id>/ of a job that went on without it: retired like a requeue's,
        its source and results dropped (the job has its own)."""
        folder = self.dead_letter / str(job_id)
        (folder / "source.dcm").unlink(missing_ok=True)
        shutil.rmtree(folder / "results", ignore_errors=True)
        return self._renamed_retired(folder, job_id, stamp)

    @staticmethod
    def letter_instance(folder: Path) -> Optional[str]:
        """The SOP Instance UID a dead letter's reason.json names; None when it names none or
        cannot be read. Folder names are job ids, which a restored backup or a new queue may
        give to other images."""
        try:
            return json.loads((folder / "reason.json").read_text()).get("sop_instance_uid")
        except (OSError, ValueError, AttributeError):
            return None

    def _set_aside_another_image(self, folder: Path, job_id: int, sop_instance_uid) -> None:
        """A dead letter of another image under this job id (a restored backup of dead-letter/
        beside a newer queue) is renamed <job id>.other-<time>/, not overwritten."""
        theirs = self.letter_instance(folder)
        if sop_instance_uid and theirs and theirs != sop_instance_uid:
            self._renamed_retired(folder, job_id, time.strftime("%Y%m%dT%H%M%S"), "other")

    def _renamed_retired(self, folder: Path, job_id: int, stamp: str, label: str = "requeued") -> Path:
        kept = folder.with_name(f"{job_id}.{label}-{stamp}")
        n = 1
        while kept.exists():  # requeued again within the same second: keep both reasons
            n += 1
            kept = folder.with_name(f"{job_id}.{label}-{stamp}-{n}")
        os.rename(folder, kept)
        fsync_folder(self.dead_letter)
        return kept

    def _retired_with_source(self, job_id: int, folder: Path) -> Path:
        retired = sorted(self.dead_letter.glob(f"{job_id}.requeued-*/source.dcm"), key=lambda p: p.stat().st_mtime)
        if not retired:
            raise FileNotFoundError(f"job {job_id} has no source in {folder}")
        return retired[-1].parent

    def restore_from_dead_letter(self, retired: Path) -> Path:
        """A hard link of a retired dead letter's source in incoming/, made durable; returns
        it. The retired copy stays until drop_retired_source(), so a crash at any point loses
        nothing (an unclaimed link is an orphan, removed at start-up)."""
        path = self.incoming / f"{uuid.uuid4().hex}.dcm"
        os.link(retired / "source.dcm", path)
        fsync_folder(self.incoming)
        return path

    def drop_retired_source(self, retired: Path) -> None:
        """Last step of a requeue, once the job is committed: incoming/ has the source."""
        (retired / "source.dcm").unlink(missing_ok=True)
        fsync_folder(retired)

    def retired_sources(self) -> list[tuple[int, Path]]:
        """(job id, source) left in retired dead letters by a requeue that crashed."""
        return [(int(p.parent.name.partition(".")[0]), p) for p in self.dead_letter.glob("*.requeued-*/source.dcm")]

    def remove(self, source: Path, results: Path | None) -> None:
        """Delete a finished job's files: called only after its results were sent."""
        source.unlink(missing_ok=True)
        if results is not None:
            shutil.rmtree(results, ignore_errors=True)

    @contextmanager
    def recovery_lock(self) -> Iterator[None]:
        """Held by `cfia serve` while it sweeps unacknowledged files from incoming/ at
        start-up, and by `cfia requeue` from linking a source into incoming/ until its job
        is committed: otherwise a starting server could take the new link for an orphan."""
        fd = os.open(self.root / "recover.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def locate(self, stored: str | Path) -> Path:
        """Where a path the queue recorded is now. The queue keeps absolute paths, but
        the spool may have moved since, or be reached under another name (a symlink,
        a relative folder made absolute): only <folder>/<name> below the root counts."""
        stored = Path(stored)
        return self.root / stored.parent.name / stored.name

    def stale_results(self, live_ids: set[int]) -> list[Path]:
        """Result folders of jobs that are done, failed or pruned: a crash between marking a
        job done and removing its files left them (a failed job's were moved first)."""
        return [p for p in self.results.iterdir()
                if p.is_dir() and p.name.isdigit() and int(p.name) not in live_ids]

    def orphans(self, known: set[str]) -> list[Path]:
        """Incoming files no job refers to: written, but the store was never
        acknowledged (crash between rename and commit), so the sender will resend."""
        owned = {self.locate(path) for path in known}
        return [p for p in self.incoming.iterdir() if p not in owned]
