"""Where results go and when a send counts: every fixed destination plus the caller, keys
matched whatever their padding; warning statuses are stored (PS3.4 B.2.3), a busy peer is
down (retried), not rejected; a failure beside a refused class is retried."""
from __future__ import annotations

from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import SecondaryCaptureImageStorage, Verification

from cfia import config
from cfia.routing import routing_from_config
from cfia.routing import Routing
from cfia.worker import Worker
from dicom_out import Destination, DestinationUnavailable, send


def test_a_caller_in_return_to_sender_gets_results_and_the_fixed_destinations_too():
    pacs, ws = Destination("pacs", "PACS", "10.0.0.1", 104), Destination("ws", "WS1", "10.0.0.5", 11113)
    routing = Routing(fixed=(pacs,), return_to_sender=(("WS1", ws),))
    assert routing.destinations_for("WS1") == [pacs, ws]
    assert routing.destinations_for("OTHER") == [pacs]


def test_return_to_sender_keys_match_the_caller_whatever_their_padding():
    routing = routing_from_config(config.from_dict({"return_to_sender": {"WS1 ": {"host": "h", "port": 1}}}))
    assert [d.host for d in routing.destinations_for("WS1")] == ["h"]


def test_a_warning_status_counts_as_stored():
    dest = Destination("pacs", "PACS", "127.0.0.1", 1)
    for status in (0xB000, 0xB006, 0xB007):
        worker = Worker(None, None, None, None, sender=lambda files, d, calling_ae: {"1.2.3": status})
        assert worker._send_to(dest, [Path("x.dcm")], {}) is None


def test_a_busy_destination_is_down_not_rejected():
    scp = AE(ae_title="BUSY")
    scp.add_supported_context(Verification)
    scp.add_supported_context(SecondaryCaptureImageStorage)
    scp.maximum_associations = 1
    server = scp.start_server(("127.0.0.1", 0), block=False)
    port = server.server_address[1]
    holder = AE(ae_title="HOLDER")
    holder.add_requested_context(Verification)
    assoc = holder.associate("127.0.0.1", port, ae_title="BUSY")
    try:
        assert assoc.is_established
        from pydicom.dataset import Dataset
        ds = Dataset()
        ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, "1.2.3.4"
        with pytest.raises(DestinationUnavailable):
            send([ds], Destination("busy", "BUSY", "127.0.0.1", port), timeout=5)
    finally:
        assoc.release()
        server.shutdown()


def test_a_failure_status_beside_a_refused_class_is_retried_not_given_up():
    dest = Destination("pacs", "PACS", "127.0.0.1", 1)
    worker = Worker(None, None, None, None, sender=lambda files, d, calling_ae: {"1.1": 0x0122, "1.2": 0xA700})
    assert worker._send_to(dest, [Path("x.dcm")], {})[0] == "refused"
