"""Coded concepts used in cfia's result objects.

Standard codes where DICOM has them (DCM CID 217 "Visual Explanation" has Saliency and
Grad-CAM); the rest in cfia's private coding scheme 99CFIA, declared in every object
that uses it through the Coding Scheme Identification Sequence.
"""
from __future__ import annotations

import highdicom as hd
from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

SCHEME = "99CFIA"
SCHEME_ITEM_ARGS = dict(designator=SCHEME, name="cfia local codes", responsible_organization="cfia")


def local(value: str, meaning: str) -> CodedConcept:
    return CodedConcept(value, SCHEME, meaning)


def coding_schemes() -> list[hd.coding_schemes.CodingSchemeIdentificationItem]:
    return [hd.coding_schemes.CodingSchemeIdentificationItem(**SCHEME_ITEM_ARGS)]


SALIENCY = codes.DCM.Saliency                          # DCM 130404, CID 217
SALIENT_REGION = local("SALREGION", "Salient region")
REGION_CATEGORY = codes.SCT.SpatialAndRelationalConcept  # CID 7150: a region, not anatomy
ARTIFICIAL_INTELLIGENCE = codes.DCM.ArtificialIntelligence
CLASSIFIER_SCORE = local("SCORE", "Classifier score for explained class")
SCORE_AFTER_DELETION = local("SCOREDEL", "Classifier score after deletion")
EXPLANATION_METHOD = local("XMETHOD", "Explanation method")
CLASSIFIER_CALL = local("XCALL", "Classifier call for explained class")
CALL_VALUES = {True: CodedConcept.from_code(codes.SCT.Present), False: CodedConcept.from_code(codes.SCT.Absent)}
NO_UNITS = codes.UCUM.NoUnits
MAMMOGRAPHY = codes.SCT.Mammography
DEVICE = codes.DCM.Device
# IHE AI Results: the algorithm is contributing equipment with purpose of reference
# DCM 109102 "Processing Equipment" (CID 7005); DCM 109103 is "Modifying Equipment".
PROCESSING_EQUIPMENT = codes.DCM.ProcessingEquipment

METHOD_CODES = {
    "cf": local("CFIA", "Counterfactual impact analysis"),
    "blur": local("BLURPERT", "Blur perturbation"),
    "gradcam": CodedConcept.from_code(codes.DCM.GradientWeightedClassActivation),  # DCM 130403
    "occlusion": local("OCCLUSION", "Occlusion sensitivity"),
    "ig": local("INTGRAD", "Integrated gradients"),
}

FINDING_CODES = {
    "lesion": codes.SCT.Lesion,
    "mass": codes.SCT.Mass,
}


def finding(class_name: str) -> CodedConcept:
    """The explained class as a finding: SNOMED CT where known, else a local code."""
    code = FINDING_CODES.get(class_name.strip().lower())
    if code is not None:
        return CodedConcept.from_code(code)
    return local(class_name.strip().upper()[:16], class_name.strip())
