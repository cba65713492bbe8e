"""`cfia status` and /metrics read what the queue and the listener hold: each queue state's own
count, the refusals by status, the ignored objects, the rejections by reason, the workers, the
explain-time histogram (docs/operations.md's alerts read these series), and the last errors."""
from __future__ import annotations

import pytest

from cfia.status import format_text, prometheus, snapshot
from listener import JobQueue


def _add(q, uid):
    return q.add(f"/spool/{uid}.dcm", uid, "1.2", "1.2.840.10008.5.1.4.1.1.1.2", "MOD", uid)[0]


def _started(q, uid):
    job = _add(q, uid)
    q.close_batch(uid)
    assert q.claim("w").id == job
    return job


@pytest.fixture
def queue(tmp_path):
    """One job done, one failed, and 1 sending, 2 running, 3 queued, 4 pending."""
    q = JobQueue(tmp_path / "q.sqlite", quiet_seconds=3600)
    done = _started(q, "9.1")
    q.set_results(done, "{}", 2.5)
    q.finish(done)
    q.fail(_started(q, "9.2"), "RuntimeError: model file unreadable")
    sending = _started(q, "9.3")
    q.set_results(sending, "{}", 0.5)
    q.retry_later(sending, "pacs down", 3600, sending=True)
    for uid in ("9.4", "9.5"):
        _started(q, uid)
    for uid in ("9.6", "9.7", "9.8"):
        _add(q, uid)
        q.close_batch(uid)
    for uid in ("9.9", "9.10", "9.11", "9.12"):
        _add(q, uid)
    yield q
    q.close()


def _samples(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line and not line.startswith("#")}


def test_metrics_give_each_series_its_own_value(queue):
    listened = {"refused_0xc002": 2, "refused_0xa700": 5, "ignored": 3, "rejected_calling_ae": 4,
                "contexts_not_accepted": 1}
    got = _samples(prometheus(queue, listened, workers_alive=2))
    assert got["cfia_received_total"] == 12 and got["cfia_processed_total"] == 1
    assert got["cfia_failed_total"] == 1 and got["cfia_failed_jobs"] == 1
    assert [got[f'cfia_queue_depth{{state="{s}"}}'] for s in ("pending", "queued", "running", "sending")] == [4, 3, 2, 1]
    assert got['cfia_store_refused_total{status="0xc002"}'] == 2
    assert got['cfia_store_refused_total{status="0xa700"}'] == 5
    assert got["cfia_store_ignored_total"] == 3 and got["cfia_contexts_not_accepted_total"] == 1
    assert got['cfia_associations_rejected_total{reason="calling_ae"}'] == 4
    assert got['cfia_associations_rejected_total{reason="busy"}'] == 0
    assert got["cfia_workers_alive"] == 2
    # Every explained image, the one whose results still wait to be sent too.
    assert got["cfia_explain_seconds_count"] == 2 and got["cfia_explain_seconds_sum"] == pytest.approx(3.0)


def test_status_lists_the_last_errors_newest_first(queue):
    snap = snapshot(queue)
    assert [(e["sop_instance_uid"], e["state"]) for e in snap["last_errors"]] == [("9.3", "sending"), ("9.2", "failed")]
    text = format_text(snap, None)
    assert "last errors:" in text and "(failed) 9.2: RuntimeError: model file unreadable" in text
    assert "queue: pending 4, queued 3, running 2, sending 1" in text
