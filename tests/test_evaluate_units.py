"""`cfia evaluate`'s units: an oracle map scores full marks on its own lesion; the pointing
tolerance from mm to pixels, and an image without a pixel spacing, whose boundary distance is in
pixels and must not be reported, or summarised, as millimetres."""
from __future__ import annotations

import csv
import json
import math

import pydicom
import pytest

from cfia import evaluate as ev
from cfia.cli import main


def test_tolerance_px_divides_the_tolerance_by_each_axis_spacing():
    assert ev.tolerance_px(2.0, (0.1, 0.05)) == (20, 40)
    assert ev.tolerance_px(2.0, (0.4545, 0.4545)) == (4, 4)
    assert ev.tolerance_px(0.01, (0.1, 0.1)) == (1, 1)  # at least one pixel


@pytest.mark.parametrize("spacing", [None, ()])
def test_tolerance_px_without_spacing_reads_the_millimetres_as_pixels(spacing):
    assert ev.tolerance_px(2.0, spacing) == (2, 2)
    assert ev.tolerance_px(0.2, spacing) == (1, 1)


def _case(methods: dict) -> dict:
    return {"file": "x.dcm", "kind": "", "methods": {"m": methods}}


def _scores(**bdist) -> dict:
    return dict({k: 0.5 for k in ev.METRICS if k != "boundary_distance_mm"}, **bdist)


def test_summary_median_in_mm_leaves_out_cases_without_spacing():
    """A case in pixels (null in mm) and one without a region (inf) are not in the mm median;
    the summary counts both what it is over and what lacked a spacing; the table shows mm only."""
    cases = [_case(_scores(boundary_distance_mm=1.0)), _case(_scores(boundary_distance_mm=3.0)),
             _case(_scores(boundary_distance_mm=None, boundary_distance_px=40.0)),
             _case(_scores(boundary_distance_mm=float("inf")))]
    s = ev.summarise(cases, ["m"])["m"]
    assert s["boundary_distance_mm"] == 2.0
    assert s["boundary_distance_mm_n"] == 2 and s["boundary_distance_mm_no_spacing"] == 1
    text = ev.table({"m": s})
    assert "| 2.0 |" in text and "1 case(s) without a pixel spacing left out" in text
    only_px = ev.summarise([cases[2]], ["m"])
    assert "| - |" in ev.table(only_px).splitlines()[2]  # no millimetres at all: a dash, not "nan"


def test_an_image_without_spacing_is_left_out_of_the_millimetres(tmp_path, capsys):
    """Two copies of one phantom, one without ImagerPixelSpacing: the same map, but only the
    copy with a spacing has a boundary distance in mm and is in the summary's median; the
    other has it in pixels and its tolerance in pixels recorded."""
    data = tmp_path / "data"
    assert main(["phantom", "--out", str(data), "--count", "1", "--seed", "31", "--size", "256x208",
                 "--positive-fraction", "1", "--quiet"]) == 0
    with open(data / "manifest.csv") as fh:
        rows = list(csv.DictReader(fh))
    ds = pydicom.dcmread(data / rows[0]["file"])
    del ds.ImagerPixelSpacing
    assert "PixelSpacing" not in ds
    ds.save_as(data / "nospacing.dcm")
    with open(data / "manifest.csv", "w", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=list(rows[0]))
        out.writeheader()
        out.writerows([rows[0], dict(rows[0], file="nospacing.dcm")])
    report_path = tmp_path / "r.json"
    capsys.readouterr()
    assert main(["evaluate", "--data", str(data), "--methods", "gradcam", "--threshold", "0",
                 "--out", str(report_path)]) == 0
    printed = capsys.readouterr().out
    report = json.loads(report_path.read_text())
    with_mm, without = report["cases"]
    assert without["file"] == "nospacing.dcm" and without["spacing_mm"] is None
    mm = with_mm["methods"]["gradcam"]["boundary_distance_mm"]
    assert mm is not None and math.isfinite(mm)  # the phantom's map has a region
    assert without["methods"]["gradcam"]["boundary_distance_mm"] is None
    px = without["methods"]["gradcam"]["boundary_distance_px"]
    assert px * with_mm["spacing_mm"] == pytest.approx(mm)
    assert without["tolerance_px"] == [2, 2]
    assert with_mm["tolerance_px"] == list(ev.tolerance_px(2.0, (with_mm["spacing_mm"],) * 2))
    summary = report["summary"]["gradcam"]
    assert summary["boundary_distance_mm"] == pytest.approx(mm)
    assert summary["boundary_distance_mm_n"] == 1 and summary["boundary_distance_mm_no_spacing"] == 1
    row = next(line for line in printed.splitlines() if line.startswith("| gradcam |"))
    assert row.split("|")[6].strip() == f"{mm:.1f}"
    assert "1 case(s) without a pixel spacing left out" in printed


@pytest.mark.parametrize("threshold", ["nan", "50", "-0.1", "half"])
def test_a_call_threshold_that_is_no_probability_stops_before_any_work(tmp_path, capsys, threshold):
    """NaN compared false, so every image was called positive; 50 (meant as per cent) called none."""
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", "--data", str(tmp_path), "--methods", "gradcam", "--threshold", threshold])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--threshold" in err and ("must lie between 0 and 1" in err or "expected a probability" in err)


def test_an_oracle_map_scores_full_marks_and_a_mirrored_one_none(tmp_path):
    """evaluate() against a stand-in pipeline whose map is the case's own lesion mask (each
    positive, in manifest order): pointing 1, energy 1, IoU 1 for every case; the same map
    mirrored left to right lies off the lesion: pointing 0, energy 0."""
    from types import SimpleNamespace

    import numpy as np

    from cfia.manifest import read_manifest, read_mask
    from cfia.pipeline import Result

    data = tmp_path / "data"
    assert main(["phantom", "--out", str(data), "--count", "6", "--seed", "33", "--size", "256x208",
                 "--positive-fraction", "1", "--quiet"]) == 0
    masks = [read_mask(r.mask) for r in read_manifest(data) if r.label == 1]

    def stand_in(mirror: bool):
        queue = list(masks)

        def explain(src, method):
            lesion = queue.pop(0)
            lesion = lesion[:, ::-1] if mirror else lesion
            saliency = lesion.astype(np.float32)
            return Result(method, saliency, lesion.copy(), 0.9, 0.1, 1, 0.0, saliency, saliency)
        return SimpleNamespace(cfg=SimpleNamespace(models=SimpleNamespace(classifier=SimpleNamespace(
            input_size=(256, 176)))), device="cpu", probability=lambda x: 0.9,
            inpainter=lambda x, hole: x, explain=explain)

    report, _ = ev.evaluate(stand_in(False), data, ["cf"])
    assert len(report["cases"]) == len(masks) >= 3
    for case in report["cases"]:
        scores = case["methods"]["cf"]
        assert scores["pointing_game"] and scores["energy_inside"] == 1.0 and scores["iou"] == 1.0, case["file"]
    report, _ = ev.evaluate(stand_in(True), data, ["cf"])
    for case in report["cases"]:
        scores = case["methods"]["cf"]
        assert not scores["pointing_game"] and scores["energy_inside"] == 0.0, case["file"]
