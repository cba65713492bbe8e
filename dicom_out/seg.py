"""Segmentations of the saliency: FRACTIONAL (the map as a probability) and BINARY
(the salient region), one segment each, aligned pixel for pixel with the source."""
from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

import highdicom as hd

from . import codes, provenance
from .geometry import add_segmentation_display_geometry, pixel_measures, with_pixel_measures
from .model import AlgorithmInfo, Explanation
from .uids import derived_uid
from .series import SERIES_NUMBERS, series_description, instance_number, stable_dimension_organization, uids_for

SEGMENT_NUMBER = 1
MAX_FRACTIONAL_VALUE = 255  # 8-bit quantisation: saliency error <= 1/510
SALIENCY_COLOR = hd.color.CIELabColor(53.2, 80.1, 67.2)  # red
REGION_COLOR = hd.color.CIELabColor(97.1, -21.6, 94.5)   # yellow


def build_fractional_seg(source: Dataset, explanation: Explanation, algorithm: AlgorithmInfo) -> hd.seg.Segmentation:
    """The saliency map as a FRACTIONAL (PROBABILITY) segmentation."""
    segment = _segment(source, algorithm, "saliency", codes.SALIENCY, SALIENCY_COLOR)
    return _segmentation(
        source, explanation.saliency.astype(np.float32), "FRACTIONAL", segment, algorithm,
        "fractional_seg", "CFIA_SALIENCY", explanation,
    )


def build_binary_seg(source: Dataset, explanation: Explanation, algorithm: AlgorithmInfo) -> hd.seg.Segmentation:
    """The salient region as a BINARY segmentation; an empty region gives an empty frame."""
    segment = _segment(source, algorithm, "salient region", codes.SALIENT_REGION, REGION_COLOR)
    return _segmentation(
        source, explanation.region, "BINARY", segment, algorithm, "binary_seg", "CFIA_REGION", explanation,
    )


def _segment(source: Dataset, algorithm: AlgorithmInfo, label: str, kind, color) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=SEGMENT_NUMBER,
        segment_label=label,
        segmented_property_category=codes.REGION_CATEGORY,
        segmented_property_type=kind,
        algorithm_type="AUTOMATIC",
        algorithm_identification=provenance.algorithm_identification(algorithm),
        tracking_id=f"cfia {label}",
        tracking_uid=tracking_uid(source, algorithm, label),
        # OHIF warns and picks its own colour without a RecommendedDisplayCIELabValue.
        display_color=color,
    )


def tracking_uid(source: Dataset, algorithm: AlgorithmInfo, label: str) -> str:
    """Same finding, same tracking UID: shared by the SEG segment and the SR group."""
    return derived_uid(str(source.SOPInstanceUID), algorithm.uid_key, f"tracking {label}")


def _segmentation(
    source: Dataset,
    pixels: np.ndarray,
    segmentation_type: str,
    segment: hd.seg.SegmentDescription,
    algorithm: AlgorithmInfo,
    object_type: str,
    content_label: str,
    explanation: Explanation,
) -> hd.seg.Segmentation:
    uids = uids_for(source, object_type, algorithm)
    seg = hd.seg.Segmentation(
        source_images=[with_pixel_measures(source)],
        pixel_array=pixels[np.newaxis],
        segmentation_type=segmentation_type,
        segment_descriptions=[segment],
        series_instance_uid=uids.series,
        series_number=SERIES_NUMBERS[object_type],
        sop_instance_uid=uids.instance,
        instance_number=instance_number(source),
        **provenance.equipment_args(algorithm),
        fractional_type="PROBABILITY" if segmentation_type == "FRACTIONAL" else None,
        max_fractional_value=MAX_FRACTIONAL_VALUE,
        content_label=content_label,
        content_description=f"{algorithm.name} {algorithm.method} explanation"[:64],
        content_creator_name=None,
        # highdicom reads only PixelSpacing; mammograms often have only ImagerPixelSpacing.
        pixel_measures=pixel_measures(source),
        # Keep the one frame even if it is empty, so frame 1 always exists for references.
        omit_empty_frames=False,
        contributing_equipment=[provenance.contributing_equipment(algorithm)],
        series_description=series_description(object_type, explanation),
        coding_schemes=codes.coding_schemes() if _uses_local_codes(segment) else None,
    )
    # No series Laterality here: a SEG carries no BodyPartExamined, so dciodvfy forbids it.
    add_segmentation_display_geometry(seg, source)
    stable_dimension_organization(seg, source, object_type, algorithm)
    return seg


def _uses_local_codes(segment: hd.seg.SegmentDescription) -> bool:
    return segment.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == codes.SCHEME
