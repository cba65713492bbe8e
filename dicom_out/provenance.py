"""Provenance carried by every result object: who (algorithm, model) made it, from what.

- AlgorithmIdentificationSequence (SEG segments): algorithm name, version, family AI,
  and parameters naming the model, its version and the explanation method.
- ContributingEquipmentSequence: the IHE AI Results (AIR) item for the algorithm,
  with a Device UID that changes with the model version.
- The equipment module of the object itself (Manufacturer, ManufacturerModelName,
  SoftwareVersions, DeviceSerialNumber).
"""
from __future__ import annotations

import highdicom as hd

from . import codes
from .model import AlgorithmInfo
from .uids import device_uid


def software_versions(algorithm: AlgorithmInfo) -> list[str]:
    return [f"{algorithm.name} {algorithm.version}"[:64], f"model {algorithm.model_version}"[:64]]


def parameters(algorithm: AlgorithmInfo) -> dict[str, str]:
    found = {"model": algorithm.model_name, "model_version": algorithm.model_version, "method": algorithm.method}
    return {**found, "settings": algorithm.settings} if algorithm.settings else found


def algorithm_identification(algorithm: AlgorithmInfo) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name=algorithm.name,
        family=codes.ARTIFICIAL_INTELLIGENCE,
        version=algorithm.version,
        source=algorithm.manufacturer,
        parameters=parameters(algorithm),
    )


def sr_algorithm_identification(algorithm: AlgorithmInfo) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=algorithm.name,
        version=algorithm.version,
        parameters=[f"{k}={v}" for k, v in parameters(algorithm).items()],
    )


def the_device_uid(algorithm: AlgorithmInfo) -> str:
    return device_uid(algorithm.manufacturer, algorithm.model_name, algorithm.model_version)


def contributing_equipment(algorithm: AlgorithmInfo) -> hd.ContributingEquipment:
    """The IHE AIR contributing-equipment item for the algorithm."""
    item = hd.ContributingEquipment(
        manufacturer=algorithm.manufacturer,
        purpose_of_reference=codes.PROCESSING_EQUIPMENT,
        manufacturer_model_name=algorithm.model_name,
        software_versions=software_versions(algorithm),
        contribution_description=f"{algorithm.name} explanation ({algorithm.method}) of the classifier's decision",
    )
    # Device UID (0018,1002) belongs to the item (IHE AIR) but highdicom takes no argument for it.
    item.DeviceUID = the_device_uid(algorithm)
    return item


def equipment_args(algorithm: AlgorithmInfo) -> dict:
    """Equipment module of the result object itself: the algorithm."""
    return dict(
        manufacturer=algorithm.manufacturer,
        manufacturer_model_name=algorithm.model_name,
        software_versions=software_versions(algorithm),
        device_serial_number=algorithm.model_version[:64],
    )
