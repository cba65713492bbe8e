"""The source mammogram's pixel grid, and the geometry DICOM objects demand of it.

A projection mammogram has no patient coordinates: no Image Position/Orientation
(Patient), often no Frame of Reference, and usually ImagerPixelSpacing (at the
detector) instead of PixelSpacing. Result objects are aligned with it pixel by pixel
through their references to the source image; where an IOD or a viewer demands more,
the helpers here supply a *nominal* geometry and say so.
"""
from __future__ import annotations

import re
from copy import deepcopy

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

import highdicom as hd

from .source_header import shallow_copy

MG_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1.2": "Digital Mammography X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "Digital Mammography X-Ray Image Storage - For Processing",
}
REQUIRED = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Rows", "Columns")
IDENTITY_ORIENTATION = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]  # rows along +x, columns along +y

NOMINAL_GEOMETRY_NOTE = (
    "Nominal geometry: the Frame of Reference, Image Position (Patient) 0\\0\\0 and "
    "Image Orientation (Patient) 1\\0\\0\\0\\1\\0 of this object describe the source "
    "mammogram's pixel grid ({spacing} mm per pixel, {origin}; nominal thickness {thickness:g} mm), "
    "not patient coordinates; "
    "a projection mammogram has none. Align with the source image through the "
    "referenced SOP Instance UID, pixel for pixel."
)


class UnsupportedSource(ValueError):
    """The source can never carry result objects (not a single-frame MG image with its
    identity and pixel spacing): a permanent failure, not one to retry."""


def check_source(source: Dataset) -> None:
    """A single-frame MG image with the identity a result object needs, else UnsupportedSource."""
    sop_class = str(source.get("SOPClassUID", ""))
    if sop_class not in MG_SOP_CLASSES or source.get("Modality") != "MG":
        raise UnsupportedSource(
            f"source is not a digital mammogram: SOP Class UID {sop_class!r}, modality "
            f"{source.get('Modality')!r}; allowed: {', '.join(MG_SOP_CLASSES)} with modality 'MG'"
        )
    missing = [kw for kw in REQUIRED if not source.get(kw)]
    if missing:
        raise UnsupportedSource(f"source lacks {', '.join(missing)}")
    if int(source.get("NumberOfFrames", 1) or 1) != 1:
        raise UnsupportedSource(
            f"source has {source.NumberOfFrames!r} frames; only single-frame mammograms are allowed")
    try:
        pixel_spacing(source)
    except ValueError as exc:
        raise UnsupportedSource(str(exc)) from None


def pixel_spacing(source: Dataset) -> tuple[list[float], str]:
    """(row, column) spacing in mm in the patient, as well as it is known, and whence.

    PS3.3 10.7.1.1: a PixelSpacing equal to ImagerPixelSpacing means the image was not
    corrected for magnification (many mammography units write both so), so it counts as
    ImagerPixelSpacing; one that differs, or comes with a calibration type, is calibrated
    in the patient; one alone is of unknown calibration and taken as it is.
    ImagerPixelSpacing (at the detector) is divided by the Estimated Radiographic
    Magnification Factor when the source gives one (PS3.3 C.8.11.7: the breast is magnified
    onto the detector, 1.05-1.1 in contact views, 1.5-2 in magnification views). A SEG's
    or PM's Pixel Spacing is a distance in the patient; highdicom reads only PixelSpacing,
    so callers pass this on.
    """
    pixel, imager = spacing_value(source, "PixelSpacing"), spacing_value(source, "ImagerPixelSpacing")
    calibrated = bool(source.get("PixelSpacingCalibrationType"))
    if pixel is not None and (calibrated or imager is None or not _same_spacing(pixel, imager)):
        return pixel, ("calibrated PixelSpacing" if calibrated or imager is not None
                       else "PixelSpacing, calibration unknown")
    if imager is not None:
        factor = _magnification(source)
        if factor is None:
            return imager, "at the detector"
        return [s / factor for s in imager], f"at the detector / magnification {factor:g}, in the patient"
    # Neither is two positive numbers; one that is present is skipped as cfia.dicom_io skips
    # it (one value, as some exports write).
    malformed = [f"{kw} {_quoted(source.get(kw))}" for kw in ("PixelSpacing", "ImagerPixelSpacing")
                 if source.get(kw) is not None]
    if malformed:
        raise ValueError(f"source {' and '.join(malformed)}: not two positive numbers")
    raise ValueError("source has neither PixelSpacing nor ImagerPixelSpacing")


def spacing_value(source: Dataset, keyword: str) -> list[float] | None:
    """The keyword's two positive numbers, or None (absent, or malformed: skipped)."""
    value = source.get(keyword)
    return None if value is None else _two_positive(value)


def _same_spacing(a: list[float], b: list[float]) -> bool:
    """Equal up to a DS string's rounding (16 characters, as often fewer digits)."""
    return all(abs(x - y) <= 1e-4 * max(x, y) for x, y in zip(a, b))


def _quoted(value, limit: int = 64) -> str:
    """A header value for a reason: bounded (a crafted one held 200,000 numbers, 1.4 MB)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _two_positive(value) -> list[float] | None:
    try:
        spacing = [float(v) for v in (value if isinstance(value, MultiValue) else [value])]
    except (TypeError, ValueError):
        return None
    return spacing if len(spacing) == 2 and min(spacing) > 0 else None


MAGNIFICATION_RANGE = (1.0, 3.0)  # source-detector over source-object distance: >= 1; views reach 2


def _magnification(source: Dataset):
    """The Estimated Radiographic Magnification Factor when it is one number a geometry can
    give; one below 1 (the breast beyond the detector) or far above a magnification view's
    would shrink every size in the patient by as much, and is ignored."""
    try:
        factor = float(source.get("EstimatedRadiographicMagnificationFactor"))
    except (TypeError, ValueError):
        return None
    lo, hi = MAGNIFICATION_RANGE
    return factor if lo <= factor <= hi else None


def pixel_measures(source: Dataset) -> hd.PixelMeasuresSequence:
    """Pixel measures of the source's grid, with the nominal thickness of the projection:
    SliceThickness is Type 1C once a Frame of Reference is present (dciodvfy), and
    highdicom's readers (segread) reject pixel measures without it."""
    spacing, _ = pixel_spacing(source)
    return hd.PixelMeasuresSequence(pixel_spacing=spacing, slice_thickness=nominal_thickness(source))


def nominal_geometry_note(source: Dataset) -> str:
    spacing, where = pixel_spacing(source)
    return NOMINAL_GEOMETRY_NOTE.format(
        spacing="\\".join(f"{s:g}" for s in spacing), origin=where, thickness=nominal_thickness(source)
    )


def with_nominal_geometry(source: Dataset, frame_of_reference_uid: str) -> Dataset:
    """A metadata copy of `source` placed on a nominal plane, for IODs that need one.

    The Parametric Map IOD mandates a Frame of Reference and plane position and
    orientation. highdicom 0.28's ParametricMap, given a single-frame source without
    patient geometry, fails with "Unexpected mismatch between dimension index values"
    and does not accept plane positions for such a source. So the map is built from
    this copy: the source's identity and references unchanged, plus a nominal frame
    of reference (its own UID, never the source's, so it claims nothing about the
    source's frame) and the pixel grid at z = 0 with identity orientation.
    The source itself is not modified; its pixel data is not copied.
    """
    copy = Dataset()
    for element in source:
        if element.keyword not in ("PixelData", "FrameOfReferenceUID", "PositionReferenceIndicator"):
            copy.add(deepcopy(element))  # the map must share nothing mutable with the source
    copy.FrameOfReferenceUID = frame_of_reference_uid
    copy.PositionReferenceIndicator = ""
    copy.ImagePositionPatient = [0.0, 0.0, 0.0]
    copy.ImageOrientationPatient = IDENTITY_ORIENTATION
    spacing, _ = pixel_spacing(source)
    copy.PixelSpacing = spacing
    # highdicom copies the pixel measures, SliceThickness included, from a source with
    # patient geometry (and fails without one). A projection integrates through the
    # compressed breast, so its nominal thickness is BodyPartThickness when known.
    copy.SliceThickness = nominal_thickness(source)
    return copy


def with_pixel_measures(source: Dataset) -> Dataset:
    """`source`, or, when it has patient geometry (Image Orientation (Patient), which an MG
    image may carry), a copy sharing its elements with the PixelSpacing and SliceThickness
    that highdicom 0.28's Segmentation then reads from it instead of the pixel measures it
    is given (AttributeError without them; a mammogram rarely has either). Without patient
    geometry highdicom reads a PixelSpacing too: a malformed one, which pixel_spacing()
    skips, is left out of the copy (TypeError on one value)."""
    if "ImageOrientationPatient" not in source:
        if "PixelSpacing" not in source or _two_positive(source.PixelSpacing) is not None:
            return source
        return shallow_copy(source, without=(0x00280030,))
    copy = shallow_copy(source, without=(0x00280030, 0x00180050))  # PixelSpacing, SliceThickness: replaced
    copy.PixelSpacing = pixel_spacing(source)[0]
    copy.SliceThickness = nominal_thickness(source)
    return copy


def nominal_thickness(source: Dataset) -> float:
    try:
        thickness = float(source.get("BodyPartThickness") or 0)
    except (TypeError, ValueError):
        thickness = 0.0
    return thickness if thickness > 0 else 1.0


_ORIENTATION_VALUE = re.compile(r"[APRLHF]{1,3}")


def patient_orientation(source: Dataset):
    """The source's PatientOrientation when it is two direction codes (PS3.3 C.7.6.1.1.1: A, P,
    R, L, H, F, e.g. P\\FL); else empty, as Type 2C allows: a malformed one copied as it was
    made every SEG invalid."""
    value = source.get("PatientOrientation")
    values = list(value) if isinstance(value, MultiValue) else []
    if len(values) == 2 and all(_ORIENTATION_VALUE.fullmatch(str(v)) for v in values):
        return value
    return ""


def add_segmentation_display_geometry(seg: Dataset, source: Dataset) -> None:
    """What a SEG of a mammogram needs beyond what highdicom writes.

    - PatientOrientation: Type 2C in General Image for images without patient
      geometry; highdicom leaves it out (dciodvfy error). Copied from the source.
    - PlaneOrientationSequence in the shared functional groups: highdicom omits it
      for sources without patient geometry, and OHIF 3.13 then hangs on
      "Loading SEG..." (its Cornerstone adapter reads ImageOrientationPatient).
      The nominal identity orientation states that the SEG's rows and columns are
      the source's.
    """
    seg.PatientOrientation = patient_orientation(source)
    shared = seg.SharedFunctionalGroupsSequence[0]
    if "PlaneOrientationSequence" not in shared:
        item = Dataset()
        item.ImageOrientationPatient = IDENTITY_ORIENTATION
        shared.PlaneOrientationSequence = [item]
