"""build_results: one source mammogram + its explanation -> the enabled DICOM objects.

No I/O: returns datasets; sending them is the sender's job. Inputs are checked once,
here, so every builder gets a valid mammogram and explanation.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable

from pydicom.dataset import Dataset

from .geometry import check_source
from .source_header import result_header
from .gsps import build_gsps
from .model import AlgorithmInfo, Explanation
from .pm import build_parametric_map
from .seg import build_binary_seg, build_fractional_seg
from .series import OBJECT_TYPES
from .sr import build_sr
from .times import in_source_time_zone

log = logging.getLogger("cfia.dicom_out")

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
    source, mended = result_header(source, _texts(algorithm, explanation))
    if mended:
        log.info("source header values the result objects cannot carry as they are were mended or emptied",
                 extra={"sop_instance_uid": str(source.SOPInstanceUID), "attributes": ",".join(mended)})
    algorithm.check()
    explanation.check(int(source.Rows), int(source.Columns))

    built: dict[str, Dataset] = {}
    for object_type in OBJECT_TYPES:
        if object_type == "sr" and "sr" in wanted:
            seg = built.get("binary_seg") or build_binary_seg(source, explanation, algorithm)
            built["sr"] = build_sr(source, explanation, algorithm, seg)
        elif object_type in wanted:
            built[object_type] = _BUILDERS[object_type](source, explanation, algorithm)
    for ds in built.values():
        in_source_time_zone(ds, source)
    return built


def _texts(algorithm: AlgorithmInfo, explanation: Explanation) -> list[str]:
    """What the objects write besides the source's values, for its character set."""
    fields = ("name", "version", "model_name", "model_version", "manufacturer", "settings")
    return [str(getattr(algorithm, f)) for f in fields] + [str(explanation.class_name)]


def _check_enabled(enabled: Iterable[str]) -> set[str]:
    if isinstance(enabled, str):  # a lone "sr" would otherwise iterate as "s", "r"
        enabled = [enabled]
    wanted = set(enabled)
    unknown = sorted(wanted - set(OBJECT_TYPES))
    if unknown:
        raise ValueError(f"object types {unknown!r} are not known; allowed: {', '.join(OBJECT_TYPES)}")
    return wanted
