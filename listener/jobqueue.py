"""The durable job queue: one row per received image, in SQLite in the spool folder.

States (a job moves only forward, except back to a waiting state on a retry):

    pending  received; its association is still open (study not complete yet)
    queued   ready for a worker (association released, or quiet for N seconds)
    running  a worker holds it (`owner`); processing or sending
    sending  results are built and on disk; waiting to be (re)sent
    done     results delivered to every destination; spool files removed
    failed   gave up; files are in the dead-letter folder with the reason

Every change is one transaction (WAL, synchronous=FULL), so after a crash the table
says exactly which step each job reached: `running` rows of a dead owner go back to
`queued` (no results yet) or `sending` (results on disk), and nothing that reached
`done` is repeated. Several processes share the file; each opens its own JobQueue.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from .spool import FILE_MODE

STATES = ("pending", "queued", "running", "sending", "done", "failed")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    state TEXT NOT NULL,
    batch TEXT NOT NULL,              -- the association that delivered it
    path TEXT NOT NULL,               -- source image in the spool
    sop_instance_uid TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    sop_class_uid TEXT NOT NULL,
    calling_ae TEXT NOT NULL,
    received_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    not_before REAL NOT NULL DEFAULT 0,   -- retry time after a failure
    attempts INTEGER NOT NULL DEFAULT 0,  -- processing attempts started
    send_attempts INTEGER NOT NULL DEFAULT 0,  -- sends tried (backoff)
    refusals INTEGER NOT NULL DEFAULT 0,       -- sends a destination answered with a failure status
    owner TEXT,                           -- worker holding a running job
    results TEXT,                         -- folder of the built results
    delivered TEXT NOT NULL DEFAULT '[]', -- destinations that have the results
    given_up TEXT NOT NULL DEFAULT '{}',  -- destination -> why it will not get them (not sent again)
    refused_by TEXT NOT NULL DEFAULT '{}',  -- destination -> its failure-status answers (max_retries each)
    explain_seconds REAL,
    finished_at REAL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, id);
CREATE INDEX IF NOT EXISTS jobs_uid ON jobs (sop_instance_uid, state);
-- claim() finds rows stamped in the future (a wall clock stepped back) without a scan.
CREATE INDEX IF NOT EXISTS jobs_changed ON jobs (state, updated_at);
-- What pruned done rows (and requeued failed ones) contributed to the all-time
-- metrics, so they never go down.
CREATE TABLE IF NOT EXISTS pruned_totals (key TEXT PRIMARY KEY, value REAL NOT NULL);
"""

RESEND_PRIORITY_SECONDS = 60.0  # a resend waiting this long past its time is taken by age

# Upper bounds (seconds) of the explain-time histogram the metrics endpoint serves.
EXPLAIN_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300)

# SET clause taking back the attempt claim() counted, when its parameter is true. claim()
# counts one only when it takes a job without results (state queued), the state it
# goes back to.
_REFUND = "attempts = attempts - (CASE WHEN ? AND results IS NULL AND attempts > 0 THEN 1 ELSE 0 END)"


def _open_read_only(path: Path) -> sqlite3.Connection:
    """Open the queue without writing. SQLite reads a WAL database through its -shm
    file; on a read-only file system it cannot create one, and with no -wal file beside
    it the database file holds every change and nobody can change it: open it as
    immutable then."""
    uri = path.resolve().as_uri()
    for mode in ("mode=ro", "immutable=1"):
        db = sqlite3.connect(f"{uri}?{mode}", uri=True, timeout=60, check_same_thread=False)
        try:
            db.execute("SELECT count(*) FROM jobs").fetchone()  # SQLite opens lazily: fail here
            return db
        except sqlite3.OperationalError:
            db.close()
            if mode != "mode=ro" or Path(f"{path}-wal").exists():
                raise


@dataclass(frozen=True)
class Job:
    id: int
    state: str
    path: str
    sop_instance_uid: str
    study_instance_uid: str
    sop_class_uid: str
    calling_ae: str
    attempts: int
    send_attempts: int
    refusals: int
    results: Optional[str]
    delivered: tuple[str, ...]
    error: Optional[str]
    given_up: tuple[tuple[str, str], ...] = ()  # (destination, reason): refused for good, not sent again

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> "Job":
        return cls(
            id=row["id"], state=row["state"], path=row["path"],
            sop_instance_uid=row["sop_instance_uid"], study_instance_uid=row["study_instance_uid"],
            sop_class_uid=row["sop_class_uid"], calling_ae=row["calling_ae"],
            attempts=row["attempts"], send_attempts=row["send_attempts"], refusals=row["refusals"],
            results=row["results"],
            delivered=tuple(json.loads(row["delivered"])), error=row["error"],
            given_up=tuple(sorted(json.loads(row["given_up"]).items())),
        )


class JobQueue:
    def __init__(self, path: str | Path, quiet_seconds: float = 30.0, clock=time.time, read_only: bool = False,
                 busy_seconds: float = 60.0):
        """`read_only` (`cfia status`): open an existing queue without writing anything,
        so a spool on a read-only file system can still be read. `busy_seconds`: how long
        a write waits for another process's write lock before it fails."""
        self.path = Path(path)
        self.read_only = read_only
        self.quiet_seconds = quiet_seconds
        self._clock = clock
        self._lock = threading.Lock()  # one connection, shared by the SCP's threads
        if read_only:
            self._db = _open_read_only(self.path)
            self._db.row_factory = sqlite3.Row
            return
        # Owner-only, like the spooled images (UIDs and AE titles are in it); SQLite gives
        # its -wal and -shm files the database file's mode.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE))
        self._db = sqlite3.connect(self.path, timeout=busy_seconds, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # an acknowledged image survives a power cut
        self._db.executescript(SCHEMA)
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """A queue file written by an older cfia lacks the columns added since."""
        have = {row["name"] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "refusals" not in have:
            self._db.execute("ALTER TABLE jobs ADD COLUMN refusals INTEGER NOT NULL DEFAULT 0")
        if "given_up" not in have:
            self._db.execute("ALTER TABLE jobs ADD COLUMN given_up TEXT NOT NULL DEFAULT '{}'")
        if "refused_by" not in have:
            self._db.execute("ALTER TABLE jobs ADD COLUMN refused_by TEXT NOT NULL DEFAULT '{}'")

    def close(self) -> None:
        """A writer moves the WAL into the database file first, so that a stopped node's
        queue.sqlite alone holds every job (the documented backup copies only that file);
        a reader still open elsewhere may keep it from finishing, which loses nothing."""
        with self._lock:
            if not self.read_only:
                try:
                    # TRUNCATE holds the write lock while it waits for readers: with a busy timeout
                    # of 0 it gives up at once instead of making the listener's stores wait.
                    self._db.execute("PRAGMA busy_timeout = 0")
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error:
                    pass
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- the listener's side -------------------------------------------------

    def add(self, path: str, sop_instance_uid: str, study_instance_uid: str, sop_class_uid: str,
            calling_ae: str, batch: str) -> tuple[int, Optional[str]]:
        """Record a received image. A resend of an image that is still waiting, by the
        same caller, replaces it (same job, new file); returns (job id, the replaced file
        or None). Another caller's copy is a job of its own: the results go back to each
        caller that sent it (return_to_sender), not only to the last."""
        now = self._clock()
        with self._tx() as db:
            row = db.execute(
                "SELECT id, path FROM jobs WHERE sop_instance_uid = ? AND calling_ae = ? "
                "AND state IN ('pending', 'queued')",
                (sop_instance_uid, calling_ae),
            ).fetchone()
            if row is not None:
                db.execute("UPDATE jobs SET path = ?, batch = ?, state = 'pending', "
                           "received_at = ?, updated_at = ? WHERE id = ?",
                           (path, batch, now, now, row["id"]))
                return row["id"], row["path"]
            cur = db.execute(
                "INSERT INTO jobs (state, batch, path, sop_instance_uid, study_instance_uid, sop_class_uid, "
                "calling_ae, received_at, updated_at) VALUES ('pending', ?, ?, ?, ?, ?, ?, ?, ?)",
                (batch, path, sop_instance_uid, study_instance_uid, sop_class_uid, calling_ae, now, now),
            )
            return cur.lastrowid, None

    def close_batch(self, batch: str) -> int:
        """The association ended (released or aborted): its images are ready."""
        with self._tx() as db:
            return db.execute("UPDATE jobs SET state = 'queued', updated_at = ? WHERE batch = ? AND state = 'pending'",
                              (self._clock(), batch)).rowcount

    def close_all_batches(self) -> int:
        """At start-up: no association of a previous run is still open."""
        with self._tx() as db:
            return db.execute("UPDATE jobs SET state = 'queued', updated_at = ? WHERE state = 'pending'",
                              (self._clock(),)).rowcount

    # -- the workers' side ---------------------------------------------------

    def claim(self, owner: str) -> Optional[Job]:
        """Take the oldest job that is ready to process, else the oldest ready to resend:
        resends to a destination that hangs cost a timeout each, and must not hold back
        new images (which reach the destinations that work as soon as they are explained).
        A resend ready for RESEND_PRIORITY_SECONDS takes its turn among new images by age,
        so a steady stream of new images does not hold it back for ever."""
        now = self._clock()
        with self._tx() as db:
            _undo_clock_step_back(db, now)
            self._promote_quiet_batches(db, now)
            row = db.execute(
                "SELECT * FROM jobs WHERE state IN ('queued', 'sending') AND not_before <= ? "
                "ORDER BY state = 'sending' AND not_before > ?, id LIMIT 1",
                (now, now - RESEND_PRIORITY_SECONDS),
            ).fetchone()
            if row is None:
                return None
            attempts = row["attempts"] + (1 if row["state"] == "queued" else 0)
            db.execute("UPDATE jobs SET state = 'running', owner = ?, attempts = ?, updated_at = ? WHERE id = ?",
                       (owner, attempts, now, row["id"]))
            return dataclasses.replace(Job.from_row(row), attempts=attempts)

    def _promote_quiet_batches(self, db: sqlite3.Connection, now: float) -> None:
        db.execute(
            "UPDATE jobs SET state = 'queued', updated_at = ? WHERE state = 'pending' AND batch IN "
            "(SELECT batch FROM jobs WHERE state = 'pending' GROUP BY batch HAVING max(received_at) <= ?)",
            (now, now - self.quiet_seconds),
        )

    def set_results(self, job_id: int, results: str, explain_seconds: float) -> None:
        """Results are on disk: from now on a crash resumes with sending, not processing.
        A job explained before (requeued, results lost) keeps its earlier time in the
        all-time totals: the explain histogram counts explanations and never goes down."""
        with self._tx() as db:
            earlier = db.execute("SELECT explain_seconds FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if earlier is not None and earlier[0] is not None:
                _add_to_totals(db, _explain_totals([earlier[0]]))
            db.execute("UPDATE jobs SET results = ?, explain_seconds = ?, error = NULL, updated_at = ? WHERE id = ?",
                       (results, explain_seconds, self._clock(), job_id))

    def add_delivered(self, job_id: int, destination: str) -> None:
        with self._tx() as db:
            row = db.execute("SELECT delivered FROM jobs WHERE id = ?", (job_id,)).fetchone()
            names = sorted(set(json.loads(row["delivered"])) | {destination})
            db.execute("UPDATE jobs SET delivered = ?, updated_at = ? WHERE id = ?",
                       (json.dumps(names), self._clock(), job_id))

    def give_up(self, job_id: int, destination: str, reason: str) -> None:
        """`destination` will not take the results (rejected, or refusals exhausted): it is
        not sent them again; the job still goes to the destinations that are down."""
        self._update_per_destination(job_id, "given_up", destination, lambda _: reason)

    def count_refusal(self, job_id: int, destination: str) -> int:
        """One more failure-status answer from `destination` for this job; returns its count.
        Each destination gets its own max_retries: the job's `refusals` is only their total."""
        return self._update_per_destination(job_id, "refused_by", destination, lambda n: (n or 0) + 1)

    def _update_per_destination(self, job_id: int, column: str, destination: str, new):
        """Set `destination`'s entry of a JSON map column (given_up, refused_by) to new(old);
        returns it."""
        with self._tx() as db:
            values = json.loads(db.execute(f"SELECT {column} FROM jobs WHERE id = ?", (job_id,)).fetchone()[0])
            values[destination] = new(values.get(destination))
            db.execute(f"UPDATE jobs SET {column} = ?, updated_at = ? WHERE id = ?",
                       (json.dumps(values, sort_keys=True), self._clock(), job_id))
            return values[destination]

    def finish(self, job_id: int) -> None:
        now = self._clock()
        with self._tx() as db:
            db.execute("UPDATE jobs SET state = 'done', owner = NULL, error = NULL, finished_at = ?, updated_at = ? "
                       "WHERE id = ?", (now, now, job_id))

    def prune_done(self, older_than_seconds: float) -> int:
        """Delete the rows of jobs that finished more than `older_than_seconds` ago.

        A done job's files are already gone and a resend makes a new job, so its row
        is only history (metrics, `cfia status`); without pruning the table grows
        by one row per image for ever. Failed jobs stay: they name dead letters."""
        cutoff = self._clock() - older_than_seconds
        old = "FROM jobs WHERE state = 'done' AND finished_at < ?"
        with self._tx() as db:
            seconds = [r[0] for r in db.execute(f"SELECT explain_seconds {old}", (cutoff,)).fetchall()]
            if not seconds:  # nothing to prune: write nothing (a full disk must not stop the node)
                return 0
            _add_to_totals(db, {"done": len(seconds), **_explain_totals([v for v in seconds if v is not None])})
            return db.execute(f"DELETE {old}", (cutoff,)).rowcount

    def retry_later(self, job_id: int, error: str, delay: float, sending: bool = False,
                    refused: bool = False, refund_attempt: bool = False) -> None:
        """Give the job back to wait `delay` seconds; back to `sending` when its
        results are on disk, else to `queued`. `sending`: a send was tried (the
        destination down, or, with `refused`, answering with a failure status).
        `refund_attempt`: the attempt failed for a cause outside the job (a full disk),
        so it does not count toward max_retries."""
        now = self._clock()
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state = CASE WHEN results IS NULL THEN 'queued' ELSE 'sending' END, "
                f"owner = NULL, error = ?, not_before = ?, send_attempts = send_attempts + ?, {_REFUND}, "
                "refusals = refusals + ?, updated_at = ? WHERE id = ?",
                (error, now + delay, 1 if sending else 0, refund_attempt, 1 if refused else 0, now, job_id),
            )

    def fail(self, job_id: int, error: str, sending: bool = False, refused: bool = False) -> None:
        """`sending`, `refused`: the send that made the job fail, counted as retry_later counts it."""
        now = self._clock()
        with self._tx() as db:
            db.execute("UPDATE jobs SET state = 'failed', owner = NULL, error = ?, finished_at = ?, updated_at = ?, "
                       "send_attempts = send_attempts + ?, refusals = refusals + ? WHERE id = ?",
                       (error, now, now, int(sending), int(refused), job_id))

    def requeue_failed(self, job_id: int, path: str) -> bool:
        """Send a failed job back to the queue with its source at `path`: attempts
        reset, results to be rebuilt; destinations that already have them are kept,
        so they are not sent again; those given up on are tried again (the cause was
        fixed). False when the job is not failed."""
        with self._tx() as db:
            requeued = db.execute(
                "UPDATE jobs SET state = 'queued', path = ?, attempts = 0, send_attempts = 0, refusals = 0, "
                "given_up = '{}', refused_by = '{}', results = NULL, owner = NULL, not_before = 0, error = NULL, "
                "finished_at = NULL, updated_at = ? WHERE id = ? AND state = 'failed'",
                (path, self._clock(), job_id)).rowcount == 1
            if requeued:  # the failure still happened: cfia_failed_total must not go down
                db.execute("INSERT INTO pruned_totals (key, value) VALUES ('requeued', 1) "
                           "ON CONFLICT (key) DO UPDATE SET value = value + 1")
            return requeued

    def drop_results(self, job_id: int, error: str, refund_attempt: bool = False) -> None:
        """The job's results are gone or built under other outputs: back to `queued`, to be
        explained again. `refund_attempt` when they were built by an earlier claim (the job was
        taken to be sent): not the job's failure, so the claim that explains it again is
        refunded (one whose explanation had used its retries was dead-lettered as poison). Not
        for results this claim built: a processor that never builds an output would loop."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET state = 'queued', results = NULL, owner = NULL, not_before = 0, "
                       "attempts = attempts - (CASE WHEN ? AND attempts > 0 THEN 1 ELSE 0 END), error = ?, "
                       "updated_at = ? WHERE id = ?", (refund_attempt, error, self._clock(), job_id))

    def failed_ids(self) -> list[int]:
        with self._lock:
            return [row["id"] for row in self._db.execute("SELECT id FROM jobs WHERE state = 'failed' ORDER BY id")]

    def requeue_running(self, owner: Optional[str] = None, refund_attempt: bool = False) -> int:
        """Give back the jobs of a dead worker (`owner`), or of every worker at
        start-up (None): to `sending` if their results are on disk, else `queued`.
        The claim's attempt still counts (a worker that died on a job may die on it
        again: poison), unless `refund_attempt`: the worker was stopped, not killed by
        the job."""
        where, args = ("state = 'running'", ()) if owner is None else ("state = 'running' AND owner = ?", (owner,))
        with self._tx() as db:
            return db.execute(
                "UPDATE jobs SET state = CASE WHEN results IS NULL THEN 'queued' ELSE 'sending' END, "
                f"owner = NULL, not_before = 0, {_REFUND}, "
                "error = CASE WHEN ? OR results IS NOT NULL THEN error ELSE 'worker died while processing' END, "
                "updated_at = ? "
                f"WHERE {where}",
                (refund_attempt, refund_attempt, self._clock(), *args),
            ).rowcount

    # -- reading -------------------------------------------------------------

    def get(self, job_id: int) -> Optional[Job]:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else Job.from_row(row)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return self._counts()

    def _counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT state, count(*) AS n FROM jobs GROUP BY state").fetchall()
        counts = dict.fromkeys(STATES, 0)
        counts.update({row["state"]: row["n"] for row in rows})
        return counts

    def paths(self) -> set[str]:
        """Source files of jobs that still own one (everything not done or failed)."""
        return self._of_live_jobs("path")

    def live_ids(self) -> set[int]:
        """Jobs that may still write, send or dead-letter results (everything not done or failed)."""
        return self._of_live_jobs("id")

    def _of_live_jobs(self, column: str) -> set:
        with self._lock:
            rows = self._db.execute(f"SELECT {column} FROM jobs WHERE state NOT IN ('done', 'failed')").fetchall()
        return {row[0] for row in rows}

    def recent_errors(self, limit: int = 5) -> list[dict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, state, sop_instance_uid, attempts, send_attempts, error, updated_at FROM jobs "
                "WHERE error IS NOT NULL ORDER BY updated_at DESC LIMIT ?", (limit,)).fetchall()
        return [dict(row) for row in rows]

    def throughput(self, since: float) -> dict[str, float]:
        """Jobs finished since `since` and their explain time."""
        with self._lock:
            row = self._db.execute(
                "SELECT count(*) AS done, avg(explain_seconds) AS mean_explain FROM jobs "
                "WHERE state = 'done' AND finished_at >= ?", (since,)).fetchone()
        return {"done": row["done"], "mean_explain_seconds": row["mean_explain"] or 0.0}

    def _pruned_totals(self) -> dict[str, float]:
        """What pruned rows added to the all-time totals (keys as prune_done writes them)."""
        return {row[0]: row[1] for row in self._db.execute("SELECT key, value FROM pruned_totals")}

    def metrics_snapshot(self) -> tuple[dict[str, int], dict[str, float], dict]:
        """The job counts by state, what pruned rows added to the all-time totals, and the
        all-time explain times, pruned jobs included ({"buckets": [(bound, count <= bound)],
        "count", "sum"}, the bounds being EXPLAIN_BUCKETS), from one read transaction: a
        prune or a `cfia requeue` committing between them counted rows twice or not at all."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                return self._counts(), self._pruned_totals(), self._explain_histogram()
            finally:
                self._db.execute("COMMIT")

    def _explain_histogram(self) -> dict:
        """One aggregate in SQLite: fetching every row's time and counting in Python took
        0.4-1.3 s at 300,000 rows, under the lock the C-STORE handler waits on."""
        count, total, *le = self._db.execute(_HISTOGRAM_SQL).fetchone()
        pruned = self._pruned_totals()
        return {"buckets": [(b, int(n) + int(pruned.get(f"explain_le_{b}", 0))) for b, n in zip(EXPLAIN_BUCKETS, le)],
                "count": int(count) + int(pruned.get("explain_count", 0)),
                "sum": float(total) + pruned.get("explain_sum", 0.0)}


def _undo_clock_step_back(db: sqlite3.Connection, now: float) -> None:
    """Undo a backward step of the wall clock (NTP, `date -s`) for the rows still waiting.
    Stamps written before the step lie in the future: a retry's not_before held its job, and
    a pending image's received_at its study's quiet period, back by the size of the step,
    across restarts too. A row last changed after `now` can only come from such a step: its
    retry waits its delay again from now (retry_later writes not_before and updated_at
    together), and its quiet period restarts (add writes received_at and updated_at together)."""
    db.execute(
        "UPDATE jobs SET received_at = min(received_at, ?), "
        "not_before = CASE WHEN not_before > ? THEN ? + max(0, not_before - updated_at) ELSE not_before END, "
        "updated_at = ? WHERE state IN ('pending', 'queued', 'sending') AND updated_at > ?",
        (now, now, now, now, now),
    )


_HISTOGRAM_SQL = ("SELECT count(*), total(explain_seconds), "
                  + ", ".join(f"total(explain_seconds <= {b})" for b in EXPLAIN_BUCKETS)
                  + " FROM jobs WHERE explain_seconds IS NOT NULL")


def _explain_totals(seconds: list[float]) -> dict[str, float]:
    """Explain times as the all-time totals' keys: count, sum and one count per bucket."""
    return {"explain_count": len(seconds), "explain_sum": sum(seconds),
            **{f"explain_le_{b}": sum(v <= b for v in seconds) for b in EXPLAIN_BUCKETS}}


def _add_to_totals(db: sqlite3.Connection, add: dict[str, float]) -> None:
    db.executemany("INSERT INTO pruned_totals (key, value) VALUES (?, ?) "
                   "ON CONFLICT (key) DO UPDATE SET value = value + excluded.value", add.items())
