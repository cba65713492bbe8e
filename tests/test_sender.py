"""dicom_out.sender: C-STORE to a real SCP, unavailable and refusing destinations."""
from __future__ import annotations

import random

import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import Comprehensive3DSRStorage

from dicom_out import Backoff, Destination, DestinationUnavailable, build_results, send
from dicom_out.model import AlgorithmInfo, Explanation
from dicom_out.sender import CONTEXT_REJECTED
from node_helpers import StorageSCP, blob_saliency, mammogram


@pytest.fixture(scope="module")
def results():
    ds = mammogram(0)
    s = blob_saliency(int(ds.Rows), int(ds.Columns))
    return build_results(ds, Explanation(saliency=s, region=s > 0.5, score=0.9, score_after_deletion=0.1),
                         AlgorithmInfo(model_name="test", model_version="t1", method="cf"), ["binary_seg", "sr"])


def test_send_delivers_datasets_and_files(results, tmp_path):
    scp = StorageSCP()
    try:
        path = tmp_path / "sr.dcm"
        results["sr"].save_as(path, enforce_file_format=True)
        replies = send([results["binary_seg"], path], Destination("pacs", "DEST", "127.0.0.1", scp.port))
        assert set(replies.values()) == {0x0000}
        assert scp.uids() == {str(ds.SOPInstanceUID): 1 for ds in results.values()}
    finally:
        scp.stop()


def test_destination_down_raises(results):
    scp = StorageSCP()
    port = scp.port
    scp.stop()
    with pytest.raises(DestinationUnavailable):
        send(list(results.values()), Destination("pacs", "DEST", "127.0.0.1", port), timeout=5)


def test_a_host_name_that_does_not_resolve_is_a_destination_down(results):
    """A DNS outage or a typo: retried with the destinations' backoff, like a closed port."""
    with pytest.raises(DestinationUnavailable, match="gaierror"):
        send(list(results.values()), Destination("pacs", "DEST", "cfia-test.invalid", 104), timeout=5)


def test_a_permanently_rejected_association_is_no_outage(results):
    """A destination that does not know the called AE title will never take the results."""
    from dicom_out import DestinationRejected

    scp = StorageSCP(ae_title="DEST")
    try:
        with pytest.raises(DestinationRejected, match="rejected the association permanently"):
            send(list(results.values()), Destination("pacs", "NOT_DEST", "127.0.0.1", scp.port), timeout=5)
    finally:
        scp.stop()


def test_refused_sop_class_is_reported(results):
    ae = AE(ae_title="SRONLY")  # like Orthanc 1.10 with Label Map SEG: one class refused
    ae.add_supported_context(Comprehensive3DSRStorage)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)])
    try:
        replies = send([results["binary_seg"], results["sr"]],
                       Destination("sr", "SRONLY", "127.0.0.1", server.server_address[1]))
        assert replies == {str(results["binary_seg"].SOPInstanceUID): CONTEXT_REJECTED,
                           str(results["sr"].SOPInstanceUID): 0x0000}
    finally:
        server.shutdown()


def test_backoff_doubles_up_to_the_cap():
    b = Backoff(base_seconds=1, max_seconds=5, jitter=0)
    assert [b.delay(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]
    # jitter spreads the delays over +-20 %: different draws, none outside the band
    rng = random.Random(0)
    jittered = [Backoff(base_seconds=10, max_seconds=100, jitter=0.2).delay(1, rng) for _ in range(20)]
    assert all(8 <= d <= 12 for d in jittered)
    assert len(set(jittered)) == 20
    assert min(jittered) < 9.5 and max(jittered) > 10.5


def _aborting_scp(abort_at: int):
    """An SCP that takes the association, stores `abort_at - 1` objects, then aborts at the
    next C-STORE (as Orthanc does to a calling AE title it does not allow to store)."""
    from pynetdicom import AllStoragePresentationContexts

    stores = []

    def on_store(event):
        stores.append(1)
        if len(stores) >= abort_at:
            event.assoc.abort()
        return 0x0000

    ae = AE(ae_title="DEST")
    ae.supported_contexts = AllStoragePresentationContexts
    return ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]), stores


def test_an_abort_at_the_first_store_is_a_refusal_not_an_outage(results):
    from dicom_out.sender import StoreRefused

    server, stores = _aborting_scp(abort_at=1)
    try:
        with pytest.raises(StoreRefused, match="aborted the association at the first C-STORE"):
            send(list(results.values()), Destination("pacs", "DEST", "127.0.0.1", server.server_address[1]), timeout=5)
        assert stores == [1]
    finally:
        server.shutdown()


def test_an_abort_after_a_store_or_a_timeout_is_a_destination_down(results):
    """Something was stored (or the destination never answered): the association broke,
    which a later send may not meet again."""
    import time

    from dicom_out.sender import StoreRefused

    server, _ = _aborting_scp(abort_at=2)
    try:
        with pytest.raises(DestinationUnavailable) as raised:
            send(list(results.values()), Destination("pacs", "DEST", "127.0.0.1", server.server_address[1]), timeout=5)
        assert not isinstance(raised.value, StoreRefused)
    finally:
        server.shutdown()
    ae = AE(ae_title="SLOW")
    ae.add_supported_context(Comprehensive3DSRStorage)
    server = ae.start_server(("127.0.0.1", 0), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, lambda event: time.sleep(3) or 0x0000)])
    try:  # our DIMSE timeout aborts it: no A-ABORT from the destination
        with pytest.raises(DestinationUnavailable) as raised:
            send([results["sr"]], Destination("sr", "SLOW", "127.0.0.1", server.server_address[1]), timeout=1)
        assert not isinstance(raised.value, StoreRefused)
    finally:
        server.shutdown()


def test_a_destination_that_never_completes_the_tcp_handshake_is_down_within_the_timeout(results):
    """A listening socket whose accept queue is full drops further handshakes, as a firewall
    that drops packets does: the connect waited for the OS's retries (about 2 min)."""
    import socket
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued = socket.create_connection(("127.0.0.1", port))  # fills the queue; nobody accepts
    try:
        start = time.monotonic()
        with pytest.raises(DestinationUnavailable):
            send([results["sr"]], Destination("sr", "DEST", "127.0.0.1", port), timeout=1)
        assert time.monotonic() - start < 10
    finally:
        queued.close()
        listener.close()
