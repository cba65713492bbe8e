"""The node with the real explainer and the shipped models: a pushed mammogram comes
back explained. Select with `pytest -m pipeline`.
"""
from __future__ import annotations

import dataclasses

import pytest

from cfia.cli import DEFAULT_CONFIG, load_config
from cfia.processors import pipeline_processor
from cfia.routing import Routing
from dicom_out import Destination
from node_helpers import StorageSCP, mammogram, push
from test_worker import MG_RESULT_CLASSES, Node

pytestmark = pytest.mark.pipeline


def _config():
    """The shipped config and models (committed, so never missing), with few passes."""
    cfg = load_config(str(DEFAULT_CONFIG))
    return dataclasses.replace(
        cfg, explainer=dataclasses.replace(cfg.explainer, max_passes=min(cfg.explainer.max_passes, 10)))


def test_pushed_mammogram_is_explained_by_the_real_pipeline(tmp_path):
    cfg = _config()
    dest = StorageSCP()
    try:
        node = Node(tmp_path, Routing(fixed=(Destination("pacs", dest.ae_title, "127.0.0.1", dest.port),)),
                    processor=pipeline_processor(cfg))
        try:
            assert push(node.port, [mammogram(0)]) == [0x0000]
            node.wait_counts(timeout=300, done=1)
        finally:
            node.stop()
        enabled = sum(vars(cfg.outputs).values())
        assert len(dest.received) == enabled
        assert {str(ds.SOPClassUID) for ds in dest.received} <= MG_RESULT_CLASSES
    finally:
        dest.stop()
