"""listener.jobqueue: an explain time exactly on a bucket's bound stays in that bucket once its
row is pruned (Prometheus buckets are 'less than or equal'); `cfia requeue` gives a failed job
its full max_retries again (attempts back to 0)."""
from __future__ import annotations

from cfia.status import prometheus
from test_jobqueue import _add, queue  # noqa: F401 (fixture)


def test_a_time_on_a_bucket_bound_stays_in_that_bucket_when_pruned(queue):  # noqa: F811
    job = _add(queue)
    queue.close_batch("a")
    queue.claim("w")
    queue.set_results(job, "/r", 5.0)
    queue.finish(job)
    before = prometheus(queue, {}, 1)
    assert 'cfia_explain_seconds_bucket{le="5"} 1' in before
    queue.clock.now += 10
    assert queue.prune_done(5) == 1
    assert prometheus(queue, {}, 1) == before


def test_a_requeued_job_starts_its_attempts_again(queue):  # noqa: F811
    job = _add(queue)
    queue.close_batch("a")
    for _ in range(3):
        queue.claim("w")
        queue.retry_later(job, "boom", 0)
    assert queue.claim("w").attempts == 4
    queue.fail(job, "boom")
    assert queue.requeue_failed(job, "/spool/again.dcm")
    assert queue.get(job).attempts == 0 and queue.claim("w").attempts == 1
