"""`cfia demo` end to end with the shipped models (few optimiser passes, a small phantom):
results into the output folder, overlay.png, summary, and no process left behind."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pydicom
import pytest
import yaml
from PIL import Image

from cfia import demo
from cfia.local_node import effective_config
from peer_helpers import PASSES, RESULT_CLASSES, pipeline_overrides, referenced_uids

pytestmark = [pytest.mark.slow, pytest.mark.pipeline]


def test_demo_receives_every_result_and_writes_the_overlay(tmp_path):
    pipeline_overrides()  # skips (or fails under CFIA_REQUIRE_PEERS) without a trained classifier
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(effective_config(None, {"explainer": {"max_passes": PASSES}})))
    out = tmp_path / "demo-out"
    out.mkdir()
    (out / "mine.txt").write_text("not the demo's")
    lines: list[str] = []
    summary = demo.run(out, base, size=(512, 416), timeout=300, say=lines.append)

    text = "\n".join(lines)
    assert "status 0x0000" in text and "node stopped (exit 0)" in text and "classifier score" in text
    assert (out / "mine.txt").exists()  # only the demo's own files are replaced
    source = pydicom.dcmread(out / "source.dcm", stop_before_pixels=True)
    assert sorted(summary["objects"]) == sorted(RESULT_CLASSES)
    for kind in RESULT_CLASSES:
        ds = pydicom.dcmread(out / f"{kind}.dcm", stop_before_pixels=True)
        assert str(source.SOPInstanceUID) in referenced_uids(ds)
    assert 0 <= summary["score"] <= 1 and 0 <= summary["score_after_deletion"] <= 1
    assert summary["region"]["pixels"] >= 0 and "peak_on_lesion" in summary["region"]
    assert json.loads((out / "summary.json").read_text())["seconds"]["total"] > 0
    with Image.open(out / "overlay.png") as png:
        assert png.size == (416, 512)
    serve_pid = int(re.search(r"cfia serve \(pid (\d+)\)", text).group(1))
    assert _session_members(serve_pid) == [], "the node's processes outlived the demo"


def _session_members(sid: int) -> list[int]:
    """Processes in session `sid` (cfia serve leads its own session; its workers are in it)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found
