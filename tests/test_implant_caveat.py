"""A breast implant in the view: the source says so (BreastImplantPresent), and every place
the call is shown says the classifier was not trained on such views (docs/models.md, "A breast
implant and a biopsy clip"): `cfia explain`'s line and stderr, the overlay's caption, the
GSPS note. An implant-displaced view, the breast pulled in front of the implant, is not one."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
import yaml
from pydicom.dataset import Dataset

from cfia.dicom_io import implant_in_view
from cfia.overlay import described
from cfia.pipeline import CAVEAT_IMPLANT, Result
from dicom_out import AlgorithmInfo, Explanation, build_results
from phantom.dicom import to_dataset
from phantom.generate import PhantomOptions, make_one

ROOT = Path(__file__).resolve().parents[1]


def _view(*modifiers: tuple[str, str, str]) -> Dataset:
    ds = Dataset()
    ds.BreastImplantPresent = "YES"
    view = Dataset()
    view.CodeValue, view.CodingSchemeDesignator, view.CodeMeaning = "399162004", "SCT", "cranio-caudal"
    view.ViewModifierCodeSequence = []
    for value, scheme, meaning in modifiers:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
        view.ViewModifierCodeSequence.append(item)
    ds.ViewCodeSequence = [view]
    return ds


def test_the_implant_is_read_from_the_header_and_a_displaced_view_is_not_one():
    assert implant_in_view(_view())
    assert implant_in_view(_view(("399192003", "SCT", "Spot Compression")))
    assert not implant_in_view(_view(("399209000", "SCT", "Implant Displaced")))
    assert not implant_in_view(_view(("R-102D2", "SRT", "implant displaced")))  # a retired code, by its meaning
    for value in ("NO", "", None):
        ds = _view()
        if value is None:
            del ds.BreastImplantPresent
        else:
            ds.BreastImplantPresent = value
        assert not implant_in_view(ds)
    bare = Dataset()
    bare.BreastImplantPresent = "yes "
    assert implant_in_view(bare)  # no view sequence at all: nothing says the implant is displaced


def _result(caveat: str) -> Result:
    saliency = np.zeros((64, 48), np.float32)
    region = np.zeros((64, 48), bool)
    region[10:20, 10:20] = True
    return Result("cf", saliency, region, 0.9, 0.2, 40, 1.0, saliency, saliency, caveat=caveat)


def test_the_caption_and_the_gsps_note_end_with_the_caution():
    assert described(_result(CAVEAT_IMPLANT)).endswith(f"; caution: {CAVEAT_IMPLANT}")
    assert "caution" not in described(_result(""))
    mg = make_one(11, 0, PhantomOptions(size=(256, 208), positive_fraction=1.0))
    rows, cols = np.mgrid[:256, :208]
    saliency = np.exp(-((rows - 120) ** 2 + (cols - 90) ** 2) / (2 * 15.0 ** 2)).astype(np.float32)
    explanation = Explanation(saliency=saliency, region=saliency > 0.5, score=0.87, score_after_deletion=0.21,
                              positive=True, caveat=CAVEAT_IMPLANT)
    algorithm = AlgorithmInfo(model_name="toy-cnn", model_version="sha256:0123abcd", method="cf")
    for caveat, expected in ((CAVEAT_IMPLANT, True), ("", False)):
        gsps = build_results(to_dataset(mg, "t:cav", 1), replace(explanation, caveat=caveat), algorithm,
                             enabled=["gsps"])["gsps"]
        note = gsps.GraphicAnnotationSequence[0].TextObjectSequence[0].UnformattedTextValue
        assert note.endswith(f"; caution: {CAVEAT_IMPLANT}") is expected
        assert "without outlined region" in note
    with pytest.raises(ValueError, match="caveat"):
        replace(explanation, caveat="x" * 201).check(256, 208)


@pytest.fixture(scope="module")
def quick_config(tmp_path_factory):
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["explainer"]["method"] = "gradcam"  # one pass: the caveat does not depend on the method
    for key in ("classifier", "inpainter"):
        raw["models"][key]["path"] = str(ROOT / raw["models"][key]["path"])
    path = tmp_path_factory.mktemp("cfg") / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("implant", ["YES", "NO"])
def test_explain_says_an_implant_view_is_one_the_classifier_was_not_trained_on(tmp_path, quick_config, implant):
    ds = to_dataset(make_one(31, 3, PhantomOptions(size=(512, 416), positive_fraction=1.0)), "t:imp", 3)
    ds.BreastImplantPresent = implant
    src = tmp_path / "mg.dcm"
    ds.save_as(src, enforce_file_format=True)
    run = subprocess.run([sys.executable, "-m", "cfia.cli", "explain", str(src), "--out", str(tmp_path / "out"),
                          "--config", str(quick_config)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr
    line = json.loads(run.stdout.strip().splitlines()[-1])
    gsps = pydicom.dcmread(tmp_path / "out" / "gsps.dcm")
    note = gsps.GraphicAnnotationSequence[0].TextObjectSequence[0].UnformattedTextValue
    if implant == "YES":
        assert line["caveat"] == CAVEAT_IMPLANT
        assert f"mg.dcm: {CAVEAT_IMPLANT}" in run.stderr
        assert note.endswith(f"caution: {CAVEAT_IMPLANT}")
    else:
        assert "caveat" not in line and "breast implant" not in run.stderr and "caution" not in note
