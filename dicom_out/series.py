"""Series-level identity of each result object type."""
from __future__ import annotations

from pydicom.dataset import Dataset

from .model import AlgorithmInfo, Explanation
from .uids import ObjectUIDs, derived_uid, object_uids

OBJECT_TYPES = ("fractional_seg", "binary_seg", "parametric_map", "sr", "gsps")

SERIES_DESCRIPTIONS = {
    "fractional_seg": "cfia saliency (FRACTIONAL SEG)",
    "binary_seg": "cfia salient region (BINARY SEG)",
    "parametric_map": "cfia saliency (Parametric Map)",
    "sr": "cfia explanation report (SR)",
    "gsps": "cfia salient region outline (GSPS)",
}
NEGATIVE_CALL = ", classifier negative"  # so a series list says so before anything is displayed
# Fixed numbers, one per type, so the result series sort together after the source's.
SERIES_NUMBERS = {"fractional_seg": 9101, "binary_seg": 9102, "parametric_map": 9103, "sr": 9104, "gsps": 9105}


def series_description(object_type: str, explanation: Explanation) -> str:
    """The type's description, marked when the classifier called the image negative: a map of
    a negative call peaks at 1 like any other and must not be read as a finding."""
    return SERIES_DESCRIPTIONS[object_type] + (NEGATIVE_CALL if explanation.positive is False else "")


def uids_for(source: Dataset, object_type: str, algorithm: AlgorithmInfo) -> ObjectUIDs:
    return object_uids(str(source.SOPInstanceUID), object_type, algorithm.uid_key)


def instance_number(source: Dataset) -> int:
    """The source's instance number, so results of several views sort like the views."""
    try:
        return max(1, int(source.get("InstanceNumber") or 1))
    except (TypeError, ValueError):
        return 1


def add_series_laterality(result: Dataset, source: Dataset) -> None:
    """Laterality is Type 2C in General Series for a paired body part (the breast);
    result objects have no ImageLaterality to stand in for it, so carry the source's.
    Laterality allows R and L only: a source's B (both) or U (unpaired) leaves it empty."""
    values = (str(source.get(key, "") or "").strip().upper() for key in ("ImageLaterality", "Laterality"))
    laterality = next((v for v in values if v), "")  # an empty ImageLaterality (Type 1 yet seen) is skipped
    result.Laterality = laterality if laterality in ("R", "L") else ""


def stable_dimension_organization(result: Dataset, source: Dataset, object_type: str, algorithm: AlgorithmInfo) -> None:
    """highdicom draws a random DimensionOrganizationUID per build, so a rebuilt object kept
    its SOP Instance UID but changed its content: tie it to the same key as the object's UIDs."""
    uid = derived_uid(str(source.SOPInstanceUID), algorithm.uid_key, f"{object_type} dimension organization")
    for item in (*result.get("DimensionOrganizationSequence", []), *result.get("DimensionIndexSequence", [])):
        item.DimensionOrganizationUID = uid
