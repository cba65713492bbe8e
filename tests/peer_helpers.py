"""Shared by the real-peer tests (Orthanc, dcmtk): the node's settings for the real
explainer pipeline, positive phantoms, references and prerequisites.

The node runs the shipped config.yaml (models, explainer, outputs) with few optimiser
passes (PASSES), so a round trip takes seconds, not a minute, on a busy 2-core machine.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from cfia import config as config_mod
from cfia.local_node import SHIPPED_CONFIG, wait_for
from harness.net import free_port

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
    """Each object type read back with what it must hold: SEG, SR and PM through
    highdicom; the GSPS (highdicom cannot read one back) by its references and graphics."""
    import highdicom as hd
    import numpy as np

    ds = path_or_ds if isinstance(path_or_ds, Dataset) else pydicom.dcmread(path_or_ds)
    kind = result_type(ds)
    if kind.endswith("_seg"):
        seg = hd.seg.Segmentation.from_dataset(ds)
        assert seg.number_of_segments == 1
    elif kind == "sr":
        sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
        assert sr.content.get_planar_roi_measurement_groups()
    elif kind == "parametric_map":
        pm = hd.pm.ParametricMap.from_dataset(ds)
        values = pm.pixel_array
        assert values.shape[-2:] == (ds.Rows, ds.Columns) and values.dtype.kind == "f", (values.shape, values.dtype)
        assert np.isfinite(values).all() and 0 <= values.min() and values.max() <= 1 and values.max() > 0
    elif kind == "gsps":
        images = [image for series in ds.ReferencedSeriesSequence for image in series.ReferencedImageSequence]
        assert images, "the GSPS references no image"
        layers = ds.GraphicAnnotationSequence
        assert any(layer.get("TextObjectSequence") for layer in layers), "the GSPS carries no note"
        graphics = [g for layer in layers for g in layer.get("GraphicObjectSequence", [])]  # none: empty region
        assert all(len(g.GraphicData) == 2 * g.NumberOfGraphicPoints >= 6 for g in graphics), graphics


# dcmtk by full path: pynetdicom installs its own storescu/storescp, which shadow dcmtk's on PATH.
STORESCP, STORESCU, ECHOSCU = "/usr/bin/storescp", "/usr/bin/storescu", "/usr/bin/echoscu"


class DcmtkStoreSCP:
    """dcmtk storescp on a free loopback port, writing what it receives into a folder;
    started once it answers C-ECHO, and never left running when it does not."""

    def __init__(self, folder, ae_title="WORKSTATION", attempts=3):
        self.folder, self.ae_title = folder, ae_title
        folder.mkdir(parents=True, exist_ok=True)
        for _ in range(attempts):
            self.port = free_port()
            with open(folder.parent / "storescp.log", "ab") as log:
                self.proc = subprocess.Popen([STORESCP, "-aet", ae_title, "-od", str(folder), str(self.port)],
                                             stdout=log, stderr=subprocess.STDOUT)
            try:
                if self._listening():
                    return
            except BaseException:
                self.stop()
                raise
            self.stop()  # exited: the port was taken in between; try another
        raise RuntimeError("dcmtk storescp did not start")

    def _listening(self) -> bool:
        def answered():
            if self.proc.poll() is not None:
                return "exited"
            rc = subprocess.run([ECHOSCU, "-aec", self.ae_title, "127.0.0.1", str(self.port)],
                                capture_output=True, timeout=30).returncode
            return "ok" if rc == 0 else None

        return wait_for(answered, 30, "storescp to answer C-ECHO") == "ok"

    def files(self):
        return sorted(p for p in self.folder.iterdir() if p.is_file())

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(15)
