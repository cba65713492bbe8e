"""cfia.pipeline.presented: what the objects, the overlay and `cfia explain` show of a result.
A negative call's region, or one whose replacement does not lower the score, read like a
finding (an outline on a normal breast, or beside a missed lesion): neither is shown; a positive
call whose map is empty says so. Also
the smallest region the pipeline keeps, scaled from the input grid to the source's."""
from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest

from cfia.config import CALL_THRESHOLD
from cfia.pipeline import WITHHELD_EMPTY_MAP, WITHHELD_NEGATIVE, WITHHELD_NOT_LOWER, Pipeline, Result, presented
from explain.preprocess import Geometry
from phantom.dicom import to_dataset
from phantom.generate import PhantomOptions, make_one
from test_explain_command import _explain, small_config  # noqa: F401 (a fixture)


def _result(score: float, after: float) -> Result:
    region = np.zeros((8, 8), bool)
    region[2:5, 2:5] = True
    saliency = region.astype(np.float32)
    return Result("cf", saliency, region, score, after, 5, 0.1, saliency, saliency)


def test_a_positive_call_keeps_a_region_that_lowers_its_score():
    result = _result(0.9, 0.2)
    assert presented(result) is result


def test_a_negative_call_shows_no_region_and_deletes_nothing():
    shown = presented(_result(0.3, 0.1))
    assert not shown.region.any() and shown.score_after_deletion == 0.3 and shown.withheld == WITHHELD_NEGATIVE
    assert shown.saliency.any()  # the map is kept


def test_the_call_is_negative_below_call_threshold_and_positive_at_it():
    """A score between 0.4 and the threshold is a negative call: its region is not shown."""
    assert CALL_THRESHOLD == 0.5  # the scores below are chosen around it
    below = presented(_result(0.45, 0.2))
    assert not below.region.any() and below.withheld == WITHHELD_NEGATIVE
    at = _result(CALL_THRESHOLD, 0.2)
    assert presented(at) is at


@pytest.mark.parametrize("resized, expected", [((100, 75), 16 * 16), ((100, 150), 16 * 8), ((800, 600), 16 // 4)])
def test_min_region_pixels_are_scaled_from_the_input_grid_to_source_pixels(resized, expected):
    """Source 400 x 300. 16 input pixels at 1/4 scale per axis cover 16 x 16 source pixels;
    at (1/4, 1/2), 16 x 8; at 2x per axis, 16 / 4."""
    geometry = Geometry((400, 300), False, (0, 400, 0, 300), resized, (0, 0), resized)
    pipeline = SimpleNamespace(cfg=SimpleNamespace(explainer=SimpleNamespace(min_region_pixels=16)))
    assert Pipeline._min_region_source(pipeline, geometry) == expected


def test_a_region_whose_replacement_raises_the_score_is_not_shown():
    shown = presented(_result(0.6, 0.7))
    assert not shown.region.any() and shown.score_after_deletion == 0.6 and shown.withheld == WITHHELD_NOT_LOWER


def test_a_sure_models_region_that_lowers_its_log_odds_is_shown_though_p_stays_1():
    """p is 1.0 in float32 once the logit passes about 17: a region that took the logit from 19
    to 17 was withheld as one that did not lower the score."""
    result = _result(1.0, 1.0)
    assert presented(replace(result, logit=19.0, logit_after=17.3)).region.any()
    assert presented(replace(result, logit=19.0, logit_after=19.5)).withheld == WITHHELD_NOT_LOWER


def test_a_positive_call_with_an_empty_map_says_so(capsys):
    """Grad-CAM on the raw logit can weigh every activation below zero: the map is empty on a
    positive call. The objects, the overlay and `cfia explain`'s warning said only "no region"
    (and blamed min_region_pixels)."""
    from cfia import cli

    empty = _result(0.6, 0.6)
    empty = replace(empty, method="gradcam", saliency=np.zeros_like(empty.saliency),
                    region=np.zeros_like(empty.region))
    shown = presented(empty)
    assert shown.withheld == WITHHELD_EMPTY_MAP and not shown.region.any()
    assert presented(replace(empty, score=0.3)).withheld == WITHHELD_NEGATIVE
    for baseline_score, hinted in (("logit", True), ("log_odds", False)):
        line = cli._explained_line(shown, empty, [], "")
        assert line["region_withheld"] == WITHHELD_EMPTY_MAP
        cli._warn_explained("mg.dcm", shown, empty, line, SimpleNamespace(baseline_score=baseline_score))
        err = capsys.readouterr().err
        assert "the gradcam map is empty" in err and "min_region_pixels" not in err
        assert ("baseline_score: log_odds" in err) is hinted
    # blur is driven by explainer.score, as cf is: baseline_score is no hint for it
    cli._warn_explained("mg.dcm", replace(shown, method="blur"), empty, line, SimpleNamespace(baseline_score="logit"))
    assert "baseline_score" not in capsys.readouterr().err


def test_explain_outlines_nothing_on_an_image_called_negative(tmp_path, small_config):  # noqa: F811
    src = tmp_path / "mg.dcm"
    to_dataset(make_one(2000, 1, PhantomOptions(size=(512, 416), positive_fraction=0.0)), "t:n", 1).save_as(
        src, enforce_file_format=True)
    _, line = _explain(src, tmp_path / "out", small_config)
    assert line["score"] < 0.5  # the case this test is about
    assert line["region_pixels"] == 0 and line["region_withheld"] == WITHHELD_NEGATIVE
    assert line["score_after_deletion"] == line["score"]
    # What was withheld is still reported: the method's own region (it draws one on this image)
    # and the score with that region deleted, not the shown score copied.
    assert line["method_region_pixels"] > 0
    assert 0 <= line["method_score_after_deletion"] <= 1 and line["method_score_after_deletion"] != line["score"]
    assert line["region_forwards"] == 0  # no search for the components of a region that is withheld
    gsps = pydicom.dcmread(tmp_path / "out" / "gsps.dcm")
    assert "GraphicObjectSequence" not in gsps.GraphicAnnotationSequence[0]
    assert gsps.SeriesDescription.endswith(", classifier negative")
    assert np.load(tmp_path / "out" / "saliency.npy").max() > 0
