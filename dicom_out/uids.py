"""Deterministic UIDs: the same source, object type and algorithm (model version, method,
settings) give the same series and instance UIDs, so a resend replaces an object instead
of duplicating it, and another model, method or setting gives new objects instead of
silently overwriting old ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from pydicom.uid import generate_uid

ROOT = "cfia"  # namespace of every entropy source, so cfia never collides with others


@dataclass(frozen=True)
class ObjectUIDs:
    series: str
    instance: str


def _uid(parts: Sequence[str]) -> str:
    """pydicom hashes the entropy sources joined with nothing between them, so 'ab' + 'c'
    and 'a' + 'bc' would give one UID: each part is length-prefixed."""
    return generate_uid(entropy_srcs=[f"{len(p)}:{p}" for p in (ROOT, *parts)])


def object_uids(source_sop_instance_uid: str, object_type: str, algorithm_key: Sequence[str]) -> ObjectUIDs:
    """Series and instance UID of one result object of one source image."""
    key = [source_sop_instance_uid, object_type, *algorithm_key]
    return ObjectUIDs(series=_uid(key + ["series"]), instance=_uid(key + ["instance"]))


def derived_uid(source_sop_instance_uid: str, algorithm_key: Sequence[str], purpose: str) -> str:
    """Any other UID tied to one source image and algorithm (tracking, nominal frame)."""
    return _uid([source_sop_instance_uid, *algorithm_key, purpose])


def device_uid(manufacturer: str, model_name: str, model_version: str) -> str:
    """The algorithm as a device (IHE AIR Device UID): changes with the model version."""
    return _uid(["device", manufacturer, model_name, model_version])
