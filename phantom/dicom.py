"""Write a synthetic mammogram as a Digital Mammography X-Ray Image (MG) DICOM file.

Carries what a real full-field digital mammography unit sends: patient, study and
series identity, equipment, DX/mammography image, detector, positioning, dose and
acquisition-context attributes, ImagerPixelSpacing, and VOI windows for display.
UIDs are derived from the seed so the same seed writes the same file.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from .mammogram import Mammogram

MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
MG_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
IMPLEMENTATION_UID = "1.2.826.0.1.3680043.10.1504.1"  # cfia implementation class
VERSION = "cfia-phantom 0.2"  # 0.2: ImagerPixelSpacing magnified, as the detector sees the breast
# AccessionNumber is "A" + the patient index (at least 7 digits); SH allows 16 characters.
MAX_PATIENT_INDEX = 10 ** 15 - 1
MAGNIFICATION = 660 / 640  # source-detector over source-patient distance: 1.03125

# CID 4014 view codes (SNOMED CT) and the DICOM PatientOrientation of each view as
# displayed: chest wall at the left for a left breast, at the right for a right one.
VIEW_CODES = {"CC": ("399162004", "cranio-caudal"), "MLO": ("399368009", "medio-lateral oblique")}
ORIENTATION = {("L", "CC"): ["A", "R"], ("R", "CC"): ["P", "L"], ("L", "MLO"): ["A", "FR"], ("R", "MLO"): ["P", "FL"]}


def _code(value: str, meaning: str, scheme: str = "SCT") -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def to_dataset(
    mg: Mammogram,
    seed_key: str,
    patient_index: int,
    bits_stored: int = 12,
    for_processing: bool = False,
    photometric: str = "MONOCHROME2",
    frame_of_reference: bool = False,
    pixel_spacing: bool = False,
    patient_id: str | None = None,
) -> Dataset:
    """Build the MG dataset; `seed_key` makes every UID deterministic.

    patient_index (0 to MAX_PATIENT_INDEX) numbers the synthetic patient: name, dates,
    AccessionNumber and, unless `patient_id` is given, PatientID (PH + the index)."""
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric must be MONOCHROME1 or MONOCHROME2, got {photometric!r}")
    if not 0 <= patient_index <= MAX_PATIENT_INDEX:  # AccessionNumber (SH) holds 16 characters
        raise ValueError(f"patient_index {patient_index} is out of range; allowed: 0 to {MAX_PATIENT_INDEX}")
    sop_class = MG_FOR_PROCESSING if for_processing else MG_FOR_PRESENTATION
    uid = lambda part: generate_uid(entropy_srcs=[seed_key, part])  # noqa: E731
    when = dt.datetime(2026, 1, 5, 9, 0) + dt.timedelta(days=patient_index % 300, minutes=patient_index % 97)

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = uid("sop")
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = IMPLEMENTATION_UID
    ds.file_meta.ImplementationVersionName = "CFIA_01"

    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    values = mg.pixels
    if photometric == "MONOCHROME1":  # same appearance: invert the stored values
        values = ((1 << bits_stored) - 1 - values.astype(np.int32)).astype(np.uint16)
    _patient_and_study(ds, uid, patient_index, when)
    if patient_id is not None:
        ds.PatientID = patient_id
    _series_and_equipment(ds, uid, mg, for_processing)
    _image(ds, mg, values, bits_stored, for_processing, photometric, when)
    _acquisition(ds, mg, pixel_spacing)
    if frame_of_reference:
        ds.FrameOfReferenceUID = uid("frame")
        ds.PositionReferenceIndicator = ""
    ds.PixelData = values.astype("<u2").tobytes()
    return ds


def _patient_and_study(ds: Dataset, uid, index: int, when: dt.datetime) -> None:
    ds.PatientName = f"PHANTOM^{index:05d}"
    ds.PatientID = f"PH{index:06d}"
    ds.IssuerOfPatientID = "CFIA-PHANTOM"
    ds.PatientBirthDate = f"{1950 + index % 30}0101"
    ds.PatientSex = "F"
    ds.PatientAge = f"{2026 - (1950 + index % 30):03d}Y"
    ds.StudyInstanceUID = uid("study")
    ds.StudyDate = ds.ContentDate = ds.SeriesDate = ds.AcquisitionDate = when.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = ds.SeriesTime = ds.AcquisitionTime = when.strftime("%H%M%S")
    ds.AccessionNumber = f"A{index:07d}"
    ds.ReferringPhysicianName = ""
    ds.StudyID = f"{index % 100000}"
    ds.StudyDescription = "MAMMOGRAPHY SCREENING (SYNTHETIC)"


def _series_and_equipment(ds: Dataset, uid, mg: Mammogram, for_processing: bool) -> None:
    ds.Modality = "MG"
    ds.SeriesInstanceUID = uid("series")
    ds.SeriesNumber = 1
    ds.SeriesDescription = f"{mg.laterality} {mg.view}"
    ds.BodyPartExamined = "BREAST"
    ds.Manufacturer = "cfia"
    ds.ManufacturerModelName = "cfia synthetic mammography"
    ds.DeviceSerialNumber = "PHANTOM-0001"
    ds.SoftwareVersions = VERSION
    ds.StationName = "CFIA-PHANTOM"
    ds.InstitutionName = "Synthetic"
    ds.PresentationIntentType = "FOR PROCESSING" if for_processing else "FOR PRESENTATION"


def _image(ds: Dataset, mg: Mammogram, stored: np.ndarray, bits: int, for_processing: bool, photometric: str,
           when) -> None:
    """`stored`: the values as written to PixelData (inverted for MONOCHROME1), which the window applies to."""
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.InstanceNumber = 1
    ds.AcquisitionDateTime = when.strftime("%Y%m%d%H%M%S")
    ds.ImageLaterality = mg.laterality
    ds.PatientOrientation = ORIENTATION[(mg.laterality, mg.view)]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = mg.pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LIN" if for_processing else "LOG"
    # PS3.3 C.8.11.3: +1, lower values = less X-ray intensity. For Processing values are the
    # raw intensity, stored inverted for MONOCHROME1 (-1). For Presentation keeps +1 although
    # by the standard it looks reversed: verified with the viewer test, with -1 OHIF 3.13.2
    # behaves differently (tests/test_viewer_ohif.py VOI LUT case).
    ds.PixelIntensityRelationshipSign = (-1 if photometric == "MONOCHROME1" else 1) if for_processing else 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    ds.QualityControlImage = "NO"
    ds.RecognizableVisualFeatures = "NO"
    if for_processing:  # VOI windows may only be present in For Presentation images
        return
    # The VOI window applies to the stored values, before the Presentation LUT: for MONOCHROME1
    # these are the inverted ones, so the window is taken from them, not from mg.pixels.
    breast = stored[mg.breast] if mg.breast.any() else stored.ravel()
    lo, hi = np.percentile(breast, [1, 99])
    ds.WindowCenter = f"{(lo + hi) / 2:.1f}"
    ds.WindowWidth = f"{max(hi - lo, 1):.1f}"
    ds.VOILUTFunction = "LINEAR"


def _acquisition(ds: Dataset, mg: Mammogram, pixel_spacing: bool) -> None:
    # The phantom is drawn at spacing_mm in the breast, which the detector sees magnified.
    ds.ImagerPixelSpacing = [f"{mg.spacing_mm * MAGNIFICATION:.12g}"] * 2
    if pixel_spacing:  # corrected for that magnification, so it differs from ImagerPixelSpacing
        ds.PixelSpacing = [f"{mg.spacing_mm:.12g}"] * 2
        ds.PixelSpacingCalibrationType = "GEOMETRY"
        ds.PixelSpacingCalibrationDescription = "magnification-corrected (synthetic)"
    ds.DetectorType = "DIRECT"
    ds.DetectorConfiguration = "AREA"
    ds.DetectorID = "PHANTOM-DET"
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.PositionerPrimaryAngle = 0 if mg.view == "CC" else (45 if mg.laterality == "L" else -45)
    ds.ViewPosition = mg.view
    ds.DistanceSourceToDetector = "660"
    ds.DistanceSourceToPatient = "640"
    ds.EstimatedRadiographicMagnificationFactor = f"{MAGNIFICATION:g}"
    ds.BodyPartThickness = "50"
    ds.CompressionForce = "100"
    ds.KVP = "29"
    ds.ExposureInuAs = 80000
    ds.AnodeTargetMaterial = "TUNGSTEN"
    ds.FilterMaterial = "RHODIUM"
    ds.FilterThicknessMinimum = ds.FilterThicknessMaximum = "0.05"
    ds.Grid = "RECIPROCATING"
    ds.OrganExposed = "BREAST"
    ds.EntranceDoseInmGy = "5.0"
    ds.OrganDose = "1.2"
    ds.AnatomicRegionSequence = Sequence([_code("76752008", "Breast")])
    view_item = _code(*VIEW_CODES[mg.view])
    view_item.ViewModifierCodeSequence = Sequence()
    ds.ViewCodeSequence = Sequence([view_item])
    ds.AcquisitionContextSequence = Sequence()
    ds.BreastImplantPresent = "NO"
    ds.PartialView = "NO"
