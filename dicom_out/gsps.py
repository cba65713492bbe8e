"""A Grayscale Softcopy Presentation State outlining the salient region(s) on the
mammogram, with a one-line text note of the scores; with no region, the note only."""
from __future__ import annotations

import math

import numpy as np
from pydicom.dataset import Dataset
from skimage import measure

import highdicom as hd

from . import provenance
from .geometry import pixel_spacing
from .model import AlgorithmInfo, Explanation, probability_text
from .series import SERIES_NUMBERS, series_description, add_series_laterality, instance_number, uids_for

LAYER = "CFIA_REGION"
OUTLINE_COLOR = hd.color.CIELabColor(97.1, -21.6, 94.5)  # yellow, as the BINARY SEG
SIMPLIFY_TOLERANCE = 0.5  # pixels: drop contour points that add nothing visible
MAX_POINTS = 4096         # per outline, so a ragged region cannot bloat the object


def build_gsps(
    source: Dataset, explanation: Explanation, algorithm: AlgorithmInfo,
) -> hd.pr.GrayscaleSoftcopyPresentationState:
    uids = uids_for(source, "gsps", algorithm)
    layer = hd.pr.GraphicLayer(
        layer_name=LAYER, order=1, description=f"{algorithm.name} salient region", display_color=OUTLINE_COLOR,
    )
    annotation = hd.pr.GraphicAnnotation(
        referenced_images=[source],
        graphic_layer=layer,
        graphic_objects=[
            hd.pr.GraphicObject(graphic_type="POLYLINE", graphic_data=outline, units="PIXEL")
            for outline in region_outlines(explanation.region)
        ] or None,
        text_objects=[_note(source, explanation, algorithm)],
    )
    gsps = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[source],
        series_instance_uid=uids.series,
        series_number=SERIES_NUMBERS["gsps"],
        sop_instance_uid=uids.instance,
        instance_number=instance_number(source),
        **provenance.equipment_args(algorithm),
        content_label="CFIA_OUTLINE",
        content_description=f"{algorithm.name} {algorithm.method} salient region outline"[:64],
        graphic_annotations=[annotation],
        graphic_layers=[layer],
        contributing_equipment=[provenance.contributing_equipment(algorithm)],
        series_description=series_description("gsps", explanation),
        presentation_lut_transformation=_presentation_lut(source),
    )
    add_series_laterality(gsps, source)
    _pixel_aspect_ratio(gsps, source)
    return gsps


def _pixel_aspect_ratio(gsps, source: Dataset) -> None:
    """highdicom 0.28 writes Presentation Pixel Aspect Ratio 1\\1 whatever the pixels: a source
    whose rows and columns are spaced differently would be shown stretched."""
    (row, col), _ = pixel_spacing(source)
    if math.isclose(row, col, rel_tol=1e-6):
        return
    a, b = round(row * 1e6), round(col * 1e6)
    g = math.gcd(a, b)
    for item in gsps.DisplayedAreaSelectionSequence:
        item.PresentationPixelAspectRatio = [a // g, b // g]


def _presentation_lut(source: Dataset) -> hd.PresentationLUTTransformation:
    """Keep the source's polarity: a GSPS's Presentation LUT overrides MONOCHROME1, and
    highdicom defaults to IDENTITY, which would show a MONOCHROME1 mammogram inverted."""
    shape = source.get("PresentationLUTShape") or (
        "INVERSE" if source.get("PhotometricInterpretation") == "MONOCHROME1" else "IDENTITY"
    )
    return hd.PresentationLUTTransformation(presentation_lut_shape=shape)


def region_outlines(region: np.ndarray) -> list[np.ndarray]:
    """Closed outlines of each connected region, as (column, row) PIXEL coordinates.

    Contours run along pixel edges: (0, 0) is the top-left corner of the top-left
    pixel in DICOM PIXEL units, so a contour at pixel centre index i lies at i + 0.5.
    """
    if not region.any():
        return []
    padded = np.pad(region, 1).astype(np.float32)  # so regions touching the border close
    rows, cols = region.shape
    outlines = []
    for contour in measure.find_contours(padded, 0.5):
        contour = measure.approximate_polygon(contour, SIMPLIFY_TOLERANCE)
        if len(contour) > MAX_POINTS:
            contour = np.vstack([contour[:: int(np.ceil(len(contour) / MAX_POINTS))], contour[:1]])
        # padded index p -> source index p - 1 -> pixel-corner coordinate p - 1 + 0.5
        xy = np.stack([contour[:, 1] - 0.5, contour[:, 0] - 0.5], axis=1)
        xy[:, 0] = np.clip(xy[:, 0], 0.0, cols)
        xy[:, 1] = np.clip(xy[:, 1], 0.0, rows)
        if len(xy) >= 3:
            outlines.append(xy.astype(np.float32))
    return outlines


def _note(source: Dataset, explanation: Explanation, algorithm: AlgorithmInfo) -> hd.pr.TextObject:
    text = f"{algorithm.name} {algorithm.method}: {explanation.class_name} score {probability_text(explanation.score)}"
    if explanation.positive is False:
        text += " (classifier negative)"
    if explanation.region.any():
        text += f", {probability_text(explanation.score_after_deletion)} without outlined region"
    elif explanation.positive is False:
        text += ", no region outlined"
    elif explanation.withheld:
        text += f", no region outlined: {explanation.withheld}"
    else:
        text += ", no salient region"
    if explanation.caveat:
        text += f"; caution: {explanation.caveat}"
    rows, cols = int(source.Rows), int(source.Columns)
    # Top band of the image, full width: viewers clip or wrap text to the box.
    box = (1.0, 1.0, float(cols - 1), float(max(2, min(rows - 1, rows // 12))))
    return hd.pr.TextObject(text_value=text[:1024], units="PIXEL", bounding_box=box)
