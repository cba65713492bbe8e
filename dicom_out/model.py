"""What dicom_out is given: the algorithm's identity and one image's explanation.

Both are plain, frozen values checked on the way in, so a builder never has to
second-guess its inputs; every error quotes the bad value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional
from importlib import metadata

import numpy as np

METHODS = ("cf", "blur", "gradcam", "occlusion", "ig")
LO_MAX = 64  # DICOM Long String: names and versions end up in LO attributes
WITHHELD_MAX = 200  # Explanation.withheld and .caveat go into the GSPS note


def _package_version() -> str:
    # Read from the installed distribution: dicom_out must not import cfia/.
    try:
        return metadata.version("cfia")
    except metadata.PackageNotFoundError:
        return "0.0.0"


@dataclass(frozen=True, kw_only=True)
class AlgorithmInfo:
    """Who made the explanation: written into every object's provenance."""

    name: str = "cfia"
    version: str = _package_version()
    model_name: str
    model_version: str  # e.g. a sha256 prefix of the weights; part of every UID
    method: str         # one of METHODS; part of every UID
    manufacturer: str = "cfia"
    settings: str = ""  # e.g. a digest of the inpainter and explainer settings; part of every UID

    @property
    def uid_key(self) -> tuple[str, str, str]:
        """What makes two explanations of one image different objects, not one resent."""
        return self.model_version, self.method, self.settings

    def check(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"algorithm method {self.method!r} is not allowed; allowed: {', '.join(METHODS)}")
        if not isinstance(self.settings, str) or len(self.settings) > LO_MAX or "\\" in self.settings:
            raise ValueError(f"algorithm settings {self.settings!r} is not valid; allowed: 0-{LO_MAX} characters, "
                             "no backslash")
        for field in ("name", "version", "model_name", "model_version", "manufacturer"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value.strip() or len(value) > LO_MAX or "\\" in value:
                raise ValueError(
                    f"algorithm {field} {value!r} is not valid; allowed: 1-{LO_MAX} characters, no backslash"
                )


@dataclass(frozen=True, eq=False)
class Explanation:
    """One image's explanation, in the source image's pixel grid."""

    saliency: np.ndarray   # float in [0, 1], rows x columns
    region: np.ndarray     # bool, rows x columns (may be all False)
    score: float           # classifier probability for the explained class
    score_after_deletion: float
    class_name: str = "lesion"
    positive: Optional[bool] = None  # the classifier's call at its threshold; None: not given
    withheld: str = ""  # why no region is shown though the method drew one (region then empty)
    caveat: str = ""    # why the call itself is less to be trusted (e.g. an implant in view); in the GSPS note

    def check(self, rows: int, columns: int) -> None:
        for name in ("saliency", "region"):
            array = getattr(self, name)
            shape = getattr(array, "shape", None)
            if shape != (rows, columns):
                raise ValueError(f"{name} shape {shape!r} does not match the source image's {(rows, columns)!r}")
        if self.saliency.dtype.kind != "f":
            raise ValueError(f"saliency dtype {self.saliency.dtype} is not allowed; expected a float array")
        if not np.isfinite(self.saliency).all():
            raise ValueError("saliency contains NaN or infinite values")
        lo, hi = float(self.saliency.min()), float(self.saliency.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"saliency values range from {lo!r} to {hi!r}; allowed: 0 to 1")
        if self.region.dtype != np.bool_:
            raise ValueError(f"region dtype {self.region.dtype} is not allowed; expected bool")
        for name in ("score", "score_after_deletion"):
            value = getattr(self, name)
            if not isinstance(value, (int, float, np.floating)) or not math.isfinite(value) or not 0 <= value <= 1:
                raise ValueError(f"{name} {value!r} is out of range; allowed: 0 to 1")
        if self.positive not in (None, True, False):
            raise ValueError(f"positive {self.positive!r} is not allowed; allowed: True, False or None")
        for name in ("withheld", "caveat"):  # both go into the GSPS note
            value = getattr(self, name)
            if not isinstance(value, str) or len(value) > WITHHELD_MAX:
                raise ValueError(f"{name} {value!r} is not valid; allowed: text of at most {WITHHELD_MAX} characters")
        if self.withheld and self.region.any():
            raise ValueError("withheld is given with a region: a withheld region must be empty")
        if not isinstance(self.class_name, str) or not self.class_name.strip() or len(self.class_name) > LO_MAX:
            raise ValueError(f"class_name {self.class_name!r} is not valid; allowed: 1-{LO_MAX} characters")


CALL_THRESHOLD = 0.5  # a probability at or above it is a positive call


def probability_text(p: float) -> str:
    """p with the digits that tell it from 0 or 1 and from the call's threshold: a sure call
    falling from 0.9997 to 0.9951 must not read "1.00, 1.00 after", nor 0.4996, a negative
    call, "0.50"; beyond 6 decimals it is said as a bound."""
    if not math.isfinite(p):  # a classifier gone wrong: say so rather than fail to draw
        return str(p)
    below = CALL_THRESHOLD - p
    if 0 < below < 0.005:  # two decimals would round it up to the threshold
        return f"{math.floor(p * 1e6) / 1e6:.{min(6, 1 - math.floor(math.log10(below)))}f}"
    near = min(p, 1.0 - p)
    if near >= 0.005:
        return f"{p:.2f}"
    if near < 1e-6:
        return "> 0.999999" if p > 0.5 else "< 0.000001"
    return f"{p:.{min(6, 1 - math.floor(math.log10(near)))}f}"
