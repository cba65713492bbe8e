"""What the node is doing: queue counts, last errors, throughput, and the same as
Prometheus metrics. Read from the queue file, so `cfia status` works from another
process, and counts survive restarts."""
from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Optional

from listener import JobQueue
from listener.intake import REJECTION_REASONS

WAITING = ("pending", "queued", "running", "sending")
SERVE_INFO = "serve.json"  # written by `cfia serve` into the spool folder
SERVE_LOCK = "serve.lock"  # held (flock) by the `cfia serve` using the spool folder


def snapshot(queue: JobQueue, now: Optional[float] = None) -> dict:
    now = now or time.time()
    return {
        "counts": queue.counts(),
        "last_hour": queue.throughput(now - 3600),
        "last_day": queue.throughput(now - 86400),
        "last_errors": queue.recent_errors(5),
    }


def read_serve_info(spool_folder: str | Path) -> Optional[dict]:
    path = Path(spool_folder) / SERVE_INFO
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    # Its pid alone could be another process's after a crash or a reboot: the lock says it is cfia.
    info["running"] = _pid_alive(int(info.get("pid", 0))) and _lock_held(Path(spool_folder) / SERVE_LOCK)
    return info


def _lock_held(path: Path) -> bool:
    """Whether a process holds the spool's lock; a lock file this user cannot open is taken
    as held (the pid then decides)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def format_text(snap: dict, serve: Optional[dict]) -> str:
    lines = []
    if serve:
        state = "running" if serve["running"] else "not running"
        lines.append(f"server: {state} (pid {serve.get('pid')}), DICOM {serve.get('ae_title')}@"
                     f"{serve.get('host')}:{serve.get('dicom_port')}")
    else:
        lines.append("server: never started with this spool folder")
    counts = snap["counts"]
    lines.append("queue: " + ", ".join(f"{state} {counts[state]}" for state in counts))
    for label, key in (("last hour", "last_hour"), ("last 24 h", "last_day")):
        t = snap[key]
        lines.append(f"{label}: {t['done']} done, mean explain {t['mean_explain_seconds']:.1f} s")
    if snap["last_errors"]:
        lines.append("last errors:")
        for e in snap["last_errors"]:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["updated_at"]))
            lines.append(f"  {when} job {e['id']} ({e['state']}) {e['sop_instance_uid']}: {e['error']}")
    return "\n".join(lines)


def prometheus(queue: JobQueue, listener_counts: dict, workers_alive: int) -> str:
    counts, totals, histogram = queue.metrics_snapshot()
    pruned_done = int(totals.get("done", 0))  # rows deleted after spool.keep_done_days
    requeued = int(totals.get("requeued", 0))  # failed jobs `cfia requeue` sent back
    out = [
        _metric("cfia_received_total", "counter", "Mammograms received and queued (all time).",
                [("", sum(counts.values()) + pruned_done)]),
        _metric("cfia_processed_total", "counter", "Jobs whose results were delivered.",
                [("", counts["done"] + pruned_done)]),
        _metric("cfia_failed_total", "counter", "Jobs moved to the dead-letter folder (all time).",
                [("", counts["failed"] + requeued)]),
        _metric("cfia_failed_jobs", "gauge", "Jobs in the dead-letter folder now (cfia requeue lowers it).",
                [("", counts["failed"])]),
        _metric("cfia_queue_depth", "gauge", "Jobs waiting, by state.",
                [(f'{{state="{s}"}}', counts[s]) for s in WAITING]),
        _metric("cfia_store_refused_total", "counter", "C-STOREs refused since start, by status.",
                [(f'{{status="{k[len("refused_"):]}"}}', v) for k, v in sorted(listener_counts.items())
                 if k.startswith("refused_")]),
        _metric("cfia_store_ignored_total", "counter", "Non-mammogram C-STOREs ignored since start.",
                [("", listener_counts.get("ignored", 0))]),
        _metric("cfia_contexts_not_accepted_total", "counter",
                "Associations since start with presentation contexts not accepted (SOP classes named in the log).",
                [("", listener_counts.get("contexts_not_accepted", 0))]),
        _metric("cfia_associations_rejected_total", "counter",
                "Associations rejected or ended since start, by reason (" + ", ".join(REJECTION_REASONS) + ").",
                [(f'{{reason="{cause}"}}', listener_counts.get(f"rejected_{cause}", 0))
                 for cause in REJECTION_REASONS]),
        _metric("cfia_workers_alive", "gauge", "Worker processes alive with their processor built.",
                [("", workers_alive)]),
        _histogram("cfia_explain_seconds", "Seconds the processor took per image.", histogram),
    ]
    return "".join(out)


def _metric(name: str, kind: str, help_text: str, samples) -> str:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{labels} {value}" for labels, value in samples]
    return "\n".join(lines) + "\n"


def _histogram(name: str, help_text: str, hist: dict) -> str:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    lines += [f'{name}_bucket{{le="{bound}"}} {n}' for bound, n in hist["buckets"]]
    lines += [f'{name}_bucket{{le="+Inf"}} {hist["count"]}', f"{name}_sum {hist['sum']:.6f}",
              f"{name}_count {hist['count']}"]
    return "\n".join(lines) + "\n"
