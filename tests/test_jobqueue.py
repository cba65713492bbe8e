"""listener.jobqueue: states, quiet period, crash recovery, resends."""
from __future__ import annotations

import json
import os
import pytest

from listener import JobQueue
from node_helpers import dead_letter_job


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def queue(tmp_path):
    clock = Clock()
    q = JobQueue(tmp_path / "q.sqlite", quiet_seconds=30, clock=clock)
    q.clock = clock
    yield q
    q.close()


def _add(q, uid="1.2.3", batch="a"):
    return q.add(f"/spool/{uid}.dcm", uid, "1.2", "1.2.840.10008.5.1.4.1.1.1.2", "MOD", batch)[0]


def test_pending_until_batch_closes_or_quiet(queue):
    _add(queue, "1.1", "a")
    _add(queue, "1.2", "b")
    assert queue.claim("w") is None
    assert queue.close_batch("a") == 1
    assert queue.claim("w").sop_instance_uid == "1.1"
    queue.clock.now += 29
    assert queue.claim("w") is None
    queue.clock.now += 2  # batch b was quiet for 31 s: complete
    assert queue.claim("w").sop_instance_uid == "1.2"


def test_the_quiet_period_runs_from_an_open_associations_last_image(queue):
    """README: a study still arriving is not explained piecemeal; the quiet period counts from
    the association's last image, not its first."""
    _add(queue, "2.1", "c")
    queue.clock.now += 20
    _add(queue, "2.2", "c")
    queue.clock.now += 20  # 40 s after the first image, 20 s after the last
    assert queue.claim("w") is None
    queue.clock.now += 11
    assert {queue.claim("w").sop_instance_uid, queue.claim("w").sop_instance_uid} == {"2.1", "2.2"}


def test_resend_while_waiting_replaces_the_file(queue):
    first = _add(queue)
    job, replaced = queue.add("/spool/new.dcm", "1.2.3", "1.2", "x", "MOD", "b")
    assert job == first and replaced == "/spool/1.2.3.dcm"
    assert queue.get(job).path == "/spool/new.dcm"  # the job now reads the new file
    assert sum(queue.counts().values()) == 1


def test_the_same_image_from_another_caller_waits_as_a_job_of_its_own(queue):
    """A workstation's push and a PACS's forward of the same image within the quiet time:
    the second took the first's job over, so its results went to the PACS only (or, for a
    caller without a destination, to the dead-letter folder)."""
    first = _add(queue)
    job, replaced = queue.add("/spool/forwarded.dcm", "1.2.3", "1.2", "x", "PACS", "b")
    assert job != first and replaced is None
    assert (queue.get(first).calling_ae, queue.get(job).calling_ae) == ("MOD", "PACS")
    assert queue.get(first).path == "/spool/1.2.3.dcm"


def test_crash_recovery_resumes_at_the_right_step(queue):
    a, b = _add(queue, "1.1"), _add(queue, "1.2")
    queue.close_all_batches()
    assert queue.claim("w1").id == a
    assert queue.claim("w2").id == b
    queue.set_results(b, "/spool/results/2", 1.5)
    assert queue.requeue_running("w1") == 1
    assert queue.get(a).state == "queued" and queue.get(b).state == "running"
    assert queue.requeue_running() == 1
    assert queue.get(b).state == "sending"
    again = queue.claim("w3")
    assert again.id == a and again.attempts == 2  # processing attempts count claims
    sending = queue.claim("w3")
    assert sending.id == b and sending.attempts == 1 and sending.results == "/spool/results/2"


def test_new_images_are_taken_before_resends(queue):
    """A resend to a destination that hangs costs a timeout; older jobs waiting to be
    resent held a new image back for minutes."""
    old = _add(queue, "1.1")
    queue.close_all_batches()
    queue.claim("w")
    queue.set_results(old, "/r", 1.0)
    queue.retry_later(old, "destination down", 0, sending=True)
    new = _add(queue, "1.2", "b")
    queue.close_all_batches()
    assert queue.claim("w").id == new
    assert queue.claim("w").id == old


def test_a_resend_waiting_long_enough_takes_its_turn_among_new_images(queue):
    """New images first, but not for ever: under a steady stream (a bulk push) a resend
    ready for a minute is taken by age, or its results would wait for hours."""
    from listener.jobqueue import RESEND_PRIORITY_SECONDS

    old = _add(queue, "1.1")
    queue.close_all_batches()
    queue.claim("w")
    queue.set_results(old, "/r", 1.0)
    queue.retry_later(old, "destination down", 0, sending=True)
    queue.clock.now += RESEND_PRIORITY_SECONDS + 1
    _add(queue, "1.2", "b")
    queue.close_all_batches()
    assert queue.claim("w").id == old


def test_a_requeue_gives_the_attempt_back_only_when_asked(queue):
    """A clean stop requeues with refund_attempt (the job did not kill its worker); a
    worker that died keeps the attempt counted, so a poison job still ends; a job with
    results on disk was not counted by its claim and gets nothing back."""
    a, b = _add(queue, "1.1"), _add(queue, "1.2")
    queue.close_all_batches()
    queue.claim("stopped")
    queue.claim("died")
    assert queue.requeue_running("stopped", refund_attempt=True) == 1
    assert queue.requeue_running("died") == 1
    assert (queue.get(a).attempts, queue.get(b).attempts) == (0, 1)
    queue.claim("stopped")
    queue.set_results(a, "/r", 1.0)
    queue.requeue_running("stopped", refund_attempt=True)
    assert queue.get(a).state == "sending" and queue.get(a).attempts == 1


def test_status_reads_a_queue_without_writing_it(tmp_path):
    """`cfia status` opens the queue read-only: it must work where the spool cannot be written."""
    import sqlite3

    q = JobQueue(tmp_path / "q.sqlite")
    q.add("/spool/a.dcm", "1.2.3", "1.2", "x", "MOD", "b")
    q.close()
    ro = JobQueue(tmp_path / "q.sqlite", read_only=True)
    try:
        assert ro.counts()["pending"] == 1
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            ro.close_batch("b")
    finally:
        ro.close()


def test_a_closed_writer_leaves_every_job_in_the_database_file(tmp_path):
    """The backup copies queue.sqlite of a stopped node: the jobs were left in queue.sqlite-wal
    when a reader (/healthz's, or a `cfia status`) was still open as the writer closed."""
    import shutil
    import sqlite3

    q = JobQueue(tmp_path / "q.sqlite")
    reader = JobQueue(tmp_path / "q.sqlite", read_only=True)
    q.add("/spool/a.dcm", "1.2.3", "1.2", "x", "MOD", "b")
    assert reader.counts()["pending"] == 1
    q.close()
    (tmp_path / "copy").mkdir()
    shutil.copy(tmp_path / "q.sqlite", tmp_path / "copy" / "q.sqlite")  # the database file alone
    reader.close()
    db = sqlite3.connect(tmp_path / "copy" / "q.sqlite")
    try:
        assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1
    finally:
        db.close()


def test_closing_a_queue_does_not_hold_the_listeners_stores_behind_a_reader(tmp_path):
    """The checkpoint on close waited, holding the write lock, for a reader's transaction (an
    operator's sqlite3 session, a backup): a C-STORE meanwhile was refused after its 10 s."""
    import sqlite3
    import threading

    listener = JobQueue(tmp_path / "q.sqlite", busy_seconds=2)
    worker = JobQueue(tmp_path / "q.sqlite", busy_seconds=30)
    _add(worker, "1.1")
    reader = sqlite3.connect(tmp_path / "q.sqlite", isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM jobs").fetchone()  # holds a read transaction
    closing = threading.Thread(target=worker.close)
    closing.start()
    try:
        closing.join(10)  # it waited up to its busy timeout (30 s) for the reader, holding the lock
        assert not closing.is_alive(), "close waits for a reader's transaction"
        _add(listener, "1.2")  # refused with "database is locked" while the close held the lock
    finally:
        reader.execute("ROLLBACK")
        reader.close()
        closing.join(60)
        listener.close()


def test_retry_later_waits_and_finish_counts(queue):
    a = _add(queue)
    queue.close_batch("a")
    queue.claim("w")
    queue.set_results(a, "/r", 2.0)
    queue.retry_later(a, "destination down", 10, sending=True)
    assert queue.claim("w") is None
    queue.clock.now += 11
    job = queue.claim("w")
    assert job.send_attempts == 1 and job.error == "destination down"
    queue.add_delivered(a, "pacs")
    queue.finish(a)
    assert queue.counts()["done"] == 1
    hist = queue.metrics_snapshot()[2]
    assert queue.throughput(0)["done"] == 1 and (hist["count"], hist["sum"]) == (1, 2.0)
    assert dict(hist["buckets"])[1] == 0 and dict(hist["buckets"])[2] == 1
    assert queue.recent_errors() == []  # finishing clears the error


STEP_BACK = 3 * 3600.0  # an NTP step: the wall clock set back 3 hours


def test_a_clock_stepped_back_holds_a_retry_no_longer_than_its_delay(queue):
    """The retry times were stamped before the step: they waited 3 h more, across restarts."""
    resend, reprocess = _add(queue, "1.1"), _add(queue, "1.2")
    queue.close_batch("a")
    for _ in range(2):
        queue.claim("w")
    queue.set_results(resend, "/r", 2.0)
    queue.retry_later(resend, "destination down", 300, sending=True)
    queue.retry_later(reprocess, "RuntimeError: transient GPU error", 60)
    queue.clock.now -= STEP_BACK
    assert queue.claim("w") is None  # each still waits its delay, from now
    queue.clock.now += 61
    assert queue.claim("w").id == reprocess
    assert queue.claim("w") is None
    queue.clock.now += 240
    assert queue.claim("w").id == resend


def test_a_clock_stepped_back_restarts_an_open_associations_quiet_period(queue):
    """The images' receipt times lay 3 h ahead: the study stayed pending for 3 h."""
    _add(queue, "1.1", "a")
    queue.clock.now -= STEP_BACK
    assert queue.claim("w") is None
    queue.clock.now += 29
    assert queue.claim("w") is None
    queue.clock.now += 2  # quiet for 31 s since the step
    assert queue.claim("w").sop_instance_uid == "1.1"


def test_prune_done_deletes_only_old_delivered_jobs(queue):
    old, recent, failed, waiting = (_add(queue, uid) for uid in ("1.1", "1.2", "1.3", "1.4"))
    queue.close_batch("a")
    for job in (old, recent, failed):
        queue.claim("w")
    queue.finish(old)
    queue.fail(failed, "bad image")
    queue.clock.now += 100
    queue.finish(recent)
    queue.clock.now += 50  # old finished 150 s ago, recent 50 s ago
    assert queue.prune_done(100) == 1
    assert queue.get(old) is None
    assert queue.get(recent).state == "done"
    assert queue.get(failed).state == "failed" and queue.get(waiting).state == "queued"
    assert queue.prune_done(100) == 0


def test_metrics_never_go_down_when_done_jobs_are_pruned(queue):
    from cfia.status import prometheus

    for i, seconds in enumerate((0.5, 3.0, 40.0)):
        job = _add(queue, f"1.{i}")
        queue.close_batch("a")
        queue.claim("w")
        queue.set_results(job, "/r", seconds)
        queue.finish(job)
    queue.clock.now += 10
    kept = _add(queue, "1.9")  # still waiting: counted as received, never pruned
    before = prometheus(queue, {}, 1)
    assert "cfia_processed_total 3" in before and 'cfia_explain_seconds_bucket{le="5"} 2' in before
    assert queue.prune_done(5) == 3 and queue.counts()["done"] == 0
    assert prometheus(queue, {}, 1) == before
    assert queue.get(kept).state == "pending"


def test_an_image_explained_twice_counts_twice_and_no_bucket_goes_down(queue):
    """Results lost (or a failed job requeued) -> explained again: the histogram is of
    explanations; overwriting the first time took a count out of its bucket."""
    from cfia.status import prometheus

    job = _add(queue)
    queue.close_batch("a")
    queue.claim("w")
    queue.set_results(job, "/r", 0.5)
    first = prometheus(queue, {}, 1)
    assert 'cfia_explain_seconds_bucket{le="1"} 1' in first
    queue.drop_results(job, "results folder missing")
    queue.claim("w")
    queue.set_results(job, "/r", 3.0)
    again = prometheus(queue, {}, 1)
    assert 'cfia_explain_seconds_bucket{le="1"} 1' in again and 'cfia_explain_seconds_bucket{le="5"} 2' in again
    assert "cfia_explain_seconds_count 2" in again and "cfia_explain_seconds_sum 3.5" in again


def test_metrics_are_read_from_one_state_of_the_queue(tmp_path):
    """A prune committed by another connection between the metric's reads counted the
    pruned jobs twice (as rows and as pruned totals): received 3 -> 6 -> 3."""
    from cfia.status import prometheus

    clock = Clock()

    class PrunedMidRead(JobQueue):
        def _prune_once(self):
            if not getattr(self, "pruned", False):
                self.pruned = True
                other = JobQueue(self.path, clock=clock)
                assert other.prune_done(5) == 3
                other.close()

        def counts(self):  # the read the metric starts with, however it is made
            result = super().counts()
            self._prune_once()
            return result

        def _counts(self):
            result = super()._counts()
            self._prune_once()
            return result

    q = PrunedMidRead(tmp_path / "q.sqlite", quiet_seconds=30, clock=clock)
    for i in range(3):
        job = _add(q, f"1.{i}")
        q.close_batch("a")
        q.claim("w")
        q.set_results(job, "/r", 1.0)
        q.finish(job)
    clock.now += 10
    text = prometheus(q, {}, 1)
    assert "cfia_received_total 3" in text and "cfia_explain_seconds_count 3" in text, text
    assert "cfia_received_total 3" in prometheus(q, {}, 1)  # after the prune, the same
    q.close()


@pytest.mark.parametrize("days, kept", [(30, {"recent"}), (0, {"recent", "old"})])
def test_node_prunes_done_jobs_after_keep_done_days(tmp_path, days, kept):
    from cfia.config import from_dict
    from cfia.serve import Node

    node = Node(from_dict({"spool": {"folder": str(tmp_path / "spool"), "keep_done_days": days}}, tmp_path))
    clock = Clock()
    node.queue = JobQueue(tmp_path / "q.sqlite", clock=clock)
    ids = {"old": _add(node.queue, "1.1"), "recent": _add(node.queue, "1.2")}
    node.queue.close_batch("a")
    node.queue.claim("w"), node.queue.claim("w")
    node.queue.finish(ids["old"])
    clock.now += 29 * 86400
    node.queue.finish(ids["recent"])
    clock.now += 2 * 86400  # old: 31 days done, recent: 2
    node.prune()
    assert {name for name, i in ids.items() if node.queue.get(i) is not None} == kept
    node.queue.close()


def test_a_queue_file_of_an_older_cfia_gains_the_columns_added_since(tmp_path):
    """A site upgrading cfia keeps its spool: the queue written before `refusals`, `given_up`
    and `refused_by` existed opens, and its jobs have none of them yet."""
    import sqlite3

    from listener.jobqueue import SCHEMA

    path = tmp_path / "old.sqlite"
    added = ("refusals", "given_up", "refused_by")
    db = sqlite3.connect(path)
    db.executescript("\n".join(line for line in SCHEMA.splitlines() if not line.strip().startswith(added)))
    db.execute("INSERT INTO jobs (state, batch, path, sop_instance_uid, study_instance_uid, sop_class_uid, "
               "calling_ae, received_at, updated_at) VALUES ('queued', 'a', '/x.dcm', '1.2.3', '1.2', '1.2.840', "
               "'MOD', 0, 0)")
    db.commit()
    db.close()
    queue = JobQueue(path)
    try:
        job = queue.get(1)
        assert (job.refusals, job.given_up, job.sop_instance_uid) == (0, (), "1.2.3")
        queue.retry_later(1, "refused", 0, sending=True, refused=True)
        queue.give_up(1, "pacs", "refused")
        assert queue.get(1).refusals == 1 and queue.get(1).given_up == (("pacs", "refused"),)
        assert queue.count_refusal(1, "pacs") == 1
    finally:
        queue.close()


def test_failed_total_never_goes_down_when_a_failed_job_is_requeued(queue):
    """cfia_failed_total is a counter: `cfia requeue` lowers the dead-letter gauge only."""
    from cfia.status import prometheus

    job = _add(queue)
    queue.close_batch("a")
    queue.claim("w")
    queue.fail(job, "refused")
    assert "cfia_failed_total 1" in prometheus(queue, {}, 1) and "cfia_failed_jobs 1" in prometheus(queue, {}, 1)
    assert queue.requeue_failed(job, "/spool/again.dcm")
    after = prometheus(queue, {}, 1)
    assert "cfia_failed_total 1" in after and "cfia_failed_jobs 0" in after


def test_prune_with_nothing_to_prune_writes_nothing(queue):
    """The supervisor prunes every hour; on a full disk a write would fail for nothing."""
    assert queue.prune_done(0) == 0 and queue.metrics_snapshot()[1] == {}


@pytest.mark.parametrize("reached_as", ["moved", "symlink"])
def test_a_spool_moved_or_reached_by_another_name_keeps_its_received_images(tmp_path, reached_as):
    """The queue records absolute paths; start-up must not take the images it
    acknowledged under the old name for unacknowledged ones and delete them."""
    from cfia.config import from_dict
    from cfia.serve import Node
    from listener import Spool

    old = Spool(tmp_path / "old").create()
    q = JobQueue(old.queue_file)
    path = old.write_incoming(b"acknowledged image")
    q.add(str(path), "1.2.3", "1.2", "1.2.840.10008.5.1.4.1.1.1.2", "MOD", "a")
    q.close()
    (tmp_path / "old").rename(tmp_path / "new")
    if reached_as == "symlink":
        (tmp_path / "link").symlink_to(tmp_path / "new")
    root = tmp_path / ("new" if reached_as == "moved" else "link")
    node = Node(from_dict({"spool": {"folder": str(root)}}, tmp_path))
    node.queue = JobQueue(node.spool.queue_file)
    node._recover()
    assert [p.name for p in node.spool.incoming.iterdir()] == [path.name]
    assert node.spool.locate(node.queue.get(1).path).read_bytes() == b"acknowledged image"
    node.queue.close()


def test_start_up_removes_results_of_finished_jobs_and_keeps_the_rest(tmp_path):
    """A crash between marking a job done and removing its files left results/<job>; nothing
    else would ever remove it. Results of jobs still to be sent must stay."""
    from cfia.config import from_dict
    from cfia.serve import Node
    from listener import Spool

    spool = Spool(tmp_path / "spool").create()
    q = JobQueue(spool.queue_file, quiet_seconds=0)
    ids = [q.add(str(spool.write_incoming(b"image")), f"1.2.{i}", "1.2", "1.2.840.10008.5.1.4.1.1.1.2", "MOD", "a")[0]
           for i in range(2)]
    q.close_all_batches()
    for job_id in ids:
        q.claim("w")
        folder = spool.results / str(job_id)
        folder.mkdir()
        (folder / "sr.dcm").write_bytes(b"result")
        q.set_results(job_id, str(folder), 1.0)
    q.finish(ids[0])  # the crash came before its files were removed
    q.close()
    node = Node(from_dict({"spool": {"folder": str(spool.root)}}, tmp_path))
    node.queue = JobQueue(node.spool.queue_file)
    node._recover()
    assert sorted(p.name for p in spool.results.iterdir()) == [str(ids[1])]
    assert (spool.results / str(ids[1]) / "sr.dcm").read_bytes() == b"result"
    node.queue.close()


def test_an_error_in_the_supervisor_is_logged_and_serving_goes_on(tmp_path, caplog):
    """A full disk or a busy queue while checking workers or pruning must neither end
    nor hang the server: the next round retries, and a stop still stops."""
    import sqlite3
    import threading

    from cfia.config import from_dict
    from cfia.serve import Node

    stop = threading.Event()

    class FlakyPool:  # stands in for the worker processes
        config_error = False
        calls = 0
        stopped = False

        def check(self):
            FlakyPool.calls += 1
            if FlakyPool.calls == 1:
                raise sqlite3.OperationalError("database or disk is full")
            if FlakyPool.calls == 3:
                stop.set()

        def stop(self, timeout):
            FlakyPool.stopped = True

    node = Node(from_dict({"spool": {"folder": str(tmp_path / "spool")}}, tmp_path))
    node.queue = JobQueue(tmp_path / "q.sqlite")
    node.pool = FlakyPool()
    assert node.run(stop) == 0
    assert FlakyPool.calls == 3 and FlakyPool.stopped
    assert "supervisor step failed" in caplog.text and "database or disk is full" in caplog.text


def test_a_requeue_waits_while_a_starting_server_sweeps_incoming(tmp_path):
    """`cfia requeue` links the source into incoming/ and then commits the job; a server
    starting in between would take the link for an unacknowledged file and delete it."""
    import threading

    from cfia.requeue import requeue
    from listener import Spool

    spool = Spool(tmp_path / "spool").create()
    queue = JobQueue(spool.queue_file)
    job = dead_letter_job(spool, queue, "1.2.840.10008.5.1.4.1.1.1.2")
    with spool.recovery_lock():  # what a starting server holds while it sweeps
        worker = threading.Thread(target=requeue, args=(spool, JobQueue(spool.queue_file), job))
        worker.start()
        worker.join(1.0)
        assert worker.is_alive() and list(spool.incoming.iterdir()) == [] and queue.get(job).state == "failed"
    worker.join(30)
    assert queue.get(job).state == "queued"
    assert spool.locate(queue.get(job).path).read_bytes() == b"image"
    queue.close()


def test_dead_lettering_again_replaces_results_a_crashed_requeue_left(tmp_path):
    from listener import Spool

    spool = Spool(tmp_path / "spool").create()
    (spool.dead_letter / "7" / "results").mkdir(parents=True)
    (spool.dead_letter / "7" / "results" / "old.dcm").write_bytes(b"old")
    (spool.results / "7").mkdir()
    (spool.results / "7" / "new.dcm").write_bytes(b"new")
    source = spool.write_incoming(b"image")
    folder = spool.move_to_dead_letter(7, source, spool.results / "7", {"reason": "refused"})
    assert sorted(p.name for p in (folder / "results").iterdir()) == ["new.dcm"]
    assert (folder / "source.dcm").read_bytes() == b"image"


def test_the_queue_files_are_the_owners_only(tmp_path):
    """UIDs and AE titles are in them: owner-only, like the spooled images."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        q = JobQueue(tmp_path / "q.sqlite")
        q.add("/spool/a.dcm", "1.2.3", "1.2", "x", "MOD", "b")
        files = [p for p in tmp_path.iterdir() if p.name.startswith("q.sqlite")]
        assert {p.name for p in files} >= {"q.sqlite", "q.sqlite-wal"}
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files), [oct(p.stat().st_mode) for p in files]
        q.close()
    finally:
        os.umask(old)


def test_a_destination_given_up_on_is_kept_until_the_job_is_requeued(queue):
    """A destination that refused for good is not sent to again while the job waits for
    the others; `cfia requeue` (its cause fixed) tries it again, and does not send again
    to a destination that already has the results (docs/operations.md)."""
    job = _add(queue)
    queue.close_batch("a")
    queue.claim("w")
    queue.add_delivered(job, "pacs:PACS@h:2")
    queue.give_up(job, "nopm:DEST@h:1", "nopm refused x (0x0122)")
    queue.retry_later(job, "later down", 0, sending=True)
    assert queue.get(job).given_up == (("nopm:DEST@h:1", "nopm refused x (0x0122)"),)
    assert queue.claim("w").given_up == (("nopm:DEST@h:1", "nopm refused x (0x0122)"),)
    queue.fail(job, "nopm refused x (0x0122)")
    assert queue.requeue_failed(job, "/spool/again.dcm") and queue.get(job).given_up == ()
    assert queue.get(job).delivered == ("pacs:PACS@h:2",)


def test_results_written_again_leave_no_object_of_the_earlier_run(tmp_path):
    """A job explained again (a crash before its results were recorded) after an output was
    turned off: the earlier run's file of that type must not be sent with the new ones."""
    from pydicom.dataset import Dataset

    from listener import Spool

    spool = Spool(tmp_path / "spool").create()

    def obj(uid: str) -> Dataset:
        from pydicom.dataset import FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian

        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.88.34", uid
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        return ds

    spool.write_results(7, {"sr": obj("1.2.3"), "gsps": obj("1.2.4")})
    folder = spool.write_results(7, {"sr": obj("1.2.3")})
    assert [p.name for p in spool.result_files(folder)] == ["sr.dcm"]


class FailsAgainAtOnce(JobQueue):
    """A queue whose requeued job a worker takes and fails again before `cfia requeue` has
    finished: what a running `cfia serve` does with an image that fails at once."""

    def __init__(self, path, spool):
        super().__init__(path)
        self.spool = spool

    def requeue_failed(self, job_id: int, path: str) -> bool:
        requeued = super().requeue_failed(job_id, path)
        job = self.claim("worker")
        self.spool.move_to_dead_letter(job.id, self.spool.locate(job.path), None, {"reason": "failed again"})
        self.fail(job.id, "failed again")
        return requeued


def test_a_requeued_job_failed_again_before_the_requeue_ends_keeps_its_source(tmp_path):
    """The requeue dropped the dead-letter copy by name after its commit: the new dead
    letter's source had been renamed onto that very name (a no-op between two links of one
    file), so it was deleted, and the next start swept the last link as an orphan."""
    from cfia.requeue import requeue
    from listener import Spool

    spool = Spool(tmp_path / "spool").create()
    queue = FailsAgainAtOnce(spool.queue_file, spool)
    job = dead_letter_job(spool, queue)
    requeue(spool, queue, job)
    assert queue.get(job).state == "failed"
    assert (spool.dead_letter / str(job) / "source.dcm").read_bytes() == b"image"
    assert list(spool.incoming.iterdir()) == []
    plain = JobQueue(spool.queue_file)
    requeue(spool, plain, job)  # and it can be requeued again
    assert spool.locate(plain.get(job).path).read_bytes() == b"image"
    queue.close()
    plain.close()


def test_a_requeue_killed_at_any_step_loses_nothing_and_leaves_no_copy(tmp_path):
    from cfia.config import from_dict
    from cfia.requeue import RequeueError, requeue
    from cfia.serve import Node
    from listener import Spool

    def start_up(spool, queue):  # what `cfia serve` does with the spool at start
        node = Node(from_dict({"spool": {"folder": str(spool.root)}}))
        node.queue = queue
        node._recover()

    spool = Spool(tmp_path / "spool").create()
    queue = JobQueue(spool.queue_file)
    job = dead_letter_job(spool, queue)
    kept = spool.retire_dead_letter(job, "20261207T000000")  # killed before its commit
    spool.restore_from_dead_letter(kept)
    start_up(spool, queue)
    assert queue.get(job).state == "failed" and list(spool.incoming.iterdir()) == []
    assert (kept / "source.dcm").read_bytes() == b"image"  # the only copy: kept
    again = spool.retire_dead_letter(job, "20261207T000001")  # the next requeue finds it there
    assert again == kept
    queue.requeue_failed(job, str(spool.restore_from_dead_letter(again)))  # killed after its commit
    start_up(spool, queue)
    assert queue.get(job).state == "queued" and not (kept / "source.dcm").exists()
    assert spool.locate(queue.get(job).path).read_bytes() == b"image"
    with pytest.raises(RequeueError, match="is queued, not failed"):
        requeue(spool, queue, job)
    queue.close()


def test_a_dead_letter_left_by_an_older_requeue_is_retired_at_start(tmp_path):
    """Before 0.2.0 `cfia requeue` committed the job, then retired the folder: one stopped in
    between left dead-letter/<job>/, the image in it, beside a job that was then delivered;
    no start removed it."""
    from cfia.config import from_dict
    from cfia.serve import Node
    from listener import Spool

    spool = Spool(tmp_path / "spool").create()
    queue = JobQueue(spool.queue_file)
    job = dead_letter_job(spool, queue)
    letter = spool.dead_letter / str(job)
    source = spool.incoming / "restored.dcm"
    os.link(letter / "source.dcm", source)  # the old requeue's steps, up to its commit
    queue.requeue_failed(job, str(source))
    node = Node(from_dict({"spool": {"folder": str(spool.root)}}))
    node.queue = queue
    node._recover()
    assert not letter.exists() and source.read_bytes() == b"image"
    kept, = spool.dead_letter.glob(f"{job}.requeued-*")
    assert sorted(p.name for p in kept.iterdir()) == ["reason.json"]
    queue.close()


def test_a_dead_letter_of_another_image_under_a_reused_job_id_is_kept(tmp_path):
    """A restored backup of dead-letter/ beside a newer queue: the folder's job id names another
    image now, one that was delivered. Start-up took the folder for that job's and deleted the
    failed image in it."""
    from cfia.config import from_dict
    from cfia.serve import Node
    from listener import Spool

    spool = Spool(tmp_path / "spool").create()
    letter = spool.dead_letter / "1"
    letter.mkdir()
    (letter / "source.dcm").write_bytes(b"failed image")
    (letter / "reason.json").write_text(json.dumps({"job": 1, "sop_instance_uid": "9.9.9", "reason": "refused"}))
    retired = spool.dead_letter / "1.requeued-20261201T000000"
    retired.mkdir()
    (retired / "source.dcm").write_bytes(b"another failed image")
    (retired / "reason.json").write_text(json.dumps({"job": 1, "sop_instance_uid": "8.8.8", "reason": "refused"}))
    queue = JobQueue(spool.queue_file)
    job = queue.add(str(spool.write_incoming(b"image")), "1.2.3", "1.2", "x", "MOD", "a")[0]
    assert job == 1
    queue.close_batch("a")
    queue.claim("w")
    queue.finish(job)
    node = Node(from_dict({"spool": {"folder": str(spool.root)}}))
    node.queue = queue
    node._recover()
    assert (letter / "source.dcm").read_bytes() == b"failed image"
    assert (retired / "source.dcm").read_bytes() == b"another failed image"
    queue.close()


def test_a_dead_workers_job_says_so_and_a_stopped_ones_keeps_its_error(queue):
    """A poison job's reason read the error of an earlier attempt: the attempts after it that
    killed their worker recorded nothing."""
    job = _add(queue)
    queue.close_all_batches()
    queue.claim("w1")
    queue.retry_later(job, "RuntimeError: CUDA out of memory", 0)
    queue.claim("w1")
    assert queue.requeue_running("w1") == 1
    assert queue.get(job).error == "worker died while processing"
    queue.claim("w2")
    queue.retry_later(job, "RuntimeError: CUDA out of memory", 0)
    queue.claim("w2")
    assert queue.requeue_running("w2", refund_attempt=True) == 1  # stopped, not killed by the job
    assert queue.get(job).error == "RuntimeError: CUDA out of memory"


def test_a_job_failing_under_a_reused_id_sets_the_older_dead_letter_aside(tmp_path):
    from listener import Spool

    spool = Spool(tmp_path / "spool").create()
    letter = spool.dead_letter / "1"
    letter.mkdir()
    (letter / "source.dcm").write_bytes(b"failed image of the old queue")
    (letter / "reason.json").write_text(json.dumps({"job": 1, "sop_instance_uid": "9.9.9"}))
    spool.move_to_dead_letter(1, spool.write_incoming(b"new image"), None, {"job": 1, "sop_instance_uid": "1.2.3"})
    assert (letter / "source.dcm").read_bytes() == b"new image"
    aside, = spool.dead_letter.glob("1.other-*")
    assert (aside / "source.dcm").read_bytes() == b"failed image of the old queue"


def test_a_crash_keeps_the_send_error_of_a_job_waiting_to_be_sent(queue):
    """A job whose results are on disk did not die with its worker's explanation: its last
    send error (what `cfia status` shows) stays."""
    job = _add(queue)
    queue.close_all_batches()
    queue.claim("w")
    queue.set_results(job, "/spool/results/1", 1.0)
    queue.retry_later(job, "PACS: connection refused", 0, sending=True)
    queue.claim("w")
    assert queue.requeue_running() == 1
    assert (queue.get(job).state, queue.get(job).error) == ("sending", "PACS: connection refused")


def test_results_on_disk_clear_the_error_of_an_earlier_attempt(queue):
    """`cfia status` showed a failed first explanation's error against a job explained fine."""
    job = _add(queue)
    queue.close_all_batches()
    queue.claim("w")
    queue.retry_later(job, "RuntimeError: transient GPU error", 0)
    queue.claim("w")
    queue.set_results(job, "/spool/results/1", 1.0)
    assert queue.get(job).error is None


def test_status_last_day_counts_a_job_finished_two_hours_ago(tmp_path):
    """`cfia status`'s last-day figures are over a day, not an hour."""
    from cfia import status

    now = [1_000_000.0]
    queue = JobQueue(tmp_path / "q.sqlite", quiet_seconds=0, clock=lambda: now[0])
    job_id, _ = queue.add("a.dcm", "1.2.3", "1.2", "1.2.840.10008.5.1.4.1.1.1.2", "MOD", "b1")
    queue.close_batch("b1")
    job = queue.claim("w")
    queue.set_results(job.id, "r", 1.5)
    queue.finish(job.id)
    snap = status.snapshot(queue, now=now[0] + 7200)
    assert snap["last_hour"]["done"] == 0 and snap["last_day"]["done"] == 1


def test_status_says_running_only_while_the_spools_lock_is_held(tmp_path):
    """serve.json's pid may be another process's after a crash or a reboot: the node counts as
    running while its lock on the spool folder is held, not while any process has that pid."""
    import fcntl
    import json
    import os

    from cfia.status import SERVE_INFO, SERVE_LOCK, read_serve_info

    (tmp_path / SERVE_INFO).write_text(json.dumps({"pid": os.getpid()}))  # a live pid, no cfia serve
    assert read_serve_info(tmp_path)["running"] is False
    fd = os.open(tmp_path / SERVE_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as cfia serve holds it
        assert read_serve_info(tmp_path)["running"] is True
        (tmp_path / SERVE_INFO).write_text(json.dumps({"pid": 2 ** 22 + 1}))  # beyond pid_max: no process
        assert read_serve_info(tmp_path)["running"] is False
    finally:
        os.close(fd)
