"""listener.jobqueue: states, quiet period, crash recovery, resends."""
from __future__ import annotations

import pytest

from listener import JobQueue


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


def test_resend_while_waiting_replaces_the_file(queue):
    first = _add(queue)
    job, replaced = queue.add("/spool/new.dcm", "1.2.3", "1.2", "x", "MOD", "b")
    assert job == first and replaced == "/spool/1.2.3.dcm"
    assert sum(queue.counts().values()) == 1


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
    assert queue.throughput(0)["done"] == 1 and queue.explain_seconds() == [2.0]
    assert queue.recent_errors() == []  # finishing clears the error
