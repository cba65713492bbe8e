"""Shared by the real-peer tests (Orthanc, dcmtk): the node's settings for the real
explainer pipeline, positive phantoms, references and prerequisites.

The node runs the shipped config.yaml (models, explainer, outputs) with few optimiser
passes (PASSES), so a round trip takes seconds, not a minute, on a busy 2-core machine.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from cfia import config as config_mod
from cfia.local_node import SHIPPED_CONFIG

PASSES = 5
SIZE = (512, 416)
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
RESULT_CLASSES = {  # object type -> (SOP Class UID, SegmentationType or None)
    "fractional_seg": (SEGMENTATION, "FRACTIONAL"),
    "binary_seg": (SEGMENTATION, "BINARY"),
    "parametric_map": ("1.2.840.10008.5.1.4.1.1.30", None),
    "sr": ("1.2.840.10008.5.1.4.1.1.88.34", None),
    "gsps": ("1.2.840.10008.5.1.4.1.1.11.1", None),
}


def require(why: str | None) -> None:
    """Skip when a prerequisite is missing; fail instead under CFIA_REQUIRE_PEERS=1 (.ci/run)."""
    if why:
        if os.environ.get("CFIA_REQUIRE_PEERS") == "1":
            pytest.fail(f"real-peer test prerequisite missing: {why}")
        pytest.skip(why)


def require_programs(*paths: str) -> None:
    missing = [p for p in paths if not (Path(p).exists() or shutil.which(p))]
    require(f"not installed: {', '.join(missing)} (make system-deps)" if missing else None)


def pipeline_overrides(**extra) -> dict:
    """cfia overrides for the real pipeline with the shipped models and PASSES passes."""
    cfg = config_mod.load(SHIPPED_CONFIG)
    clf = Path(cfg.models.classifier.path)
    require(None if clf.is_file() else f"no trained classifier at {clf} (config.yaml models.classifier.path)")
    return {"workers": {"count": 1, "processor": "cfia.processors:pipeline_processor", "stop_timeout_seconds": 20},
            "explainer": {"max_passes": PASSES},
            "spool": {"max_retries": 1, "send_backoff_seconds": 0.5, "send_backoff_max_seconds": 2},
            "listener": {"study_quiet_seconds": 2},
            **extra}


def positive_mammogram(seed: int, size=SIZE) -> Dataset:
    """A For Presentation MG phantom with a lesion; UIDs derived from the seed."""
    from phantom.dicom import to_dataset
    from phantom.generate import PhantomOptions, make_one

    mg = make_one(seed, 0, PhantomOptions(size=size, positive_fraction=1.0))
    return to_dataset(mg, f"peer-test:{seed}:{size}", 5000 + seed)


def referenced_uids(ds: Dataset) -> set[str]:
    """Every ReferencedSOPInstanceUID anywhere in the dataset."""
    found: set[str] = set()

    def walk(d: Dataset) -> None:
        for elem in d:
            if elem.keyword == "ReferencedSOPInstanceUID":
                found.add(str(elem.value))
            elif elem.VR == "SQ":
                for item in elem.value:
                    walk(item)

    walk(ds)
    return found


def result_type(ds: Dataset) -> str:
    for kind, (sop, seg_type) in RESULT_CLASSES.items():
        if str(ds.SOPClassUID) == sop and (seg_type is None or ds.get("SegmentationType") == seg_type):
            return kind
    raise AssertionError(f"unexpected SOP class {ds.SOPClassUID} ({ds.SOPClassUID.name})")


def read_back(path_or_ds) -> None:
    """highdicom reads each object type back (SEG, SR); raises if it cannot."""
    import highdicom as hd

    ds = path_or_ds if isinstance(path_or_ds, Dataset) else pydicom.dcmread(path_or_ds)
    kind = result_type(ds)
    if kind.endswith("_seg"):
        seg = hd.seg.Segmentation.from_dataset(ds)
        assert seg.number_of_segments == 1
    elif kind == "sr":
        sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
        assert sr.content.get_planar_roi_measurement_groups()
