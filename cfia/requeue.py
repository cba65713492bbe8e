"""`cfia requeue`: send failed jobs back from the dead-letter folder to the queue.

After the cause is fixed (a destination's address, a model, a full disk), an operator
requeues the jobs that failed. The order of steps keeps the source at every moment:
retire the dead-letter folder (renamed, source and reason.json in it), link the source
into incoming/, commit the job as queued with that path, then drop the retired copy of
the source. Retiring first means a worker that takes the job and fails it again starts a
new dead letter, which the requeue's last step cannot touch. A running `cfia serve` picks
the jobs up at once; results go only to destinations that do not have them yet.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from listener import JobQueue, Spool

log = logging.getLogger("cfia.requeue")


class RequeueError(ValueError):
    """A job that cannot be requeued; the message says why."""


@dataclass(frozen=True)
class Requeued:
    job_id: int
    sop_instance_uid: str
    reason_kept: str      # folder with the old reason.json


def requeue(spool: Spool, queue: JobQueue, job_id: int) -> Requeued:
    job = queue.get(job_id)
    if job is None:
        raise RequeueError(f"job {job_id} does not exist")
    if job.state != "failed":
        raise RequeueError(f"job {job_id} is {job.state}, not failed")
    with spool.recovery_lock():  # a starting `cfia serve` must not sweep the link before the commit
        try:  # retired before the commit: a worker that fails the job again starts a new dead letter
            kept = spool.retire_dead_letter(job_id, time.strftime("%Y%m%dT%H%M%S"))
        except FileNotFoundError as exc:
            raise RequeueError(str(exc)) from None
        path = spool.restore_from_dead_letter(kept)
        if not queue.requeue_failed(job_id, str(path)):   # changed state meanwhile
            path.unlink(missing_ok=True)
            raise RequeueError(f"job {job_id} is no longer failed")
    spool.drop_retired_source(kept)
    log.info("job requeued", extra={"job": job_id, "sop_instance_uid": job.sop_instance_uid})
    return Requeued(job_id, job.sop_instance_uid, str(kept))
