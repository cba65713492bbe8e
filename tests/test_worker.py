"""The worker loop in-process: listener -> queue -> worker -> sender -> a real SCP."""
from __future__ import annotations

import json
import threading

import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless

import listener
from cfia.bench.processors import blob
from cfia.config import Config, OutputsConfig
from cfia.routing import Routing
from cfia.worker import Worker
from conftest import dciodvfy_errors
from dicom_out import OBJECT_TYPES, Backoff, Destination
from listener import Intake, JobQueue, ListenerSettings, Spool
from node_helpers import FailingQueue, StorageSCP, mammogram, poll, push

MG = "1.2.840.10008.5.1.4.1.1.1.2"
FAST = Backoff(base_seconds=0.05, max_seconds=0.2, jitter=0)
MG_RESULT_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4",   # Segmentation (FRACTIONAL and BINARY)
    "1.2.840.10008.5.1.4.1.1.30",     # Parametric Map
    "1.2.840.10008.5.1.4.1.1.88.34",  # Comprehensive 3D SR
    "1.2.840.10008.5.1.4.1.1.11.1",   # Grayscale Softcopy Presentation State
}


class Node:
    """Listener and one worker thread on a spool in tmp_path."""

    def __init__(self, tmp_path, routing: Routing, processor=None, max_retries: int = 2, outputs=OutputsConfig()):
        self.spool = Spool(tmp_path / "spool").create()
        self.queue = JobQueue(self.spool.queue_file, quiet_seconds=60)
        self.server = listener.start(ListenerSettings(port=0), Intake(self.spool, self.queue))
        self.port = self.server.server_address[1]
        processor = processor or blob(Config(outputs=outputs))
        self.worker = Worker(JobQueue(self.spool.queue_file), self.spool, processor, routing,
                             max_retries=max_retries, backoff=FAST)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.worker.run, args=(self._stop.is_set, 0.02), daemon=True)
        self._thread.start()

    def wait_counts(self, timeout=60, **expected):
        def reached():
            counts = self.queue.counts()
            return all(counts[k] == v for k, v in expected.items()) and counts
        return poll(reached, timeout, what=f"queue counts {expected} (now {self.queue.counts()})")

    def stop(self):
        self._stop.set()
        self._thread.join(30)
        self.server.shutdown()


@pytest.fixture
def make_node(tmp_path):
    nodes = []

    def make(*args, **kw):
        nodes.append(Node(tmp_path, *args, **kw))
        return nodes[-1]

    yield make
    for node in nodes:
        node.stop()


@pytest.fixture
def dest():
    scp = StorageSCP()
    yield scp
    scp.stop()


def _to(scp: StorageSCP, name="pacs") -> Destination:
    return Destination(name, scp.ae_title, "127.0.0.1", scp.port)


def _referenced_uids(ds) -> set[str]:
    found = set()
    for elem in ds.iterall():
        if elem.keyword == "ReferencedSOPInstanceUID":
            found.add(str(elem.value))
    return found


def test_pushed_mammogram_produces_every_enabled_object(make_node, dest, tmp_path):
    node = make_node(Routing(fixed=(_to(dest),)))
    source = mammogram(0)
    assert push(node.port, [source]) == [0x0000]
    node.wait_counts(done=1)
    assert len(dest.received) == 5
    assert {str(ds.SOPClassUID) for ds in dest.received} == MG_RESULT_CLASSES
    for ds in dest.received:
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert str(source.SOPInstanceUID) in _referenced_uids(ds), ds.SOPClassUID.name
    seg = next(ds for ds in dest.received if ds.get("SegmentationType") == "BINARY")
    seg.save_as(tmp_path / "seg.dcm", enforce_file_format=True)
    assert dciodvfy_errors(tmp_path / "seg.dcm") == []
    assert list(node.spool.incoming.iterdir()) == [] and list(node.spool.results.iterdir()) == []


def test_destination_outage_then_recovery_delivers_everything(make_node, tmp_path):
    down = StorageSCP()
    port = down.port
    down.stop()
    node = make_node(Routing(fixed=(Destination("pacs", "DEST", "127.0.0.1", port),)),
                     outputs=OutputsConfig(fractional_seg=False, parametric_map=False, gsps=False))
    sources = [mammogram(i) for i in range(3)]
    assert push(node.port, sources) == [0x0000] * 3
    poll(lambda: all(j.send_attempts >= 2 for j in map(node.queue.get, (1, 2, 3))), 60,
         what="every job retried sending at least twice")
    assert node.queue.counts()["done"] == 0
    assert len(list(node.spool.incoming.iterdir())) == 3  # sources kept while results wait
    back = StorageSCP(port=port)
    try:
        node.wait_counts(done=3)
        assert sorted(back.uids().values()) == [1] * 6  # 2 objects x 3 images, none twice
    finally:
        back.stop()


def test_time_a_destination_was_down_does_not_count_toward_its_refusals(make_node):
    """max_retries bounds the refusals, not the sends an outage cost: after an outage of
    more sends than max_retries, one refusal is retried like any other."""
    down = StorageSCP()
    port = down.port
    down.stop()
    node = make_node(Routing(fixed=(Destination("pacs", "DEST", "127.0.0.1", port),)), max_retries=2,
                     outputs=OutputsConfig(fractional_seg=False, parametric_map=False, gsps=False))
    assert push(node.port, [mammogram(12)]) == [0x0000]
    poll(lambda: node.queue.get(1).send_attempts >= 3, 60, what="three sends to the destination that is down")
    back = StorageSCP(port=port, refuse_first=1)
    try:
        node.wait_counts(done=1)
        job = node.queue.get(1)
        assert job.refusals == 1 and job.send_attempts >= 4
        # The SEG and the SR; the one the refusal did not touch is sent again with the
        # other (same UIDs: the destination replaces it).
        assert len(back.uids()) == 2
    finally:
        back.stop()


def test_a_destination_that_keeps_refusing_dead_letters_after_max_retries(make_node):
    refusing = StorageSCP(refuse_first=100)
    try:
        node = make_node(Routing(fixed=(Destination("pacs", "DEST", "127.0.0.1", refusing.port),)), max_retries=2,
                         outputs=OutputsConfig(fractional_seg=False, parametric_map=False, gsps=False))
        assert push(node.port, [mammogram(13)]) == [0x0000]
        node.wait_counts(failed=1)
        reason = json.loads((node.spool.dead_letter / "1" / "reason.json").read_text())
        # the first send + 2 retries, the last refusal included, in reason.json and the queue
        assert (reason["send_attempts"], reason["refusals"]) == (3, 3) and "0xa700" in reason["reason"]
        assert (node.queue.get(1).send_attempts, node.queue.get(1).refusals) == (3, 3)
        assert refusing.received == [] and (node.spool.dead_letter / "1" / "results").is_dir()
    finally:
        refusing.stop()


@pytest.mark.parametrize("first", ["down", "refusing"])
def test_a_destination_that_is_down_or_refusing_does_not_starve_the_others(make_node, dest, first):
    """Each destination is sent to on every pass: the healthy one gets the results at once,
    is not sent them again, and only the failing one keeps the job waiting (or, refusing,
    dead-letters it after max_retries)."""
    bad = StorageSCP(refuse_first=100)
    if first == "down":
        bad.stop()
    try:
        node = make_node(Routing(fixed=(Destination("bad", "DEST", "127.0.0.1", bad.port), _to(dest, "good"))),
                         max_retries=2, outputs=OutputsConfig(fractional_seg=False, parametric_map=False, gsps=False))
        assert push(node.port, [mammogram(14)]) == [0x0000]
        if first == "down":
            poll(lambda: node.queue.get(1).send_attempts >= 3, 60, what="three sends to the destination that is down")
            assert node.queue.get(1).state in ("sending", "running")
        else:
            node.wait_counts(failed=1)
            assert bad.received == []
        assert sorted(dest.uids().values()) == [1, 1]  # the SEG and the SR, once each
        assert node.queue.get(1).delivered == (f"good:{dest.ae_title}@127.0.0.1:{dest.port}",)
    finally:
        if first == "refusing":
            bad.stop()


def test_a_sop_class_the_destination_does_not_accept_dead_letters_at_once(make_node):
    """0x0122 (e.g. a PACS without Parametric Map) cannot get better with retries: the job
    fails on the first send, saying which output to disable; what was accepted is stored."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import Comprehensive3DSRStorage

    stored = []
    ae = AE(ae_title="SRONLY")
    ae.add_supported_context(Comprehensive3DSRStorage)
    server = ae.start_server(("127.0.0.1", 0), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, lambda event: stored.append(1) or 0x0000)])
    try:
        node = make_node(Routing(fixed=(Destination("sronly", "SRONLY", "127.0.0.1", server.server_address[1]),)),
                         max_retries=3, outputs=OutputsConfig(fractional_seg=False, parametric_map=False, gsps=False))
        assert push(node.port, [mammogram(15)]) == [0x0000]
        node.wait_counts(failed=1)
        reason = json.loads((node.spool.dead_letter / "1" / "reason.json").read_text())
        assert reason["send_attempts"] == 1 and "(0x0122)" in reason["reason"]  # the one send it took
        assert "does not accept their SOP class; disable that output" in reason["reason"]
        assert stored == [1]  # the SR
    finally:
        server.shutdown()


def test_a_destination_rejecting_the_association_dead_letters_at_once(make_node, dest):
    """An AE title the destination does not know: no retry mends that configuration."""
    node = make_node(Routing(fixed=(Destination("pacs", "NOT_DEST", "127.0.0.1", dest.port),)), max_retries=3,
                     outputs=OutputsConfig(fractional_seg=False, parametric_map=False, gsps=False))
    assert push(node.port, [mammogram(16)]) == [0x0000]
    node.wait_counts(failed=1)
    reason = json.loads((node.spool.dead_letter / "1" / "reason.json").read_text())
    assert "rejected the association permanently" in reason["reason"] and "config.yaml" in reason["reason"]
    assert reason["send_attempts"] == 1 and dest.received == []


def test_a_queue_that_cannot_be_written_makes_the_worker_wait_not_die(tmp_path, caplog):
    """A full disk under the queue: claiming a job fails; the worker must not crash (its
    supervisor would respawn it and reload the models, again and again)."""
    import sqlite3

    class FullQueue(JobQueue):
        def claim(self, owner):
            raise sqlite3.OperationalError("database or disk is full")

    spool = Spool(tmp_path / "spool").create()
    worker = Worker(FullQueue(spool.queue_file), spool, blob(Config()), Routing(), backoff=FAST)
    assert worker.run_once() is False
    assert "cannot take a job from the queue" in caplog.text


def test_a_failure_the_queue_cannot_record_keeps_the_worker_and_gives_the_job_back(tmp_path, caplog, monkeypatch):
    """The queue's disk full while a job fails: recording the retry fails too. The worker
    must not die (its supervisor cannot requeue either); it gives the job back, without
    counting the attempt, once the queue can be written."""
    from listener.spool import encode

    def broken(ds):
        raise RuntimeError("model exploded")

    monkeypatch.setattr("cfia.worker.QUEUE_RETRY_SECONDS", 0)
    spool = Spool(tmp_path / "spool").create()
    queue = FailingQueue(spool.queue_file, failing={"retry_later", "requeue_running"})
    job = queue.add(str(spool.write_incoming(encode(mammogram(3)))), "1.2.3", "1.2", MG, "MOD", "a")[0]
    queue.close_batch("a")
    worker = Worker(queue, spool, broken, Routing(), backoff=Backoff(base_seconds=60, jitter=0))
    assert worker.run_once()  # did not raise
    assert queue.get(job).state == "running" and "cannot record the job in the queue" in caplog.text
    assert worker.run_once() is False and queue.get(job).state == "running"  # still full: waits
    queue.failing.clear()
    assert worker.run_once()  # gives the job back, takes it again, records the failure
    again = queue.get(job)
    assert (again.state, again.attempts, again.error) == ("queued", 1, "RuntimeError: model exploded")
    queue.close()


def test_a_dead_letter_the_queue_cannot_record_is_recorded_later_not_requeued(tmp_path, monkeypatch):
    """The source is in dead-letter/ before the queue records the failure: a requeue would
    look for a source that is gone and overwrite reason.json with that."""
    from dicom_out import UnsupportedSource
    from listener.spool import encode

    def unsupported(ds):
        raise UnsupportedSource("not a single-frame MG image")

    monkeypatch.setattr("cfia.worker.QUEUE_RETRY_SECONDS", 0)
    spool = Spool(tmp_path / "spool").create()
    queue = FailingQueue(spool.queue_file, failing={"fail"}, error="database is locked")
    job = queue.add(str(spool.write_incoming(encode(mammogram(3)))), "1.2.3", "1.2", MG, "MOD", "a")[0]
    queue.close_batch("a")
    worker = Worker(queue, spool, unsupported, Routing(), backoff=Backoff(base_seconds=0, jitter=0))
    assert worker.run_once() and queue.get(job).state == "running"
    assert worker.run_once() is False  # still locked: waits, takes nothing
    queue.failing.clear()
    assert worker.run_once() is False  # records the failure; no job left to take
    assert queue.get(job).state == "failed" and "not a single-frame MG image" in queue.get(job).error
    reason = json.loads((spool.dead_letter / str(job) / "reason.json").read_text())
    assert "not a single-frame MG image" in reason["reason"]
    # Stopped, or killed, before the queue could be written: start-up recovery requeues the
    # job, and the next worker finds it in the dead-letter folder: failed, its reason kept.
    queue.failing.add("fail")
    job2 = queue.add(str(spool.write_incoming(encode(mammogram(4)))), "1.2.4", "1.2", MG, "MOD", "b")[0]
    queue.close_batch("b")
    Worker(queue, spool, unsupported, Routing(), backoff=Backoff(base_seconds=0, jitter=0)).run_once()
    queue.failing.clear()
    assert queue.requeue_running() == 1  # what `cfia serve` does at start-up
    assert Worker(queue, spool, blob, Routing(), backoff=Backoff(base_seconds=0, jitter=0)).run_once()
    assert queue.get(job2).state == "failed" and "not a single-frame MG image" in queue.get(job2).error
    reason = json.loads((spool.dead_letter / str(job2) / "reason.json").read_text())
    assert "not a single-frame MG image" in reason["reason"]
    queue.close()


def test_results_a_full_disk_cannot_take_are_retried_without_spending_attempts(make_node, dest, monkeypatch):
    """A full disk is not the job's fault: with max_retries 0 a counted attempt would
    dead-letter the job at once."""
    import errno

    node = make_node(Routing(fixed=(_to(dest),)), max_retries=0)
    write_results, full = node.spool.write_results, [2]

    def fills_up(job_id, results):
        if full[0]:
            full[0] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_results(job_id, results)

    monkeypatch.setattr(node.spool, "write_results", fills_up)
    assert push(node.port, [mammogram(5)]) == [0x0000]
    node.wait_counts(done=1)
    assert node.queue.get(1).attempts == 1 and len(dest.received) == len(OBJECT_TYPES)


def test_an_exception_that_quotes_a_value_is_one_line_in_the_reason(make_node, dest):
    """A site's processor may put a header value, line breaks and all, into its
    exception: it reaches the log, reason.json and `cfia status` as one line."""
    def quoting(ds):
        raise ValueError("bad value 'X'\nforged: line")

    node = make_node(Routing(fixed=(_to(dest),)), processor=quoting, max_retries=0)
    assert push(node.port, [mammogram(5)]) == [0x0000]
    node.wait_counts(failed=1)
    reason = json.loads((node.spool.dead_letter / "1" / "reason.json").read_text())
    assert reason["reason"] == "ValueError: bad value 'X'\\nforged: line"
    assert node.queue.get(1).error == reason["reason"]


def test_failing_processor_is_retried_then_dead_lettered(make_node, dest):
    calls = []

    def broken(ds):
        calls.append(ds.SOPInstanceUID)
        raise RuntimeError("model exploded")

    node = make_node(Routing(fixed=(_to(dest),)), processor=broken, max_retries=2)
    assert push(node.port, [mammogram(5)]) == [0x0000]
    node.wait_counts(failed=1)
    assert len(calls) == 3  # first try + 2 retries
    reason = json.loads((node.spool.dead_letter / "1" / "reason.json").read_text())
    assert reason["reason"] == "RuntimeError: model exploded" and reason["attempts"] == 3
    assert (node.spool.dead_letter / "1" / "source.dcm").exists()
    assert dest.received == []


def test_results_that_cannot_be_written_are_removed_and_retried(make_node, dest, caplog):
    """A results write that fails (a full disk; here a folder where the last object's file
    goes) leaves no partial set behind and is retried with its reason, not dead-lettered
    later as a worker that died."""
    node = make_node(Routing(fixed=(_to(dest),)), max_retries=2)
    blocker = node.spool.results / "1" / "gsps.dcm" / "in-the-way"
    blocker.mkdir(parents=True)
    assert push(node.port, [mammogram(5)]) == [0x0000]
    node.wait_counts(done=1)
    reasons = [getattr(r, "reason", "") for r in caplog.records if r.name == "cfia.worker"]
    assert any(r.startswith("cannot write results") for r in reasons), reasons
    assert "worker error" not in caplog.text
    assert len(dest.received) == len(OBJECT_TYPES)  # the retry wrote and sent the whole set


def test_undecodable_image_goes_to_dead_letter_at_once(make_node, dest):
    node = make_node(Routing(fixed=(_to(dest),)))
    ds = mammogram(6)
    ds.compress(JPEG2000Lossless)
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(200)])  # a J2K header, then nothing
    assert push(node.port, [ds]) == [0x0000]  # the handler cannot afford a decode
    node.wait_counts(failed=1)
    reason = json.loads((node.spool.dead_letter / "1" / "reason.json").read_text())
    assert reason["attempts"] == 1 and "cannot be decoded" in reason["reason"]


def test_source_that_cannot_carry_results_goes_to_dead_letter_at_once(make_node, dest):
    calls = []
    healthy = blob(Config())

    def counting(ds):
        calls.append(ds.SOPInstanceUID)
        return healthy(ds)

    node = make_node(Routing(fixed=(_to(dest),)), processor=counting, max_retries=2)
    ds = mammogram(10)
    del ds.ImagerPixelSpacing  # Type 1 in the MG IOD, but a source without it does arrive
    assert push(node.port, [ds]) == [0x0000]
    node.wait_counts(failed=1)
    reason = json.loads((node.spool.dead_letter / "1" / "reason.json").read_text())
    assert reason["attempts"] == 1 and len(calls) == 1
    assert "no result objects" in reason["reason"] and "ImagerPixelSpacing" in reason["reason"]
    assert dest.received == []


def test_image_that_is_no_readable_mammogram_goes_to_dead_letter_at_once(make_node, dest):
    """cfia.dicom_io refuses it (here: 16x16 pixels) the same way on every try."""
    from cfia.dicom_io import from_dataset

    calls = []
    healthy = blob(Config())

    def reading(ds):  # as the real pipeline does: read the image before explaining it
        calls.append(ds.SOPInstanceUID)
        from_dataset(ds)
        return healthy(ds)

    node = make_node(Routing(fixed=(_to(dest),)), processor=reading, max_retries=2)
    ds = mammogram(11)
    ds.Rows = ds.Columns = 16
    ds.PixelData = bytes(16 * 16 * 2)
    assert push(node.port, [ds]) == [0x0000]
    node.wait_counts(failed=1)
    reason = json.loads((node.spool.dead_letter / "1" / "reason.json").read_text())
    assert reason["attempts"] == 1 and len(calls) == 1 and "too small to be a mammogram" in reason["reason"]


def test_return_to_sender_and_missing_destination(make_node, dest):
    routing = Routing(return_to_sender=(("WORKSTATION", _to(dest, "ws")),))
    node = make_node(routing, outputs=OutputsConfig(fractional_seg=False, parametric_map=False, sr=False,
                                                    gsps=False))
    assert push(node.port, [mammogram(7)], calling_ae="WORKSTATION") == [0x0000]
    assert push(node.port, [mammogram(8)], calling_ae="STRANGER") == [0x0000]
    node.wait_counts(done=1, failed=1)
    assert [ds.get("SegmentationType") for ds in dest.received] == ["BINARY"]
    reason = json.loads((node.spool.dead_letter / "2" / "reason.json").read_text())
    assert "no destination" in reason["reason"]


def test_missing_source_file_is_retried_then_dead_lettered(make_node, dest):
    node = make_node(Routing(fixed=(_to(dest),)), max_retries=1)
    node.worker.queue.add("/nonexistent/source.dcm", "1.2.3.4", "1.2", "1.2.840.10008.5.1.4.1.1.1.2", "MOD", "gone")
    node.queue.close_batch("gone")
    node.wait_counts(failed=1)
    reason = json.loads((node.spool.dead_letter / "1" / "reason.json").read_text())
    assert reason["reason"].startswith("cannot read source: FileNotFoundError") and reason["attempts"] == 2


def test_failed_job_is_requeued_once_its_cause_is_fixed(make_node, dest, tmp_path, capsys):
    """`cfia requeue`: the dead-lettered source goes back to the queue and is processed;
    the old reason is kept; a job that is not failed is refused with exit code 2."""
    from cfia import cli

    broken = {"yes": True}
    healthy = blob(Config())

    def flaky(ds):
        if broken["yes"]:
            raise RuntimeError("model file unreadable")
        return healthy(ds)

    node = make_node(Routing(fixed=(_to(dest),)), processor=flaky, max_retries=0)
    source = mammogram(9)
    assert push(node.port, [source]) == [0x0000]
    node.wait_counts(failed=1)
    broken["yes"] = False
    config = tmp_path / "config.yaml"
    config.write_text(f"spool:\n  folder: {node.spool.root}\n")
    assert cli.main(["requeue", "--config", str(config), "--all-failed"]) == 0
    assert "job 1 requeued" in capsys.readouterr().out
    node.wait_counts(done=1, failed=0)
    assert len(dest.received) == 5
    assert all(ds.StudyInstanceUID == source.StudyInstanceUID for ds in dest.received)
    assert not (node.spool.dead_letter / "1").exists()
    kept, = node.spool.dead_letter.glob("1.requeued-*")
    assert json.loads((kept / "reason.json").read_text())["reason"] == "RuntimeError: model file unreadable"
    assert list(kept.glob("*.dcm")) == [] and list(node.spool.incoming.iterdir()) == []
    assert cli.main(["requeue", "--config", str(config), "1"]) == 2
    assert "job 1 is done, not failed" in capsys.readouterr().err
    assert cli.main(["requeue", "--config", str(config)]) == 2


def test_a_lost_results_folder_is_explained_again_not_counted_as_sent(tmp_path, dest):
    """A job `sending` whose results folder is gone (a crash while dead-lettering)
    goes back to processing; nothing is marked delivered that was not sent."""
    from listener.spool import encode

    spool = Spool(tmp_path / "spool").create()
    queue = JobQueue(spool.queue_file)
    job = queue.add(str(spool.write_incoming(encode(mammogram(3)))), "1.2.3", "1.2", MG, "MOD", "a")[0]
    queue.close_batch("a")
    queue.claim("setup")
    queue.set_results(job, str(spool.results / str(job)), 1.0)  # never written
    queue.requeue_running("setup")
    worker = Worker(queue, spool, blob(Config()), Routing(fixed=(_to(dest),)), backoff=FAST)
    assert worker.run_once()
    lost = queue.get(job)
    assert (lost.state, lost.results, lost.delivered) == ("queued", None, ())
    assert dest.received == [] and "results folder missing" in lost.error
    assert worker.run_once() and queue.get(job).state == "done"
    assert len(dest.received) == 5
    queue.close()


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FakeSender:
    """Destinations by name: `down` raise DestinationUnavailable, `status` answers every
    object with that status; `calls` counts the sends to each, `got` the jobs' files stored."""

    def __init__(self, down=(), status=None, aborting=(), clock=None, hang=0.0):
        self.down, self.status, self.aborting = set(down), dict(status or {}), set(aborting)
        self.clock, self.hang = clock, hang  # a send to one that is down takes `hang` s on `clock`
        self.calls, self.got = {}, {}

    def __call__(self, files, dest, calling_ae="CFIA"):
        from dicom_out import DestinationUnavailable

        self.calls[dest.name] = self.calls.get(dest.name, 0) + 1
        if dest.name in self.down:
            if self.clock is not None:
                self.clock.now += self.hang
            raise DestinationUnavailable(f"no association with {dest.name}")
        if dest.name in self.aborting:
            from dicom_out.sender import StoreRefused

            raise StoreRefused(f"{dest.name} aborted the association at the first C-STORE")
        status = self.status.get(dest.name, 0x0000)
        if status == 0x0000:
            self.got.setdefault(dest.name, []).append(files[0].parent.name)  # results/<job>/
        return {str(f): status for f in files}


def _fake_worker(tmp_path, sender, names, images=2, max_retries=2, base=0.0):
    """A worker on `images` queued jobs; with a `base` (the hold-off) it runs on a fake clock."""
    from listener.spool import encode

    clock = FakeClock()
    spool = Spool(tmp_path / "spool").create()
    queue = JobQueue(spool.queue_file, clock=clock)
    for i in range(images):
        queue.add(str(spool.write_incoming(encode(mammogram(i)))), f"1.2.{i}", "1.2", MG, "MOD", "a")
    queue.close_batch("a")
    routing = Routing(fixed=tuple(Destination(n, "DEST", "127.0.0.1", 104 + i) for i, n in enumerate(names)))
    worker = Worker(queue, spool, blob(Config(outputs=OutputsConfig(fractional_seg=False, parametric_map=False,
                                                                    gsps=False))),
                    routing, max_retries=max_retries, backoff=Backoff(base_seconds=base, jitter=0),
                    sender=sender, **({"clock": clock} if base else {}))
    return worker, queue, spool, clock


@pytest.mark.parametrize("refusal", [0x0122, 0xA700], ids=["sop-class", "failure-status"])
def test_a_destination_given_up_on_does_not_dead_letter_one_that_is_only_down(tmp_path, refusal):
    """`nopm` refuses for good (0x0122 at once, 0xA700 after max_retries), `later` is down:
    the job waits for `later`, delivers to it once it is back, and only then is
    dead-lettered, naming `nopm`; `nopm` is not sent to again once given up on."""
    sender = FakeSender(down={"later"}, status={"nopm": refusal})
    worker, queue, spool, clock = _fake_worker(tmp_path, sender, ["nopm", "later"], images=1, max_retries=1)
    nopm_sends = 1 if refusal == 0x0122 else 2  # the first send + max_retries
    refusals = 0 if refusal == 0x0122 else 2  # a SOP class not accepted is no refusal
    for _ in range(4):  # job 1: processed and sent, then resent as often as `later` stays down
        assert worker.run_once()
        clock.now += 100
        assert queue.get(1).state == "sending"
    job = queue.get(1)
    assert sender.calls == {"nopm": nopm_sends, "later": 4} and job.delivered == ()
    assert [key.split(":")[0] for key, _ in job.given_up] == ["nopm"] and f"{refusal:#06x}" in job.given_up[0][1]
    sender.down.clear()  # `later` is back
    assert worker.run_once()
    job = queue.get(1)
    assert job.state == "failed" and sender.got == {"later": ["1"]} and sender.calls["nopm"] == nopm_sends
    reason = json.loads((spool.dead_letter / "1" / "reason.json").read_text())
    assert reason["reason"].startswith("nopm refused ") and reason["reason"].endswith("; delivered to later")
    assert "no association" not in reason["reason"] and reason["refusals"] == refusals
    assert reason["send_attempts"] == 5 and (spool.dead_letter / "1" / "results").is_dir()


def test_a_destination_found_unavailable_is_not_tried_again_within_its_hold_off(tmp_path, caplog):
    """One that hangs costs a timeout per send: the next job skips it (logged once) and
    reaches the other destination at once; after the hold-off (the send backoff's base,
    doubling while it stays unavailable) it is tried again."""
    from listener.spool import encode

    sender = FakeSender(down={"hung"})
    worker, queue, spool, clock = _fake_worker(tmp_path, sender, ["hung", "good"], base=10.0)
    assert worker.run_once() and worker.run_once()  # two new images, within the hold-off
    assert sender.calls == {"hung": 1, "good": 2} and sender.got == {"good": ["1", "2"]}
    assert caplog.text.count("not tried for now") == 1
    assert [queue.get(j).state for j in (1, 2)] == ["sending", "sending"]
    assert "no association with hung" in queue.get(2).error
    clock.now += 10  # the hold-off is over, so is job 1's backoff
    assert worker.run_once() and sender.calls["hung"] == 2  # tried again: down, held for 20 s now
    assert worker.run_once() and sender.calls["hung"] == 2
    assert caplog.text.count("not tried for now") == 2
    clock.now += 15
    queue.add(str(spool.write_incoming(encode(mammogram(3)))), "1.2.3", "1.2", MG, "MOD", "b")
    queue.close_batch("b")
    assert worker.run_once() and sender.calls["hung"] == 2 and sender.got["good"] == ["1", "2", "3"]
    sender.down.clear()
    clock.now += 100
    for _ in range(3):
        assert worker.run_once()
    assert sender.calls["hung"] == 5 and [queue.get(j).state for j in (1, 2, 3)] == ["done"] * 3
    assert sender.calls["good"] == 3  # not sent again


def test_a_destination_that_hangs_is_held_at_least_as_long_as_its_send_took(tmp_path):
    """A send that runs into a 30 s timeout is not tried again 1 s later (send backoff 1 s),
    or every new image would pay the timeout again."""
    sender = FakeSender(down={"hung"}, hang=30.0)
    worker, queue, spool, clock = _fake_worker(tmp_path, sender, ["hung", "good"], base=1.0)
    sender.clock = clock
    assert worker.run_once() and sender.calls == {"hung": 1, "good": 1}
    clock.now += 20
    assert worker.run_once() and sender.calls == {"hung": 1, "good": 2}  # job 2: skipped
    clock.now += 11
    assert worker.run_once() and sender.calls["hung"] == 2  # job 1 again, the hold-off over


def test_a_destination_aborting_the_first_store_is_refusing_not_down(tmp_path):
    """Orthanc that does not allow cfia's AE: counted toward max_retries like a failure
    status, then given up on, instead of keeping the job `sending` for ever."""
    sender = FakeSender(aborting={"orthanc"})
    worker, queue, spool, _ = _fake_worker(tmp_path, sender, ["orthanc", "good"], images=1, max_retries=1)
    assert worker.run_once() and queue.get(1).state == "sending"
    assert worker.run_once() and queue.get(1).state == "failed"
    reason = json.loads((spool.dead_letter / "1" / "reason.json").read_text())
    assert sender.calls == {"orthanc": 2, "good": 1} and reason["refusals"] == 2
    assert "aborted the association at the first C-STORE (calling AE CFIA)" in reason["reason"]


def test_each_destination_is_given_up_on_after_its_own_refusals(tmp_path):
    """Refusals were counted per job: once one destination had used up max_retries, another
    coming back from an outage was given up on at its first failure status."""
    sender = FakeSender(down={"B"}, status={"A": 0xA700})
    worker, queue, spool, clock = _fake_worker(tmp_path, sender, ["A", "B"], images=1, max_retries=2)
    for _ in range(3):  # A: the first send and 2 retries, then given up; B down throughout
        assert worker.run_once()
        clock.now += 100
    assert [key.split(":")[0] for key, _ in queue.get(1).given_up] == ["A"]
    sender.down.clear()
    sender.status["B"] = 0xA700  # B is back and refuses once, then accepts
    assert worker.run_once()
    assert queue.get(1).state == "sending" and [key.split(":")[0] for key, _ in queue.get(1).given_up] == ["A"]
    del sender.status["B"]
    clock.now += 100
    assert worker.run_once()
    job = queue.get(1)
    assert job.state == "failed" and "delivered to B" in job.error and sender.got["B"]


def test_a_reason_beside_a_source_still_in_the_spool_is_processed_not_failed(tmp_path, dest):
    """reason.json is written before the source moves to dead-letter/, and `cfia requeue`
    commits the job before it retires the old folder: in either gap the source is still in
    the spool. Taking the job for dead-lettered failed it, and the next start deleted the
    source as an orphan."""
    from listener.spool import encode

    spool = Spool(tmp_path / "spool").create()
    queue = JobQueue(spool.queue_file)
    source = spool.write_incoming(encode(mammogram(3)))
    job = queue.add(str(source), "1.2.3", "1.2", MG, "MOD", "a")[0]
    queue.close_batch("a")
    letter = spool.dead_letter / str(job)
    letter.mkdir()
    (letter / "reason.json").write_text(json.dumps({"reason": "an earlier failure"}))
    worker = Worker(queue, spool, blob(Config()), Routing(fixed=(_to(dest),)),
                    backoff=Backoff(base_seconds=0, jitter=0))
    assert worker.run_once()
    assert queue.get(job).state == "done" and len(dest.received) == len(OBJECT_TYPES)
    queue.close()


def test_a_dead_letter_stopped_between_its_source_and_its_results_gets_its_results(tmp_path):
    """The results stayed in results/ (for the next start to delete) and the dead letter
    lacked the results/ that operations.md says it holds."""
    from listener.spool import encode

    spool = Spool(tmp_path / "spool").create()
    queue = JobQueue(spool.queue_file)
    job = queue.add(str(spool.write_incoming(encode(mammogram(3)))), "1.2.3", "1.2", MG, "MOD", "a")[0]
    queue.close_batch("a")
    (spool.results / str(job)).mkdir()
    (spool.results / str(job) / "sr.dcm").write_bytes(b"result")
    letter = spool.dead_letter / str(job)
    letter.mkdir()
    (letter / "reason.json").write_text(json.dumps({"reason": "refused"}))
    spool.locate(queue.get(job).path).rename(letter / "source.dcm")  # stopped here
    assert Worker(queue, spool, blob(Config()), Routing(), backoff=Backoff(base_seconds=0, jitter=0)).run_once()
    assert queue.get(job).state == "failed" and queue.get(job).error == "refused"
    assert (letter / "results" / "sr.dcm").read_bytes() == b"result" and not (spool.results / str(job)).exists()
    assert json.loads((letter / "reason.json").read_text())["reason"] == "refused"
    queue.close()


def _sending_job(spool, queue, results) -> int:
    """A job whose results are on disk and whose destinations were down: `sending`."""
    from listener.spool import encode

    job = queue.add(str(spool.write_incoming(encode(mammogram(3)))), "1.2.3", "1.2", MG, "MOD", "a")[0]
    queue.close_batch("a")
    queue.claim("w")
    queue.set_results(job, str(spool.write_results(job, results)), 1.0)
    queue.retry_later(job, "down", 0, sending=True)
    return job


def test_results_built_under_other_outputs_are_not_sent_as_they_are(tmp_path, dest):
    """Restarted with an output turned off (a PACS that takes no GSPS), jobs in `sending` sent
    the objects built before, and were dead-lettered for the output the operator had turned off;
    with an output turned on, they lacked it."""
    spool = Spool(tmp_path / "spool").create()
    queue = JobQueue(spool.queue_file)
    some = ["binary_seg", "sr"]
    fewer = _sending_job(spool, queue, blob(Config())(mammogram(3)))
    worker = Worker(queue, spool, blob(Config()), Routing(fixed=(_to(dest),)), outputs=some,
                    backoff=Backoff(base_seconds=0, jitter=0))
    assert worker.run_once() and queue.get(fewer).state == "done"
    assert sorted(str(ds.SeriesDescription) for ds in dest.received) == [
        "cfia explanation report (SR)", "cfia salient region (BINARY SEG)"]
    dest.received.clear()
    off = {k: False for k in OBJECT_TYPES if k not in some}
    more = _sending_job(spool, queue, blob(Config(outputs=OutputsConfig(**off)))(mammogram(3)))
    worker.outputs, worker.max_retries = frozenset(OBJECT_TYPES), 0  # not the job's failure: no retry spent
    assert worker.run_once() and queue.get(more).state == "queued"  # explained again, with every output
    assert worker.run_once() and queue.get(more).state == "done" and len(dest.received) == len(OBJECT_TYPES)
    queue.close()


def test_a_destination_given_up_on_and_then_fixed_or_removed_does_not_fail_a_delivered_job(tmp_path, dest):
    """Given up on under a wrong AE title, fixed in config.yaml as the reason says, restarted:
    the job reached every configured destination and was dead-lettered all the same."""
    spool = Spool(tmp_path / "spool").create()
    queue = JobQueue(spool.queue_file)
    job = _sending_job(spool, queue, blob(Config())(mammogram(3)))
    queue.give_up(job, "pacs:WRONG@127.0.0.1:1", "rejected the association permanently")
    worker = Worker(queue, spool, blob(Config()), Routing(fixed=(_to(dest),)), backoff=Backoff(base_seconds=0, jitter=0))
    assert worker.run_once()
    assert queue.get(job).state == "done" and len(dest.received) == len(OBJECT_TYPES)
    queue.close()


def test_retries_used_up_under_a_lowered_max_retries_keep_the_error(tmp_path):
    """max_retries lowered below a job's attempts: it was dead-lettered as "worker died"
    though none had, and the error it had failed with was lost."""
    from listener.spool import encode

    spool = Spool(tmp_path / "spool").create()
    queue = JobQueue(spool.queue_file)
    job = queue.add(str(spool.write_incoming(encode(mammogram(3)))), "1.2.3", "1.2", MG, "MOD", "a")[0]
    queue.close_batch("a")
    for _ in range(2):
        queue.claim("w")
        queue.retry_later(job, "RuntimeError: transient GPU error", 0)
    Worker(queue, spool, blob(Config()), Routing(), max_retries=0, backoff=Backoff(base_seconds=0, jitter=0)).run_once()
    failed = queue.get(job)
    assert failed.state == "failed" and "RuntimeError: transient GPU error" in failed.error, failed.error
    assert "worker died" not in failed.error
    queue.close()


def test_a_processor_that_never_builds_an_enabled_output_uses_up_its_retries(tmp_path, dest):
    """Re-explaining for a missing output is free only for results an earlier claim built:
    results this claim built and lack one would re-explain for ever."""
    from listener.spool import encode

    spool = Spool(tmp_path / "spool").create()
    queue = JobQueue(spool.queue_file)
    job = queue.add(str(spool.write_incoming(encode(mammogram(3)))), "1.2.3", "1.2", MG, "MOD", "a")[0]
    queue.close_batch("a")
    no_gsps = blob(Config(outputs=OutputsConfig(gsps=False)))
    worker = Worker(queue, spool, no_gsps, Routing(fixed=(_to(dest),)), outputs=OBJECT_TYPES, max_retries=1,
                    backoff=Backoff(base_seconds=0, jitter=0))
    for _ in range(6):
        worker.run_once()
    assert queue.get(job).state == "failed" and "results lack gsps" in queue.get(job).error
    queue.close()


def test_another_images_dead_letter_under_the_jobs_id_is_not_taken_for_its_own(tmp_path):
    """A dead-letter/ restored beside a newer queue: job 1's source missing (a retry case)
    was recorded failed with the other image's reason."""
    from listener.spool import encode

    spool = Spool(tmp_path / "spool").create()
    queue = JobQueue(spool.queue_file)
    job = queue.add(str(spool.write_incoming(encode(mammogram(3)))), "1.2.3", "1.2", MG, "MOD", "a")[0]
    queue.close_batch("a")
    spool.locate(queue.get(job).path).unlink()  # its source gone (retried, then dead-lettered)
    letter = spool.dead_letter / str(job)
    letter.mkdir()
    (letter / "reason.json").write_text(json.dumps({"job": job, "sop_instance_uid": "9.9.9", "reason": "theirs"}))
    Worker(queue, spool, blob(Config()), Routing(), backoff=Backoff(base_seconds=0, jitter=0)).run_once()
    assert queue.get(job).error != "theirs" and "cannot read source" in queue.get(job).error
    assert json.loads((letter / "reason.json").read_text())["reason"] == "theirs"
    queue.close()


def test_objects_that_build_but_cannot_be_written_are_dead_lettered_after_one_explanation(tmp_path):
    """A source value with a VR it cannot be written in (StationName as UL; highdicom copies it
    into ContributingEquipmentSequence) built objects that failed only when written: the worker
    took that for its own error and explained the image again, max_retries times (a fuzzer's find)."""
    import io
    from types import SimpleNamespace

    import numpy as np
    import pydicom
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    from cfia.pipeline import Pipeline, Result
    from dicom_out import AlgorithmInfo, Explanation, build_results

    ds = mammogram(3)
    tag = Tag(0x00081010)
    ds[tag] = RawDataElement(tag, "UL", 12, b"CFIA-PHANTOM", 0, False, True)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    spool = Spool(tmp_path / "spool").create()
    queue = JobQueue(spool.queue_file, quiet_seconds=0)
    queue.add(str(spool.write_incoming([buffer.getvalue()])), ds.SOPInstanceUID, ds.StudyInstanceUID,
              ds.SOPClassUID, "MODALITY", "b")
    queue.close_batch("b")
    info = AlgorithmInfo(model_name="m.pt", model_version="0123456789abcdef", method="cf", settings="fedcba9876543210")

    def build(source, result):
        saliency = np.zeros((source.Rows, source.Columns), np.float32)
        saliency[40:60, 40:60] = 1.0
        return build_results(source, Explanation(saliency=saliency, region=saliency > 0.5, score=0.8,
                                                 score_after_deletion=0.2, positive=True), info)
    stand_in = SimpleNamespace(build_objects=build)
    explained = []

    def processor(source: pydicom.Dataset):
        explained.append(source.SOPInstanceUID)
        return Pipeline.result_objects(stand_in, source, Result("cf", *(None,) * 8))

    worker = Worker(queue, spool, processor, Routing(), max_retries=3, backoff=FAST)
    while worker.run_once():
        pass
    job = queue.get(1)
    assert len(explained) == 1 and job.state == "failed"
    assert "cannot be built from this source's header" in job.error and "CFIA-PHANTOM" not in job.error


def test_an_implant_view_is_logged_with_its_uids_only(make_node, dest, caplog):
    """The worker's log says which explained images show a breast implant (the GSPS note says
    it in the results, pipeline.CAVEAT_IMPLANT), by UID: no patient name or ID."""
    implant, plain = mammogram(5), mammogram(6)
    implant.BreastImplantPresent, plain.BreastImplantPresent = "YES", "NO"
    node = make_node(Routing(fixed=(_to(dest),)))
    assert push(node.port, [implant, plain]) == [0x0000, 0x0000]
    node.wait_counts(done=2)
    warned = [r for r in caplog.records if r.name == "cfia.worker" and "breast implant" in r.getMessage()]
    assert [r.sop_instance_uid for r in warned] == [implant.SOPInstanceUID]
    assert str(implant.PatientName) not in caplog.text and str(implant.PatientID) not in caplog.text
