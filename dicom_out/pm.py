"""The saliency as a float32 Parametric Map, on a nominal plane (see geometry.py)."""
from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset

import highdicom as hd

from . import codes, provenance
from .geometry import nominal_geometry_note, with_nominal_geometry
from .model import AlgorithmInfo, Explanation
from .series import (
    SERIES_NUMBERS, series_description, add_series_laterality, instance_number, stable_dimension_organization, uids_for,
)
from .uids import derived_uid

LUT_LABEL = "CFIA_SALIENCY"  # <= 16 characters


def build_parametric_map(source: Dataset, explanation: Explanation, algorithm: AlgorithmInfo) -> hd.pm.ParametricMap:
    uids = uids_for(source, "parametric_map", algorithm)
    frame_uid = derived_uid(str(source.SOPInstanceUID), algorithm.uid_key, "nominal frame of reference")
    saliency = explanation.saliency.astype(np.float32)
    pm = hd.pm.ParametricMap(
        source_images=[with_nominal_geometry(source, frame_uid)],
        pixel_array=saliency[np.newaxis],
        series_instance_uid=uids.series,
        series_number=SERIES_NUMBERS["parametric_map"],
        sop_instance_uid=uids.instance,
        instance_number=instance_number(source),
        **provenance.equipment_args(algorithm),
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[_value_mapping(algorithm)],
        voi_lut_transformations=[_windows(saliency)],
        content_label="CFIA_SALIENCY",
        content_description=f"{algorithm.name} {algorithm.method} saliency, nominal geometry"[:64],
        # Pixel measures come from the nominal-geometry copy (PixelSpacing set there from
        # ImagerPixelSpacing if need be): highdicom prefers the source's over an argument.
        image_flavor="STATIC",  # one 2D projection, not a VOLUME
        contributing_equipment=[provenance.contributing_equipment(algorithm)],
        series_description=series_description("parametric_map", explanation),
    )
    _declare_nominal_geometry(pm, source)
    add_series_laterality(pm, source)
    stable_dimension_organization(pm, source, "parametric_map", algorithm)
    return pm


def _value_mapping(algorithm: AlgorithmInfo) -> hd.pm.RealWorldValueMapping:
    return hd.pm.RealWorldValueMapping(
        lut_label=LUT_LABEL,
        lut_explanation=f"{algorithm.name} saliency ({algorithm.method}): relative within this image"[:64],
        unit=codes.NO_UNITS,
        value_range=(0.0, 1.0),
        slope=1.0,
        intercept=0.0,
        quantity_definition=codes.SALIENCY,
    )


def _windows(saliency: np.ndarray) -> hd.VOILUTTransformation:
    """Full range first, then the map's own range. A map is relative within its image (most are
    scaled to peak near 1): a value is no given effect on the score.

    LINEAR_EXACT because LINEAR's "-0.5" and "width-1" terms assume integer pixels and
    collapse a window of width 1 over float data to black-and-white.
    """
    top = max(float(saliency.max()), 1e-3)
    return hd.VOILUTTransformation(
        window_center=[0.5, top / 2],
        window_width=[1.0, top],
        window_explanation=["FULL RANGE 0-1", "MAP RANGE"],
        voi_lut_function="LINEAR_EXACT",
    )


def _declare_nominal_geometry(pm: Dataset, source: Dataset) -> None:
    """Say in the object that its frame of reference and plane geometry are nominal."""
    note = nominal_geometry_note(source)
    for frame in pm.PerFrameFunctionalGroupsSequence:
        for derivation in frame.get("DerivationImageSequence", []):
            derivation.DerivationDescription = note[:1024]
