"""A radiology workstation played by dcmtk: echoscu and storescu (an uncompressed and a
JPEG 2000 compressed mammogram) -> real `cfia serve` with the real pipeline -> dcmtk
storescp as the destination; dciodvfy reports no errors on anything received.

dcmtk by full path: pynetdicom installs its own storescu/storescp, which shadow dcmtk's
on PATH. Debian's dcmtk has no JPEG 2000 encoder, so the J2K source is compressed with
pydicom + pylibjpeg-openjpeg (ds.compress).
"""
from __future__ import annotations

import re
import subprocess

import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless

from cfia.local_node import LocalNode, wait_for
from conftest import dciodvfy_errors
from harness.net import free_port
from node_helpers import write
from peer_helpers import (ECHOSCU, RESULT_CLASSES, STORESCP, STORESCU, DcmtkStoreSCP, positive_mammogram,
                          pipeline_overrides, read_back, referenced_uids, require_programs, result_type)

pytestmark = [pytest.mark.slow, pytest.mark.pipeline]

def test_workstation_pushes_uncompressed_and_jpeg2000_and_receives_valid_results(tmp_path):
    require_programs(STORESCP, STORESCU, ECHOSCU, "dciodvfy")
    overrides = pipeline_overrides()
    plain = positive_mammogram(31)
    j2k = positive_mammogram(32)
    j2k.compress(JPEG2000Lossless)  # pydicom + pylibjpeg-openjpeg
    files = [write(plain, tmp_path / "plain.dcm"), write(j2k, tmp_path / "j2k.dcm")]
    assert pydicom.dcmread(files[1]).file_meta.TransferSyntaxUID == JPEG2000Lossless

    received = tmp_path / "received"
    scp = DcmtkStoreSCP(received)
    try:
        node = LocalNode(tmp_path / "node", overrides={
            **overrides, "destinations": [{"name": "workstation", "ae_title": scp.ae_title,
                                           "host": "127.0.0.1", "port": scp.port}]})
        with node:
            echo = subprocess.run([ECHOSCU, "-aet", "WORKSTATION", "-aec", node.ae_title, "127.0.0.1", str(node.port)],
                                  capture_output=True, text=True, timeout=60)
            assert echo.returncode == 0, echo.stdout + echo.stderr
            for path, propose in ((files[0], []), (files[1], ["--propose-j2k-lossless"])):
                push = subprocess.run([STORESCU, "-v", *propose, "-aet", "WORKSTATION", "-aec", node.ae_title,
                                       "127.0.0.1", str(node.port), str(path)], capture_output=True, text=True,
                                      timeout=120)
                out = push.stdout + push.stderr
                assert push.returncode == 0 and "E:" not in out, out
                for have, sent in re.findall(r"Converting transfer syntax: (.+?) -> (.+)", out):
                    assert have == sent, out  # sent as stored: cfia accepted JPEG 2000 itself
            expected = 2 * len(node.enabled_outputs)

            def delivered():
                node.check_alive()
                assert not node.dead_letters(), node.dead_letters()
                return len(scp.files()) >= expected and node.counts()["done"] == 2

            wait_for(delivered, 300, f"{expected} objects at storescp", interval=0.25)
            assert node.stop() == 0
    finally:
        scp.stop()

    got = scp.files()
    assert len(got) == expected
    by_source: dict[str, set[str]] = {str(plain.SOPInstanceUID): set(), str(j2k.SOPInstanceUID): set()}
    for path in got:
        assert dciodvfy_errors(path) == [], path.name
        ds = pydicom.dcmread(path)
        kind = result_type(ds)
        refs = referenced_uids(ds) & set(by_source)
        assert len(refs) == 1, f"{path.name} refers to {refs}"
        by_source[refs.pop()].add(kind)
        read_back(ds)
    assert all(kinds == set(RESULT_CLASSES) for kinds in by_source.values()), by_source
    for src in files:
        assert dciodvfy_errors(src) == [], f"source {src.name}"
