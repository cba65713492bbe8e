"""What each result object names, pinned to the documented values: the method in the SR,
the SEG segments' codes, colours, algorithm type and content labels, the series numbers and
the SR finding's tracking UID (a changed line altered each without a test noticing)."""
from __future__ import annotations

import dataclasses

import highdicom as hd
from pydicom.sr.codedict import codes as sr_codes

from dicom_out import build_results
from test_dicom_out import ALGORITHM, make_explanation, make_source


def _items(node):
    for item in node.get("ContentSequence", []):
        yield item
        yield from _items(item)


def _named(sr, code_value):
    return [i for i in _items(sr) if "ConceptNameCodeSequence" in i and i.ConceptNameCodeSequence[0].CodeValue == code_value]


def test_sr_group_tracking_uid_is_the_binary_segments():
    results = build_results(make_source(), make_explanation(), ALGORITHM)
    seg_uid = results["binary_seg"].SegmentSequence[0].TrackingUID
    (tracking,) = _named(results["sr"], "112040")                  # DCM Tracking Unique Identifier
    assert tracking.UID == seg_uid


def test_sr_method_is_the_algorithms():
    algo = dataclasses.replace(ALGORITHM, method="gradcam")
    sr = build_results(make_source(), make_explanation(), algo)["sr"]
    (method,) = _named(sr, "370129005")                             # SCT Measurement Method
    assert method.ConceptCodeSequence[0].CodeValue == "130403"      # DCM Grad-CAM
    evaluation = [i for i in _items(sr) if i.ConceptNameCodeSequence[0].CodeValue == "XMETHOD"]
    assert evaluation[0].ConceptCodeSequence[0].CodeValue == "130403"


def test_segment_colours_and_property_types():
    results = build_results(make_source(), make_explanation(), ALGORITHM)
    frac, binary = results["fractional_seg"].SegmentSequence[0], results["binary_seg"].SegmentSequence[0]
    assert list(binary.RecommendedDisplayCIELabValue) == list(hd.color.CIELabColor(97.1, -21.6, 94.5).value)
    assert list(frac.RecommendedDisplayCIELabValue) == list(hd.color.CIELabColor(53.2, 80.1, 67.2).value)
    assert binary.SegmentedPropertyTypeCodeSequence[0].CodeValue == "SALREGION"
    assert frac.SegmentedPropertyTypeCodeSequence[0].CodeValue == "130404"


def test_a_capitalised_class_name_gets_its_snomed_finding():
    explanation = dataclasses.replace(make_explanation(), class_name="Mass", positive=True)
    sr = build_results(make_source(), explanation, ALGORITHM)["sr"]
    (finding,) = _named(sr, "121071")                                # DCM Finding
    assert finding.ConceptCodeSequence[0].CodeValue == sr_codes.SCT.Mass.value


def test_segments_are_automatic():
    results = build_results(make_source(), make_explanation(), ALGORITHM)
    for kind in ("fractional_seg", "binary_seg"):
        assert results[kind].SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"


def test_series_numbers_are_the_documented_ones():
    results = build_results(make_source(), make_explanation(), ALGORITHM)
    assert {k: int(v.SeriesNumber) for k, v in results.items()} == {
        "fractional_seg": 9101, "binary_seg": 9102, "parametric_map": 9103, "sr": 9104, "gsps": 9105}


def test_the_binary_segs_content_label_is_its_own():
    results = build_results(make_source(), make_explanation(), ALGORITHM)
    assert (results["fractional_seg"].ContentLabel, results["binary_seg"].ContentLabel) == ("CFIA_SALIENCY", "CFIA_REGION")
