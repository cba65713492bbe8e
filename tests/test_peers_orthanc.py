"""Real Orthanc (Debian `orthanc`) <-> real `cfia serve`, on loopback, with the real pipeline.

Orthanc starts in the foreground with a generated config that declares cfia as the
modality `cfia`; a synthetic mammogram is uploaded over REST and pushed to cfia with
POST /modalities/cfia/store; cfia's enabled result objects must come back into the same
Orthanc study, each in its own series, each referring to the source image, sent by cfia's
AE title. Wiring: tests/harness/cfia_orthanc.py (also behind tests/orthanc/run.py).
"""
from __future__ import annotations

import io

import pydicom
import pytest

from conftest import dciodvfy_errors
from harness import orthanc as orthanc_mod
from harness.cfia_orthanc import CfiaOrthanc
from node_helpers import write
from peer_helpers import (RESULT_CLASSES, positive_mammogram, pipeline_overrides, read_back, referenced_uids,
                          require, require_programs, result_type)

pytestmark = [pytest.mark.slow, pytest.mark.pipeline]


def test_orthanc_pushes_a_mammogram_and_gets_every_result_back_in_the_same_study(tmp_path):
    require(orthanc_mod.available())
    require_programs("dciodvfy")
    overrides = pipeline_overrides()
    source = positive_mammogram(21)
    path = write(source, tmp_path / "mg.dcm")
    with CfiaOrthanc(tmp_path / "stack", cfia_overrides=overrides) as stack:
        orthanc = stack.orthanc
        uploaded = orthanc.store(path)
        study = uploaded["ParentStudy"]
        answer = stack.push_to_cfia(uploaded["ID"])
        assert answer.get("FailedInstancesCount", 0) == 0 and answer.get("InstancesCount") == 1, answer

        enabled = stack.node.enabled_outputs
        assert sorted(enabled) == sorted(RESULT_CLASSES)  # the shipped config enables all five
        instances = stack.wait_results(study, 1 + len(enabled), timeout=240)
        assert len(instances) == 1 + len(enabled), [i["ID"] for i in instances]

        source_series = orthanc.get_json(f"/instances/{uploaded['ID']}")["ParentSeries"]
        series = orthanc.get_json(f"/studies/{study}/series")
        assert len(series) == 1 + len(enabled)  # every object in a series of its own

        seen = {}
        for inst in instances:
            if inst["ID"] == uploaded["ID"]:
                continue
            assert inst["ParentSeries"] != source_series
            # Orthanc records who sent it: cfia, by C-STORE
            status, remote = orthanc.request("GET", f"/instances/{inst['ID']}/metadata/RemoteAET")
            assert status == 200 and remote.decode() == stack.cfia_ae
            status, body = orthanc.request("GET", f"/instances/{inst['ID']}/file")
            assert status == 200
            ds = pydicom.dcmread(io.BytesIO(body))
            kind = result_type(ds)
            seen[kind] = ds
            assert ds.StudyInstanceUID == source.StudyInstanceUID
            assert ds.PatientID == source.PatientID
            assert str(source.SOPInstanceUID) in referenced_uids(ds), f"{kind} does not refer to the source"
            tags = orthanc.get_json(f"/instances/{inst['ID']}/simplified-tags")
            assert tags["SOPClassUID"] == RESULT_CLASSES[kind][0]
            read_back(ds)
            saved = tmp_path / f"{kind}.dcm"
            saved.write_bytes(body)
            assert dciodvfy_errors(saved) == [], kind
        assert sorted(seen) == sorted(enabled)
        # the SR's planar ROI refers to the BINARY SEG that arrived beside it
        assert str(seen["binary_seg"].SOPInstanceUID) in referenced_uids(seen["sr"])
        assert stack.node.counts()["done"] == 1
