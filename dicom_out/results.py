"""build_results: one source mammogram + its explanation -> the enabled DICOM objects.

No I/O: returns datasets; sending them is the sender's job. Inputs are checked once,
here, so every builder gets a valid mammogram and explanation.
"""
from __future__ import annotations

from typing import Callable, Iterable

from pydicom.dataset import Dataset

from .geometry import check_source
from .gsps import build_gsps
from .model import AlgorithmInfo, Explanation
from .pm import build_parametric_map
from .seg import build_binary_seg, build_fractional_seg
from .series import OBJECT_TYPES
from .sr import build_sr

_BUILDERS: dict[str, Callable[[Dataset, Explanation, AlgorithmInfo], Dataset]] = {
    "fractional_seg": build_fractional_seg,
    "binary_seg": build_binary_seg,
    "parametric_map": build_parametric_map,
    "gsps": build_gsps,
}


def build_results(
    source: Dataset,
    explanation: Explanation,
    algorithm: AlgorithmInfo,
    enabled: Iterable[str] = OBJECT_TYPES,
) -> dict[str, Dataset]:
    """The enabled result objects, keyed by object type, in OBJECT_TYPES order.

    The SR refers to the BINARY SEG. When "sr" is enabled without "binary_seg", the
    SEG is still built (its UIDs are deterministic) so the SR's reference and evidence
    are exactly those of the SEG a later run with "binary_seg" enabled would send, but
    it is not returned: the SR then points to an instance the destination lacks.
    """
    wanted = _check_enabled(enabled)
    check_source(source)
    source = with_type2_present(source)
    algorithm.check()
    explanation.check(int(source.Rows), int(source.Columns))

    built: dict[str, Dataset] = {}
    for object_type in OBJECT_TYPES:
        if object_type == "sr" and "sr" in wanted:
            seg = built.get("binary_seg") or build_binary_seg(source, explanation, algorithm)
            built["sr"] = build_sr(source, explanation, algorithm, seg)
        elif object_type in wanted:
            built[object_type] = _BUILDERS[object_type](source, explanation, algorithm)
    return built


# Type 2 attributes of the Patient and General Study modules that highdicom 0.28's SEG,
# PM, SR and GSPS constructors read from the source as `source.PatientBirthDate` etc.:
# an AttributeError when a de-identified export has deleted them instead of emptying
# them, which the standard (Type 2: present, may be empty) does not allow but sites do.
TYPE2_FROM_SOURCE = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                     "ReferringPhysicianName", "AccessionNumber", "StudyID")


def with_type2_present(source: Dataset) -> Dataset:
    """`source`, or a copy of its header with the missing TYPE2_FROM_SOURCE attributes
    present and empty, as the results will carry them. The source itself is not changed."""
    missing = [keyword for keyword in TYPE2_FROM_SOURCE if keyword not in source]
    if not missing:
        return source
    completed = Dataset({tag: source[tag] for tag in source.keys()})  # new element dict, same elements
    if hasattr(source, "file_meta"):
        completed.file_meta = source.file_meta
    for keyword in missing:
        setattr(completed, keyword, None)
    return completed


def _check_enabled(enabled: Iterable[str]) -> set[str]:
    if isinstance(enabled, str):  # a lone "sr" would otherwise iterate as "s", "r"
        enabled = [enabled]
    wanted = set(enabled)
    unknown = sorted(wanted - set(OBJECT_TYPES))
    if unknown:
        raise ValueError(f"object types {unknown!r} are not known; allowed: {', '.join(OBJECT_TYPES)}")
    return wanted
