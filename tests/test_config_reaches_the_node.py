"""What config.yaml sets for the listener and the workers reaches the objects the node runs:
the listener's settings (who may call, what is ignored, how many at once, how large) and each
worker's (its calling AE title, retries, backoff, quiet period, the object types it sends)."""
from __future__ import annotations

from cfia.config import from_dict
from cfia.serve import listener_settings
from cfia.workers import worker_for


def _config(tmp_path):
    return from_dict({
        "listener": {"ae_title": "EXPLAINER", "allowed_calling_ae_titles": ["PACS1", "WS2"],
                     "other_sop_classes": "ignore", "max_associations": 3, "max_dataset_mb": 50,
                     "study_quiet_seconds": 7},
        "spool": {"folder": str(tmp_path / "spool"), "max_retries": 6, "send_backoff_seconds": 2,
                  "send_backoff_max_seconds": 40},
        "outputs": {"gsps": False},
    })


def test_the_listener_gets_the_configured_settings(tmp_path):
    s = listener_settings(_config(tmp_path))
    assert s.ae_title == "EXPLAINER"
    assert s.allowed_calling_ae_titles == ("PACS1", "WS2")
    assert s.ignore_other_sop_classes is True
    assert s.max_associations == 3
    assert s.max_dataset_bytes == 50 << 20


def test_a_worker_gets_the_configured_settings(tmp_path):
    from listener import Spool

    cfg = _config(tmp_path)
    Spool(cfg.spool.folder).create()
    worker = worker_for(cfg, processor=None)
    try:
        assert worker.calling_ae == "EXPLAINER"
        assert worker.max_retries == 6
        assert (worker.backoff.base_seconds, worker.backoff.max_seconds) == (2, 40)
        assert worker.queue.quiet_seconds == 7
        assert worker.outputs == {"fractional_seg", "binary_seg", "parametric_map", "sr"}
    finally:
        worker.queue.close()
