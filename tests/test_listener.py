"""listener/: the SCP in-process on a free loopback port, with a real SCU."""
from __future__ import annotations

import copy
import errno
import logging
import os
import ssl
import stat
import subprocess
from io import BytesIO

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (ExplicitVRLittleEndian, JPEG2000, JPEG2000Lossless, JPEGBaseline8Bit, JPEGLSLossless,
                         RLELossless, generate_uid)
from pynetdicom import AE
from pynetdicom.sop_class import BasicTextSRStorage

import listener
from listener import Intake, JobQueue, ListenerSettings, Spool, statuses
from node_helpers import echo, files_sent_as_stored, mammogram, poll, push, write
from peer_helpers import require_programs

MG = "1.2.840.10008.5.1.4.1.1.1.2"


@pytest.fixture
def start_listener(tmp_path):
    servers = []

    def start(spool_cls=Spool, quiet_seconds=60.0, **settings):
        spool = spool_cls(tmp_path / "spool").create()
        queue = JobQueue(spool.queue_file, quiet_seconds=quiet_seconds)
        intake = Intake(spool, queue)
        server = listener.start(ListenerSettings(port=0, **settings), intake)
        servers.append(server)
        return server.server_address[1], intake

    yield start
    for server in servers:
        server.shutdown()


def test_echo_makes_no_job(start_listener):
    port, intake = start_listener()
    assert echo(port) == 0x0000
    assert sum(intake.queue.counts().values()) == 0


@pytest.mark.parametrize("abort", [False, True])
def test_store_is_spooled_0600_and_queued_on_release(start_listener, abort):
    """Released or aborted, the association's images are ready at once (not after the quiet
    period, 60 s here)."""
    port, intake = start_listener()
    ds = mammogram(0)
    assert push(port, [ds], abort=abort) == [0x0000]
    counts = poll(lambda: (c := intake.queue.counts())["queued"] == 1 and c, what="job queued on release",
                  timeout=10)
    assert counts["pending"] == 0
    files = list(intake.spool.incoming.iterdir())
    assert len(files) == 1
    assert stat.S_IMODE(os.stat(files[0]).st_mode) == 0o600
    back = pydicom.dcmread(files[0])
    assert back.SOPInstanceUID == ds.SOPInstanceUID and back.PixelData == ds.PixelData


def test_unknown_caller_is_rejected(start_listener):
    port, _ = start_listener(allowed_calling_ae_titles=("MODALITY",))
    assert echo(port, calling_ae="STRANGER") is None
    assert echo(port, calling_ae="MODALITY") == 0x0000


def _file_with_body(tmp_path, name: str, body: bytes, sop_class: str = MG, sop_instance: str | None = None) -> str:
    """A file with valid file meta and an arbitrary dataset body, sent as is (the request
    names `sop_instance`, a new UID when not given)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    head = BytesIO()
    pydicom.filewriter.write_file_meta_info(head, meta, enforce_standard=True)
    path = tmp_path / name
    path.write_bytes(b"\0" * 128 + b"DICM" + head.getvalue() + body)
    return str(path)


def _body(ds: Dataset) -> bytes:
    buffer = BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    whole = buffer.getvalue()
    return whole[whole.index(b"DICM") + 4 + _meta_length(whole):]


def _meta_length(whole: bytes) -> int:
    # (0002,0000) UL group length: 12 bytes of element + its value
    start = whole.index(b"DICM") + 4
    return 12 + int.from_bytes(whole[start + 8:start + 12], "little")


def test_bad_data_gets_its_status_and_the_node_keeps_serving(start_listener, tmp_path):
    port, intake = start_listener()
    good = mammogram(1)
    body = _body(good)
    short = copy.deepcopy(good)
    short.PixelData = good.PixelData[:-200]
    no_rows = copy.deepcopy(good)
    del no_rows.Rows
    text = Dataset()
    text.SOPClassUID, text.SOPInstanceUID = BasicTextSRStorage, generate_uid()
    long_series, lettered_study = copy.deepcopy(good), copy.deepcopy(good)
    long_series.SeriesInstanceUID = "1.2." + "3" * 70  # results derive their UIDs from it
    lettered_study.StudyInstanceUID = "1.2.840.STUDY.7"
    long_by_a_row = copy.deepcopy(good)  # another image size than the header says
    long_by_a_row.PixelData = good.PixelData + bytes(good.Columns * good.BitsAllocated // 8)
    huge = copy.deepcopy(good)
    huge.Rows = 65535  # checked before the pixel data: a compressed payload would not tell
    other_meta = pydicom.dcmread(write(copy.deepcopy(good), tmp_path / "meta.dcm"))
    other_meta.file_meta.MediaStorageSOPInstanceUID = generate_uid()  # sent as stored: the request's UID
    cases = {
        # a sequence whose items are not items: pydicom cannot parse it
        "corrupt": (_file_with_body(tmp_path, "corrupt.dcm", b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff"
                                    + b"\x01\x02" * 20), statuses.CANNOT_DECODE),
        # pydicom parses this leniently into nonsense without a SOP identity
        "garbage": (_file_with_body(tmp_path, "garbage.dcm", bytes(range(256)) * 4), statuses.CANNOT_DECODE),
        "truncated": (_file_with_body(tmp_path, "truncated.dcm", body[: len(body) // 2],
                                      sop_instance=good.SOPInstanceUID), statuses.PIXEL_LENGTH_MISMATCH),
        "pixel length": (write(short, tmp_path / "short.dcm"), statuses.PIXEL_LENGTH_MISMATCH),
        "a row too many": (write(long_by_a_row, tmp_path / "row.dcm"), statuses.PIXEL_LENGTH_MISMATCH),
        "no rows": (write(no_rows, tmp_path / "norows.dcm"), statuses.MISSING_IMAGE_ATTRIBUTES),
        "empty": (_file_with_body(tmp_path, "empty.dcm", b""), statuses.EMPTY_DATASET),
        "non-image under MG": (_file_with_body(tmp_path, "sr.dcm", _body(_with_meta(text))),
                               statuses.SOP_CLASS_MISMATCH),
        "series UID of 74 characters": (write(long_series, tmp_path / "long.dcm"), statuses.INVALID_UID),
        "study UID with letters": (write(lettered_study, tmp_path / "letters.dcm"), statuses.INVALID_UID),
        "65535 rows": (write(huge, tmp_path / "huge.dcm"), statuses.TOO_LARGE),
        # BitsAllocated of 3 bytes: pydicom cannot convert it (the handler's 0xC211 until session 45)
        "BitsAllocated of 3 bytes": (_file_with_body(tmp_path, "bits3.dcm", body.replace(
            b"\x28\x00\x00\x01US\x02\x00\x10\x00", b"\x28\x00\x00\x01US\x03\x00\x10\x00\x00"),
            sop_instance=good.SOPInstanceUID), statuses.CANNOT_DECODE),
        "request and dataset name other instances": (_saved(other_meta, tmp_path / "other.dcm"),
                                                     statuses.INSTANCE_MISMATCH),
    }
    for name, (path, expected) in cases.items():
        with files_sent_as_stored():
            assert push(port, [path]) == [expected], name
        assert echo(port) == 0x0000, f"node stopped serving after {name}"
    assert sum(intake.queue.counts().values()) == 0
    assert list(intake.spool.incoming.iterdir()) == []


def test_a_few_bytes_of_excess_padding_are_accepted_and_dropped(start_listener, tmp_path):
    """Some writers pad pixel data past its length; the decoder drops the excess, so the
    image is not refused as truncated (0xC002)."""
    from cfia.dicom_io import from_dataset
    from cfia.worker import read_image

    port, intake = start_listener(quiet_seconds=0)
    good = mammogram(1)
    padded = copy.deepcopy(good)
    padded.PixelData = good.PixelData + b"\0\0"
    with files_sent_as_stored():
        assert push(port, [write(padded, tmp_path / "padded.dcm")]) == [0x0000]
    job = poll(lambda: intake.queue.claim("w"), what="the padded image queued")
    stored = read_image(intake.spool.locate(job.path))
    assert (stored.pixel_array == good.pixel_array).all()
    assert from_dataset(stored).pixels.shape == (good.Rows, good.Columns)


def _saved(ds: Dataset, path) -> str:
    ds.save_as(path)  # as it is: no file meta check
    return str(path)


def _with_meta(ds: Dataset) -> Dataset:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def test_non_mammogram_sop_class_rejected_or_ignored(start_listener):
    text = Dataset()
    text.SOPClassUID, text.SOPInstanceUID = BasicTextSRStorage, generate_uid()
    _with_meta(text)
    port, intake = start_listener()  # default: reject, the context is not accepted
    assert push(port, [text, mammogram(2)]) == [None, 0x0000]
    port, intake = start_listener(ignore_other_sop_classes=True)
    assert push(port, [text]) == [0x0000]
    assert intake.counts["ignored"] == 1


def test_an_association_open_at_shutdown_may_finish_its_private_class_stores(tmp_path):
    """Shutdown lets open associations finish; `ignore`'s process-wide switch went off first,
    so a private-class store in the drain found no service and pynetdicom aborted it."""
    import threading

    spool = Spool(tmp_path / "spool").create()
    intake = Intake(spool, JobQueue(spool.queue_file))
    server = listener.start(ListenerSettings(port=0, ignore_other_sop_classes=True), intake)
    private = Dataset()
    private.SOPClassUID, private.SOPInstanceUID = "1.2.840.113543.6.6.1.3.10002", generate_uid()
    _with_meta(private)
    ae = AE(ae_title="PACS")
    ae.add_requested_context(private.SOPClassUID, ExplicitVRLittleEndian)
    port = server.server_address[1]
    assoc = ae.associate("127.0.0.1", port, ae_title="CFIA")
    assert assoc.is_established
    stopping = threading.Thread(target=server.shutdown, args=(30,))
    stopping.start()
    poll(lambda: not _accepting(port), what="the server no longer accepting")
    status = assoc.send_c_store(private)
    assert status and status.Status == 0x0000
    assoc.release()
    stopping.join(30)
    assert not stopping.is_alive() and intake.counts["ignored"] == 1


def _accepting(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_ignore_also_takes_private_sop_classes_and_refuses_mammograms_it_cannot_decode(start_listener):
    """A PACS pushing a whole study may send vendors' private objects: with `ignore` they
    are answered with success too. A mammogram in a syntax cfia cannot decode, which
    accepting every storage class lets through negotiation, is refused with 0xC005."""
    from pydicom.encaps import encapsulate

    private = Dataset()
    private.SOPClassUID, private.SOPInstanceUID = "1.2.840.113543.6.6.1.3.10002", generate_uid()
    _with_meta(private)
    part2 = mammogram(4)
    part2.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.92"  # JPEG 2000 Part 2: no decoder installed
    part2.PixelData = encapsulate([b"\xff\x4f" + bytes(98)])
    assert "1.2.840.10008.1.2.4.92" not in listener.decodable_transfer_syntaxes()
    port, intake = start_listener()
    assert push(port, [private, mammogram(6)]) == [None, 0x0000]  # reject: no context for it
    port, intake = start_listener(ignore_other_sop_classes=True)
    assert push(port, [private, part2, mammogram(5)]) == [0x0000, statuses.UNDECODABLE_SYNTAX, 0x0000]
    assert intake.counts["ignored"] == 1 and intake.counts["received"] == 1


def test_dcmtk_pushing_a_private_object_to_ignore_gets_success(start_listener, tmp_path):
    """As a PACS pushes a whole study: dcmtk's dcmsend with a vendor's private SOP class."""
    from peer_helpers import require_programs

    require_programs("/usr/bin/dcmsend")
    private = Dataset()
    private.SOPClassUID, private.SOPInstanceUID = "1.2.840.113543.6.6.1.3.10002", generate_uid()
    _with_meta(private).save_as(tmp_path / "private.dcm", enforce_file_format=True)
    port, intake = start_listener(ignore_other_sop_classes=True)
    sent = subprocess.run(["/usr/bin/dcmsend", "-aet", "PACS", "-aec", "CFIA", "127.0.0.1", str(port),
                           str(tmp_path / "private.dcm")], capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    assert intake.counts["ignored"] == 1 and sum(intake.queue.counts().values()) == 0


def test_a_wrong_called_ae_title_is_rejected_and_logged(start_listener, caplog):
    port, intake = start_listener()
    with caplog.at_level(logging.WARNING, logger="cfia.listener"):
        assert echo(port, called_ae="NOT_CFIA") is None
    assert echo(port) == 0x0000
    assert intake.counts["rejected_called_ae"] == 1
    rejected, = [r for r in caplog.records if r.getMessage() == "association rejected"]
    assert (rejected.calling_ae, rejected.called_ae) == ("MODALITY", "NOT_CFIA")
    assert "listener.ae_title" in rejected.reason


def test_a_node_at_its_association_limit_says_busy_not_a_wrong_ae_title(start_listener, caplog):
    """pynetdicom rejects associations beyond the limit; the log and the metric took them
    for AE title errors, sending an administrator after a mistake that was not there."""
    port, intake = start_listener(max_associations=1)
    ae = AE(ae_title="BULK")
    ae.add_requested_context("1.2.840.10008.1.1")
    first = ae.associate("127.0.0.1", port, ae_title="CFIA")
    try:
        assert first.is_established
        with caplog.at_level(logging.WARNING, logger="cfia.listener"):
            second = ae.associate("127.0.0.1", port, ae_title="CFIA")
        assert second.is_rejected
        assert intake.counts["rejected_busy"] == 1 and intake.counts["rejected_called_ae"] == 0
        rejected, = [r for r in caplog.records if r.getMessage() == "association rejected"]
        assert "max_associations" in rejected.reason
    finally:
        first.release()


class FullDisk(Spool):
    def write_incoming(self, data: bytes):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_is_out_of_resources(start_listener):
    port, intake = start_listener(spool_cls=FullDisk)
    assert push(port, [mammogram(3)]) == [statuses.OUT_OF_RESOURCES]
    assert echo(port) == 0x0000


def test_compressed_transfer_syntaxes_are_negotiated_and_spooled(start_listener):
    offered = set(listener.decodable_transfer_syntaxes())
    assert {JPEGBaseline8Bit, JPEGLSLossless, JPEG2000Lossless, JPEG2000, RLELossless} <= offered
    port, intake = start_listener()
    sent = []
    for i, syntax in enumerate((RLELossless, JPEG2000Lossless)):
        ds = mammogram(10 + i)
        ds.compress(syntax)
        sent.append(ds)
    assert push(port, sent) == [0x0000, 0x0000]
    spooled = {pydicom.dcmread(p).file_meta.TransferSyntaxUID for p in intake.spool.incoming.iterdir()}
    assert spooled == {RLELossless, JPEG2000Lossless}


def test_resend_of_a_waiting_image_replaces_it(start_listener):
    port, intake = start_listener()
    ds = mammogram(4)
    assert push(port, [ds]) == [0x0000]
    assert push(port, [ds]) == [0x0000]
    poll(lambda: intake.queue.counts()["queued"] == 1, what="one job")
    spooled = list(intake.spool.incoming.iterdir())
    assert len(spooled) == 1
    assert intake.queue.paths() == {str(spooled[0])}  # the job reads the file that was kept


def test_tls(start_listener, tmp_path):
    require_programs("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
    port, _ = start_listener(ssl_context=listener.tls_context(str(cert), str(key), None))
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    assert echo(port, tls_args=(client, "localhost")) == 0x0000
    assert echo(port) is None  # plain DICOM is not spoken on a TLS port


def test_a_dataset_beyond_the_size_limit_ends_its_association_and_nothing_is_stored(start_listener, caplog):
    """pynetdicom gathers a dataset whole in memory and the intake checks only the pixel
    data's length: a 700 MB private element was taken, held in memory twice and spooled."""
    port, intake = start_listener(max_dataset_bytes=2 << 20)
    big = mammogram(2)
    big.add_new(0x00090010, "LO", "BIG")
    big.add_new(0x00091000, "OB", bytes(8 << 20))
    with caplog.at_level(logging.WARNING, logger="cfia.listener"):
        assert push(port, [big]) == [None]  # no status: the association was aborted
    assert intake.counts["rejected_too_large"] == 1 and sum(intake.queue.counts().values()) == 0
    assert list(intake.spool.incoming.iterdir()) == []
    assert any("max_dataset_mb" in getattr(r, "reason", "") for r in caplog.records)
    assert push(port, [mammogram(3)]) == [0x0000]  # the next association is served


def test_a_deflated_dataset_that_inflates_beyond_the_size_limit_is_refused(start_listener):
    """The limit counted wire bytes only: 385 kB of deflated zeros inflated to 300 MB in the
    listener, were spooled and inflated once more by the worker."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    port, intake = start_listener(max_dataset_bytes=2 << 20)
    small, bomb = mammogram(2), mammogram(3)
    bomb.add_new(0x00090010, "LO", "BIG")
    bomb.add_new(0x00091000, "OB", bytes(8 << 20))
    for ds in (small, bomb):
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    contexts = [(str(small.SOPClassUID), [DeflatedExplicitVRLittleEndian])]
    assert push(port, [bomb, small], contexts=contexts) == [statuses.TOO_LARGE, 0x0000]
    assert sum(intake.queue.counts().values()) == 1 and len(list(intake.spool.incoming.iterdir())) == 1


def test_command_fragments_inside_a_dataset_do_not_reset_the_size_limit(start_listener):
    """pynetdicom takes command fragments in the middle of a dataset; counting only dataset
    fragments, reset at each command fragment, let a peer send any size."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset
    from pynetdicom.dimse_messages import C_STORE_RQ
    from pynetdicom.dimse_primitives import C_STORE
    from pynetdicom.dsutils import encode
    from pynetdicom.pdu import P_DATA_TF
    from pynetdicom.pdu_items import PresentationDataValueItem

    port, intake = start_listener(max_dataset_bytes=2 << 20)
    big = mammogram(2)
    big.add_new(0x00090010, "LO", "BIG")
    big.add_new(0x00091000, "OB", bytes(8 << 20))
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(big.SOPClassUID, big.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="CFIA")
    assert assoc.is_established
    context = assoc.accepted_contexts[0].context_id
    request = C_STORE()
    request.MessageID, request.Priority = 1, 2
    request.AffectedSOPClassUID, request.AffectedSOPInstanceUID = big.SOPClassUID, big.SOPInstanceUID
    data = DicomBytesIO()
    data.is_little_endian, data.is_implicit_VR = True, big.file_meta.TransferSyntaxUID.is_implicit_VR
    write_dataset(data, big)
    request.DataSet = BytesIO(data.getvalue())
    message = C_STORE_RQ()
    message.primitive_to_message(request)

    def send(value: bytes) -> None:
        item = PresentationDataValueItem()
        item.presentation_context_id, item.presentation_data_value = context, value
        pdu = P_DATA_TF()
        pdu.presentation_data_value_items = [item]
        assoc.dul.socket.socket.sendall(pdu.encode())

    try:
        send(b"\x03" + encode(message.command_set, True, True))
        dataset, chunk = data.getvalue(), 1 << 20
        for start in range(0, len(dataset), chunk):
            last = start + chunk >= len(dataset)
            send((b"\x02" if last else b"\x00") + dataset[start:start + chunk])
            if not last:
                send(b"\x01")  # an empty command fragment
    except OSError:
        pass  # hung up on: what the limit does
    poll(lambda: intake.counts["rejected_too_large"] == 1, what="the dataset refused as too large")
    assert intake.counts["received"] == 0 and list(intake.spool.incoming.iterdir()) == []


def _self_signed(tmp_path, name: str):
    cert, key = tmp_path / f"{name}.pem", tmp_path / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
    return cert, key


def test_a_silent_connection_does_not_hold_up_tls_callers_and_refusals_are_logged(tmp_path, caplog):
    """pynetdicom did the handshake in its accept loop: one TCP connection that sent nothing
    stopped the listener accepting anyone, and a refused handshake left no trace."""
    import socket
    import threading

    require_programs("openssl")
    cert, key = _self_signed(tmp_path, "server")
    client_cert, client_key = _self_signed(tmp_path, "client")  # its own CA: the one the node trusts
    spool = Spool(tmp_path / "spool").create()
    intake = Intake(spool, JobQueue(spool.queue_file))
    context = listener.tls_context(str(cert), str(key), str(client_cert))
    server = listener.start(ListenerSettings(port=0, ssl_context=context), intake)
    port = server.server_address[1]
    silent = socket.create_connection(("127.0.0.1", port))
    try:
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        client.load_cert_chain(str(client_cert), str(client_key))
        done = []
        caller = threading.Thread(target=lambda: done.append(echo(port, tls_args=(client, "localhost"))))
        caller.start()
        caller.join(20)
        assert done == [0x0000]
        without = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        with caplog.at_level(logging.WARNING, logger="cfia.listener"):
            try:
                assert echo(port, tls_args=(without, "localhost")) is None
            except (OSError, RuntimeError):
                pass  # the client may see the refusal as a broken connection
            poll(lambda: intake.counts["rejected_tls"] == 1, what="the refused handshake counted")
            socket.create_connection(("127.0.0.1", port)).close()  # a port probe: connect, hang up
            poll(lambda: intake.counts["rejected_tls"] == 2, what="the probe counted")
        failed = [r for r in caplog.records if r.getMessage() == "TLS handshake failed"]
        assert len(failed) == 2 and all(r.peer.startswith("127.0.0.1:") for r in failed)  # the probe's too
        # A stop with the silent connection still open ends (it is hung up: pynetdicom cannot
        # abort an association that sent no request).
        stopping = threading.Thread(target=server.shutdown, args=(1,))
        stopping.start()
        stopping.join(30)
        assert not stopping.is_alive()
    finally:
        silent.close()
        server.shutdown(0)


def test_a_job_requeued_twice_within_a_second_keeps_both_reasons(tmp_path):
    from listener import Spool

    spool = Spool(tmp_path / "spool").create()
    kept = []
    for attempt in ("first", "second"):
        source = spool.incoming / f"{attempt}.dcm"
        source.write_bytes(b"x")
        spool.move_to_dead_letter(7, source, None, {"reason": attempt})
        kept.append(spool.retire_dead_letter(7, "20261206T044639"))
    assert kept[0] != kept[1] and all(k.is_dir() for k in kept)
    assert [k.joinpath("reason.json").read_text().count(a) for k, a in zip(kept, ("first", "second"))] == [1, 1]


def test_a_long_instance_uid_cut_by_the_sender_is_refused_as_an_invalid_uid():
    """dcmtk cuts a request's UID to 64 characters but sends the dataset as it is: the
    reason to give is the invalid UID, not a mismatch between the two."""
    from listener.checks import check_mammogram

    ds = mammogram(1)
    ds.SOPInstanceUID = "1.2." + "3" * 70
    refusal = check_mammogram(ds, MG, ExplicitVRLittleEndian, sop_instance=ds.SOPInstanceUID[:64])
    assert refusal is not None and refusal.code == statuses.INVALID_UID


def _declaring(ds, syntax, rows: int, columns: int):
    """`ds` compressed in `syntax`, its codestream's header then rewritten to declare
    rows x columns: a few kB that a decoder would take for a huge image."""
    import struct

    from pydicom.encaps import encapsulate

    from listener.checks import _first_fragment

    ds.compress(syntax)
    data = bytearray(_first_fragment(ds.PixelData))
    if data.startswith(b"\xff\x4f\xff\x51"):  # JPEG 2000 SIZ: Xsiz, Ysiz
        data[8:16] = struct.pack(">II", columns, rows)
    else:  # JPEG-LS SOF55: after marker, length and precision, height then width
        at = data.index(b"\xff\xf7")
        data[at + 5:at + 9] = struct.pack(">HH", rows, columns)
    ds.PixelData = encapsulate([bytes(data)])
    return ds


def _unreadable_to_reader_and_worker(path, reader_says: str, worker_says: str | None = None) -> None:
    """`cfia explain`'s reader and the node's worker both refuse `path`, saying why."""
    from cfia.dicom_io import ImageReadError, read_file
    from cfia.worker import UndecodableImage, read_image

    with pytest.raises(ImageReadError, match=reader_says):
        read_file(path)
    with pytest.raises(UndecodableImage, match=worker_says or reader_says):
        read_image(path)


@pytest.mark.parametrize("syntax", [JPEG2000Lossless, JPEGLSLossless])
def test_a_codestream_declaring_more_pixels_than_the_header_is_refused_before_decoding(start_listener, tmp_path,
                                                                                       syntax):
    """The decoders believe the codestream: a 24000x24000 one in a 256x208 header made the
    worker allocate 3 GB before it failed."""
    port, intake = start_listener()
    honest, bomb = mammogram(1), _declaring(mammogram(2), syntax, 24000, 24000)
    honest.compress(syntax)
    assert push(port, [honest, bomb]) == [0x0000, statuses.TOO_LARGE]
    _unreadable_to_reader_and_worker(write(bomb, tmp_path / "bomb.dcm"), "compressed image 24000x24000 pixels")


def test_native_pixel_data_wrapped_as_encapsulated_is_refused(start_listener, tmp_path):
    """Under an uncompressed syntax pydicom reads it as native pixels shifted by the item
    headers: the image was explained on a grid 8 pixels off and its results delivered."""
    import struct

    from pydicom.filewriter import dcmwrite

    from cfia.dicom_io import ImageReadError, read_file

    port, intake = start_listener()
    ds = mammogram(2)
    pixels = ds.PixelData
    del ds.PixelData
    path = tmp_path / "wrapped.dcm"
    dcmwrite(path, ds, enforce_file_format=True)  # Explicit VR Little Endian
    item = lambda data: struct.pack("<HHI", 0xFFFE, 0xE000, len(data)) + data  # noqa: E731
    with open(path, "ab") as f:  # PixelData of undefined length: an empty offset table, one fragment
        f.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, 0xFFFFFFFF) + item(b"") + item(pixels)
                + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
    assert push(port, [path]) == [statuses.PIXEL_LENGTH_MISMATCH]
    with pytest.raises(ImageReadError, match="encapsulated pixel data under an uncompressed syntax"):
        read_file(path)


def test_a_decoder_panic_is_an_unreadable_image_not_a_dead_worker(tmp_path):
    """pylibjpeg-rle panics (pyo3's PanicException, a BaseException) on runs past the frame:
    no `except Exception` caught it, so each attempt killed the worker, and `cfia explain`
    printed a traceback."""
    ds = mammogram(1)
    ds.compress(RLELossless)
    ds.Rows, ds.Columns = 128, 104  # the runs hold four times the pixels
    _unreadable_to_reader_and_worker(write(ds, tmp_path / "overrun.dcm"), "cannot decode pixel data",
                                     "pixel data cannot be decoded")


def test_files_that_would_exhaust_the_reader_are_unreadable_images(tmp_path, monkeypatch):
    """`cfia explain`, evaluate and training read files with dicom_io: a deflated file was
    inflated whole (3 GB for a 1 MB file), and sequences nested thousands deep gave a
    RecursionError traceback instead of one line."""
    import struct

    from pydicom.filewriter import dcmwrite
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from cfia.dicom_io import ImageReadError, read_file

    monkeypatch.setattr("cfia.dicom_io.MAX_INFLATED_BYTES", 2 << 20)
    small, bomb = mammogram(2), mammogram(3)
    bomb.add_new(0x00090010, "LO", "BIG")
    bomb.add_new(0x00091000, "OB", bytes(8 << 20))
    for name, ds in (("small", small), ("bomb", bomb)):
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
        dcmwrite(tmp_path / f"{name}.dcm", ds, enforce_file_format=True)
    assert read_file(tmp_path / "small.dcm").pixels.shape == (small.Rows, small.Columns)
    with pytest.raises(ImageReadError, match="inflates beyond 2 MB"):
        read_file(tmp_path / "bomb.dcm")
    from pydicom.dataset import Dataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    deep, after = mammogram(4), Dataset()
    for element in [e for e in deep if e.tag > 0x00091001]:  # written after the nested sequence
        after.add(element)
        del deep[element.tag]
    path = tmp_path / "deep.dcm"
    dcmwrite(path, deep, enforce_file_format=True)
    tail = DicomBytesIO()
    tail.is_little_endian, tail.is_implicit_VR = True, False
    write_dataset(tail, after)
    opening = struct.pack("<HH2sHI", 0x0009, 0x1001, b"SQ", 0, 0xFFFFFFFF) + struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    with open(path, "ab") as f:
        f.write(struct.pack("<HH2sH", 0x0009, 0x0010, b"LO", 4) + b"DEEP" + opening * 3000 + closing * 3000
                + tail.getvalue())
    with pytest.raises(ImageReadError, match="RecursionError"):
        read_file(path)


def test_a_dataset_that_fails_to_parse_past_its_pixels_is_undecodable_not_retried(tmp_path):
    """A stray sequence delimiter at the top level parsed lazily: the worker read and decoded
    the image, then the builders met it, and the job was retried max_retries times."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import dcmwrite, write_dataset
    from pydicom.dataset import Dataset

    from cfia.worker import UndecodableImage, read_image

    ds, tail = mammogram(4), Dataset()
    tail.PixelData = ds.PixelData
    tail["PixelData"].VR = "OW"
    del ds.PixelData
    path = tmp_path / "stray.dcm"
    dcmwrite(path, ds, enforce_file_format=True)
    encoded = DicomBytesIO()
    encoded.is_little_endian, encoded.is_implicit_VR = True, False
    write_dataset(encoded, tail)
    with open(path, "ab") as f:
        f.write(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00" + encoded.getvalue())
    with pytest.raises(UndecodableImage, match="cannot be parsed"):
        read_image(path)


def test_sop_classes_refused_at_negotiation_are_named_in_the_log(start_listener, caplog):
    """Under `reject` a PACS's push of a CT, or of a mammogram in a syntax cfia cannot decode,
    failed with nothing in cfia's log. A sender proposing every storage class (dcmtk's
    storescu) is not reported on each association."""
    from pynetdicom import AE
    from pynetdicom.sop_class import BasicTextSRStorage, CTImageStorage

    from cfia.status import prometheus

    port, intake = start_listener()

    def associate(*contexts):
        ae = AE(ae_title="PACS")
        for sop, syntaxes in contexts:
            ae.add_requested_context(sop, syntaxes)
        assoc = ae.associate("127.0.0.1", port, ae_title="CFIA")
        if assoc.is_established:
            assoc.release()

    plain = [ExplicitVRLittleEndian]
    with caplog.at_level(logging.INFO, logger="cfia.listener"):
        associate((CTImageStorage, plain), (BasicTextSRStorage, plain))  # nothing storable
        associate((MG, ["1.2.840.10008.1.2.4.100"]))                     # MPEG2 only: cannot decode
        associate((MG, ["1.2.840.10008.1.2.4.100"]), (MG, plain), (CTImageStorage, plain))  # MG taken
        associate(("1.2.840.10008.1.1", plain), (CTImageStorage, plain))  # an echo stores nothing
    logged = [r.sop_classes for r in caplog.records if r.getMessage() == "presentation contexts not accepted"]
    assert logged == [",".join(sorted([CTImageStorage, BasicTextSRStorage])), MG, CTImageStorage]
    assert "cfia_contexts_not_accepted_total 3" in prometheus(intake.queue, intake.counts, 1).splitlines()


def test_under_tls_a_port_check_also_frees_its_association_slot_soon(start_listener, tmp_path):
    """The handshake runs inside the wait for the association request: a timer raised to the
    handshake's 60 s let each failed handshake of a port check hold a slot that long."""
    import socket
    import ssl
    import subprocess
    import time

    require_programs("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True)
    port, _ = start_listener(ssl_context=listener.tls_context(str(cert), str(key), None), max_associations=2,
                             acse_timeout=1.0)
    for _ in range(3):
        socket.create_connection(("127.0.0.1", port)).close()
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
    start = time.monotonic()
    poll(lambda: echo(port, tls_args=(client, "localhost")) == 0x0000, timeout=30,
         what="a TLS association accepted after the closed connections")
    assert time.monotonic() - start < 10



def test_tcp_connections_closed_unasked_free_their_association_slot_soon(start_listener):
    """A port check's connect-and-close held one of max_associations for pynetdicom's ACSE
    timeout (30 s): a few of them made the node refuse real pushes as busy."""
    import socket
    import time

    port, intake = start_listener(max_associations=2, acse_timeout=1.0)
    for _ in range(3):
        socket.create_connection(("127.0.0.1", port)).close()
    start = time.monotonic()
    poll(lambda: echo(port) == 0x0000, timeout=15, what="an association accepted after the closed connections")
    assert time.monotonic() - start < 10
