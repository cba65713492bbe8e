"""The explanation as a TID 1500 Measurement Report in a Comprehensive 3D SR.

One planar-ROI measurement group (TID 1410) whose region is segment 1 of the BINARY
SEG: finding = the explained class (only when the classifier called it and the region is
not empty), measurements =
the classifier's score and its score once the region is deleted, qualitative
evaluations = the explanation method and, when given, the call (present / absent).
The observer is the algorithm as a device.
"""
from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

import highdicom as hd

from . import codes, provenance
from .geometry import spacing_value
from .model import AlgorithmInfo, Explanation
from .seg import SEGMENT_NUMBER, tracking_uid
from .series import SERIES_NUMBERS, series_description, instance_number, uids_for

SEG_FRAME = 1  # the BINARY SEG has exactly one frame, kept even when empty
REFERENCED_SEGMENTATION_FRAME = "121214"  # DCM concept name of TID 1410's segment reference


def image_library(source: Dataset) -> list[Dataset]:
    """The image library's entry: the explained mammogram, when it can be described.

    TID 1603's Patient Orientation Row/Column and pixel spacing descriptors are required
    only if the image has them, but highdicom 0.28 (sr/templates.py, projection
    radiography descriptors) reads `PatientOrientation[0]`, `[1]` and
    `ImagerPixelSpacing` unconditionally: an AttributeError or IndexError for a source
    without them (or with an ImagerPixelSpacing that is not two positive numbers). Such a
    source gets no library entry; the SR still names it in its evidence and through the SEG
    it points to.
    """
    orientation = source.get("PatientOrientation")
    # A malformed ImagerPixelSpacing beside a PixelSpacing that places the map: highdicom
    # failed on one value (TypeError) and wrote 0\0 as the image's spacing.
    if not isinstance(orientation, MultiValue) or len(orientation) != 2 or spacing_value(source, "ImagerPixelSpacing") is None:
        return []
    return [source]


def build_sr(
    source: Dataset,
    explanation: Explanation,
    algorithm: AlgorithmInfo,
    binary_seg: Dataset,
) -> hd.sr.Comprehensive3DSR:
    """`binary_seg` is the region the report points to (built by build_binary_seg)."""
    _check_seg_references(binary_seg, source)
    uids = uids_for(source, "sr", algorithm)
    report = hd.sr.MeasurementReport(
        observation_context=_device_observer(algorithm),
        procedure_reported=codes.MAMMOGRAPHY,
        imaging_measurements=[_region_group(source, explanation, algorithm, binary_seg)],
        referenced_images=image_library(source),
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[source, binary_seg],
        content=report,
        series_instance_uid=uids.series,
        series_number=SERIES_NUMBERS["sr"],
        sop_instance_uid=uids.instance,
        instance_number=instance_number(source),
        manufacturer=algorithm.manufacturer,
        is_complete=True,
        is_final=False,   # unverified machine output
        is_verified=False,
        contributing_equipment=[provenance.contributing_equipment(algorithm)],
        series_description=series_description("sr", explanation),
        coding_schemes=codes.coding_schemes(),
    )
    _reference_whole_segment(sr)
    # highdicom's SR takes only the manufacturer; the other equipment fields, as every object has them.
    equipment = provenance.equipment_args(algorithm)
    sr.ManufacturerModelName = equipment["manufacturer_model_name"]
    sr.SoftwareVersions = equipment["software_versions"]
    sr.DeviceSerialNumber = equipment["device_serial_number"]
    return sr


def _reference_whole_segment(sr: Dataset) -> None:
    """Drop ReferencedFrameNumber from the SR's reference to the SEG segment.

    highdicom 0.28's ReferencedSegmentationFrame requires a frame number and writes it
    next to ReferencedSegmentNumber, but the SOP Instance Reference of an IMAGE content
    item allows the segment number only without a frame number (dciodvfy: "Shall not
    be present when ReferencedFrameNumber is present"). TID 1410 row 7 lets the frame
    number be absent when the whole single-segment SEG is meant, which it is here: the
    BINARY SEG has one frame, segment 1. So the reference names the segment, not the frame.
    """
    for item in _content_items(sr):
        name = item.get("ConceptNameCodeSequence")
        if item.get("ValueType") != "IMAGE" or not name or name[0].CodeValue != REFERENCED_SEGMENTATION_FRAME:
            continue
        for ref in item.ReferencedSOPSequence:
            if "ReferencedSegmentNumber" in ref and "ReferencedFrameNumber" in ref:
                del ref.ReferencedFrameNumber


def _content_items(node: Dataset):
    for item in node.get("ContentSequence", []):
        yield item
        yield from _content_items(item)


def _check_seg_references(seg: Dataset, source: Dataset) -> None:
    refs = {
        str(item.ReferencedSOPInstanceUID)
        for series in seg.get("ReferencedSeriesSequence", [])
        for item in series.get("ReferencedInstanceSequence", [])
    }
    if str(source.SOPInstanceUID) not in refs or seg.get("SegmentationType") != "BINARY":
        raise ValueError(
            f"binary_seg {seg.get('SOPInstanceUID')!r} (type {seg.get('SegmentationType')!r}) is not "
            f"a BINARY SEG of source {source.SOPInstanceUID!r}"
        )


def _device_observer(algorithm: AlgorithmInfo) -> hd.sr.ObservationContext:
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=provenance.the_device_uid(algorithm),
        name=algorithm.name,
        manufacturer_name=algorithm.manufacturer,
        model_name=algorithm.model_name,
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DEVICE, observer_identifying_attributes=device,
        )
    )


def _region_group(
    source: Dataset, explanation: Explanation, algorithm: AlgorithmInfo, seg: Dataset,
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    # Built directly: ReferencedSegmentationFrame.from_segmentation fails on a
    # single-frame SEG (highdicom 0.28).
    segment = hd.sr.ReferencedSegmentationFrame(
        sop_class_uid=seg.SOPClassUID,
        sop_instance_uid=seg.SOPInstanceUID,
        frame_number=SEG_FRAME,
        segment_number=SEGMENT_NUMBER,
        source_image=hd.sr.SourceImageForSegmentation(source.SOPClassUID, source.SOPInstanceUID),
    )
    algorithm_id = provenance.sr_algorithm_identification(algorithm)
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid(source, algorithm, "salient region"), identifier="cfia salient region",
        ),
        referenced_segment=segment,
        finding_type=_finding(explanation),
        method=codes.METHOD_CODES[algorithm.method],
        algorithm_id=algorithm_id,
        measurements=[
            _score(codes.CLASSIFIER_SCORE, explanation.score, algorithm_id),
            _score(codes.SCORE_AFTER_DELETION, explanation.score_after_deletion, algorithm_id),
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(codes.EXPLANATION_METHOD, codes.METHOD_CODES[algorithm.method]),
            *([] if explanation.positive is None else
              [hd.sr.QualitativeEvaluation(codes.CLASSIFIER_CALL, codes.CALL_VALUES[explanation.positive])]),
        ],
    )


def _finding(explanation: Explanation):
    """The Finding a TID 1500 consumer would count as a lesion at the region.

    None for a negative call (its region is what moves the score, not a finding) and for
    an empty region (the SEG's segment is empty, so the finding would have no location).
    """
    if explanation.positive is False or not explanation.region.any():
        return None
    return codes.finding(explanation.class_name)


def _score(name, value: float, algorithm_id) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=name, value=float(value), unit=codes.NO_UNITS, algorithm_id=algorithm_id)
