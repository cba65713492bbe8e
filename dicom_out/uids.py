"""Deterministic UIDs: the same source, object type and model version give the same
series and instance UIDs, so a resend replaces an object instead of duplicating it,
and a new model version gives new objects instead of silently overwriting old ones.
"""
from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import generate_uid

ROOT = "cfia"  # namespace of every entropy source, so cfia never collides with others


@dataclass(frozen=True)
class ObjectUIDs:
    series: str
    instance: str


def object_uids(source_sop_instance_uid: str, object_type: str, model_version: str) -> ObjectUIDs:
    """Series and instance UID of one result object of one source image."""
    key = [ROOT, source_sop_instance_uid, object_type, model_version]
    return ObjectUIDs(
        series=generate_uid(entropy_srcs=key + ["series"]),
        instance=generate_uid(entropy_srcs=key + ["instance"]),
    )


def derived_uid(source_sop_instance_uid: str, model_version: str, purpose: str) -> str:
    """Any other UID tied to one source image and model (tracking, nominal frame)."""
    return generate_uid(entropy_srcs=[ROOT, source_sop_instance_uid, model_version, purpose])


def device_uid(manufacturer: str, model_name: str, model_version: str) -> str:
    """The algorithm as a device (IHE AIR Device UID): changes with the model version."""
    return generate_uid(entropy_srcs=[ROOT, "device", manufacturer, model_name, model_version])
