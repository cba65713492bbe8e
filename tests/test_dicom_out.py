"""dicom_out builders: DICOM validity (dciodvfy), read-back, provenance, determinism."""
from __future__ import annotations

import dataclasses

import highdicom as hd
import numpy as np
import pydicom
import pytest

from conftest import dciodvfy_errors
from dicom_out import OBJECT_TYPES, SERIES_DESCRIPTIONS, AlgorithmInfo, Explanation, build_results
from dicom_out.gsps import region_outlines
from phantom.dicom import to_dataset
from phantom.generate import PhantomOptions, make_one

SIZE = (256, 208)
ALGORITHM = AlgorithmInfo(model_name="toy-cnn", model_version="sha256:0123abcd", method="cf")
# One flag changed at a time from the default (For Presentation, MONOCHROME2, no Frame
# of Reference, ImagerPixelSpacing only), plus everything changed at once.
VARIANTS = {
    "default": {},
    "for_processing": dict(for_processing=True),
    "monochrome1": dict(photometric="MONOCHROME1"),
    "frame_of_reference": dict(frame_of_reference=True),
    "pixel_spacing": dict(pixel_spacing=True),
    "all_flags": dict(for_processing=True, photometric="MONOCHROME1", frame_of_reference=True, pixel_spacing=True),
}


def make_source(**flags) -> pydicom.Dataset:
    mg = make_one(11, 0, PhantomOptions(size=SIZE, positive_fraction=1.0))
    return to_dataset(mg, "test-dicom-out", 42, **flags)


def make_explanation(region_empty: bool = False) -> Explanation:
    rows, cols = np.mgrid[: SIZE[0], : SIZE[1]]
    saliency = np.exp(-((rows - 120) ** 2 + (cols - 90) ** 2) / (2 * 15.0**2)).astype(np.float32)
    region = saliency > 0.5
    if region_empty:
        region = np.zeros(SIZE, bool)
    return Explanation(saliency=saliency, region=region, score=0.87, score_after_deletion=0.21)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """variant -> (source, explanation, results, files): built and written once."""
    out = {}
    for name, flags in VARIANTS.items():
        source, explanation = make_source(**flags), make_explanation()
        results = build_results(source, explanation, ALGORITHM)
        folder = tmp_path_factory.mktemp(name)
        files = {}
        for object_type, ds in results.items():
            files[object_type] = folder / f"{object_type}.dcm"
            ds.save_as(files[object_type], enforce_file_format=True)
        out[name] = (source, explanation, results, files)
    return out


@pytest.mark.parametrize("object_type", OBJECT_TYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_dciodvfy_reports_no_errors(built, variant, object_type):
    assert dciodvfy_errors(built[variant][3][object_type]) == []


def test_empty_region_gives_valid_objects(tmp_path):
    source, explanation = make_source(), make_explanation(region_empty=True)
    results = build_results(source, explanation, ALGORITHM)
    for object_type, ds in results.items():
        path = tmp_path / f"{object_type}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], object_type
    seg = hd.seg.segread(tmp_path / "binary_seg.dcm")
    assert int(seg.NumberOfFrames) == 1
    assert not _segment_pixels(seg, source).any()
    annotation = results["gsps"].GraphicAnnotationSequence[0]
    assert "GraphicObjectSequence" not in annotation
    assert "no salient region" in annotation.TextObjectSequence[0].UnformattedTextValue


def test_a_negative_call_says_so_and_outlines_nothing(tmp_path):
    """A negative call's objects read like a finding: an outlined region, and maps whose series
    names did not say the classifier had called the image negative."""
    from dataclasses import replace

    source = make_source()
    empty = np.zeros(SIZE, bool)
    explanation = replace(make_explanation(), region=empty, score=0.08, score_after_deletion=0.08, positive=False,
                          withheld="the classifier's call is negative")
    results = build_results(source, explanation, ALGORITHM)
    for object_type, ds in results.items():
        assert ds.SeriesDescription.endswith(", classifier negative"), object_type
        path = tmp_path / f"{object_type}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], object_type
    note = results["gsps"].GraphicAnnotationSequence[0].TextObjectSequence[0].UnformattedTextValue
    assert "classifier negative" in note and "no region outlined" in note
    assert "GraphicObjectSequence" not in results["gsps"].GraphicAnnotationSequence[0]
    positive = build_results(source, make_explanation(), ALGORITHM, enabled=["gsps"])["gsps"]
    assert "negative" not in positive.SeriesDescription
    with pytest.raises(ValueError, match="withheld region must be empty"):
        build_results(source, replace(make_explanation(), withheld="why"), ALGORITHM)


def test_a_withheld_region_of_a_positive_call_is_explained_in_the_note():
    from dataclasses import replace

    explanation = replace(make_explanation(region_empty=True), withheld="replacing the region did not lower the score",
                          positive=True)
    gsps = build_results(make_source(), explanation, ALGORITHM, enabled=["gsps"])["gsps"]
    note = gsps.GraphicAnnotationSequence[0].TextObjectSequence[0].UnformattedTextValue
    assert note.endswith("no region outlined: replacing the region did not lower the score")


def test_the_note_gives_the_score_then_the_score_without_the_region():
    explanation = _replace(make_explanation(), score=0.9, score_after_deletion=0.2)
    gsps = build_results(make_source(), explanation, ALGORITHM, enabled=["gsps"])["gsps"]
    note = gsps.GraphicAnnotationSequence[0].TextObjectSequence[0].UnformattedTextValue
    assert note == f"{ALGORITHM.name} {ALGORITHM.method}: lesion score 0.90, 0.20 without outlined region"
    # Two decimals read 0.4996, a call the region's deletion took away, as "0.50", and 0.9996 as "1.00".
    explanation = _replace(make_explanation(), score=0.9996, score_after_deletion=0.4996)
    gsps = build_results(make_source(), explanation, ALGORITHM, enabled=["gsps"])["gsps"]
    note = gsps.GraphicAnnotationSequence[0].TextObjectSequence[0].UnformattedTextValue
    assert note.endswith("lesion score 0.99960, 0.49960 without outlined region")


@pytest.mark.parametrize("photometric, shape", [("MONOCHROME1", "INVERSE"), ("MONOCHROME2", "IDENTITY")])
def test_gsps_keeps_the_polarity_of_a_source_without_a_presentation_lut_shape(photometric, shape):
    """A GSPS's Presentation LUT overrides MONOCHROME1: IDENTITY would show it inverted."""
    source = make_source(photometric=photometric)
    del source.PresentationLUTShape  # the phantom writes one; many modalities do not
    gsps = build_results(source, make_explanation(), ALGORITHM, enabled=["gsps"])["gsps"]
    assert gsps.PresentationLUTShape == shape


def test_every_object_names_the_model_in_its_equipment(built):
    """The SR had only the Manufacturer: a study browser's model column was empty for it."""
    for object_type, ds in built["default"][2].items():
        assert ds.ManufacturerModelName == ALGORITHM.model_name, object_type
        assert ds.DeviceSerialNumber == ALGORITHM.model_version[:64], object_type
        assert list(ds.SoftwareVersions)[1] == f"model {ALGORITHM.model_version}", object_type


# What de-identifying exports strip (deleted, not emptied), one at a time and all at once.
STRIPPED = {"PatientBirthDate": ["PatientBirthDate"], "StudyDate": ["StudyDate"],
            "PatientOrientation": ["PatientOrientation"],
            "imager_spacing": ["ImagerPixelSpacing"],  # PixelSpacing only (added below)
            "all": ["PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "ReferringPhysicianName", "AccessionNumber", "StudyID", "PatientOrientation"]}


@pytest.mark.parametrize("stripped", STRIPPED)
def test_source_without_type2_attributes_still_gives_valid_objects(tmp_path, stripped):
    source = make_source(pixel_spacing=True)
    for keyword in STRIPPED[stripped]:
        delattr(source, keyword)
    before = set(source.keys())
    results = build_results(source, make_explanation(), ALGORITHM)
    assert set(source.keys()) == before  # the source itself is not completed in place
    assert sorted(results) == sorted(OBJECT_TYPES)
    for object_type, ds in results.items():
        path = tmp_path / f"{object_type}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], object_type
        for keyword in set(STRIPPED[stripped]) - {"PatientOrientation", "ImagerPixelSpacing"}:
            assert keyword in ds and not ds[keyword].value, (object_type, keyword)  # present, empty
    library_entries = [item for item in results["sr"].ContentSequence if item.ConceptNameCodeSequence[0].CodeValue
                       == "111028"]  # Image Library
    has_entry = bool(library_entries and library_entries[0].get("ContentSequence"))
    assert has_entry == (stripped not in ("PatientOrientation", "imager_spacing", "all"))


@pytest.mark.parametrize("imager", ["0.1", "0\\0"])
def test_a_malformed_imager_spacing_beside_a_pixel_spacing_loses_no_object(tmp_path, imager):
    """The map is placed by PixelSpacing and the bad ImagerPixelSpacing skipped, as the node
    reads it; the SR's image library left it in: one value failed in highdicom (every object
    lost), 0\\0 was written as the image's spacing. The library entry is left out now."""
    source = make_source(pixel_spacing=True)
    source.ImagerPixelSpacing = imager
    results = build_results(source, make_explanation(), ALGORITHM)
    assert sorted(results) == sorted(OBJECT_TYPES)
    path = tmp_path / "sr.dcm"
    results["sr"].save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    library = [item for item in results["sr"].ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "111028"]
    assert not (library and library[0].get("ContentSequence"))


# Header values as sites send them that highdicom refuses -> what the results carry.
DIRTY = {
    "PatientBirthDate": ("1950-01-01", "19500101"), "StudyDate": ("2026.12.01", "20261201"),
    "StudyTime": ("09:00:00", "090000"), "PatientSex": ("f", "F"),
    "PatientName": (["A^B", "C^D"], "A^B"),
}
EMPTIED = {"PatientBirthDate": "19500000", "PatientSex": "unknown", "StudyTime": "nine o'clock"}


@pytest.mark.parametrize("keyword", sorted(set(DIRTY) | set(EMPTIED)))
def test_header_values_sites_send_are_mended_not_fatal(tmp_path, keyword):
    for value, expected in ([DIRTY[keyword]] if keyword in DIRTY else []) + (
            [(EMPTIED[keyword], "")] if keyword in EMPTIED else []):
        source = make_source()
        setattr(source, keyword, value)
        results = build_results(source, make_explanation(), ALGORITHM)
        assert source[keyword].value == value  # the source is not changed
        for object_type, ds in results.items():
            path = tmp_path / f"{object_type}.dcm"
            ds.save_as(path, enforce_file_format=True)
            assert dciodvfy_errors(path) == [], (object_type, value)
            assert str(ds[keyword].value or "") == expected, (object_type, value)


@pytest.mark.parametrize("charset, name", [
    (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう"),  # as Japanese sites send it
    (["", "ISO 2022 IR 149"], "Hong^Gildong=洪^吉洞=홍^길동"),         # Korean
    ("ISO_IR 100", "Müller^Jürgen"),
    ("ISO 2022 IR 100", "Müller^Jürgen"),  # one code-extension set alone
    (["ISO_IR 100", "ISO 2022 IR 144"], "Müller^Jürgen"),  # several values, not all ISO 2022: seen in the wild
    (["ISO_IR 192", "ISO_IR 192"], "Müller^Jürgen"),
    (["ISO 2022 IR 6", "ISO 2022 IR 58"], "Zhang^XiaoDong"),  # GB2312: not a code extension to highdicom
])
def test_names_in_every_standard_character_set_reach_the_results(tmp_path, charset, name):
    """highdicom 0.28 refuses all but ISO_IR 100 here; the results declare UTF-8 then."""
    from io import BytesIO

    source = make_source()
    source.SpecificCharacterSet = charset
    source.PatientName = name
    issuer = name.split("=")[1] if "=" in name else name.replace("^", " ")  # text in a copied sequence too
    other = pydicom.Dataset()
    other.PatientID, other.IssuerOfPatientID, other.TypeOfPatientID = "X1", issuer, "TEXT"
    source.OtherPatientIDsSequence = [other]
    buffer = BytesIO()
    source.save_as(buffer, enforce_file_format=True)
    source = pydicom.dcmread(BytesIO(buffer.getvalue()))  # the name as the site's bytes
    copied = 0
    for object_type, ds in build_results(source, make_explanation(), ALGORITHM).items():
        path = tmp_path / f"{object_type}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], (object_type, charset)
        back = pydicom.dcmread(path)
        assert str(back.PatientName) == name, (object_type, charset)
        if "OtherPatientIDsSequence" in back:  # under UTF-8 it read back as escape sequences
            assert back.OtherPatientIDsSequence[0].IssuerOfPatientID == issuer, (object_type, charset)
            copied += 1
    assert copied
    assert str(source.OtherPatientIDsSequence[0].IssuerOfPatientID) == issuer  # the source is left as it was


@pytest.mark.parametrize("laterality, carried", [("B", ""), ("U", ""), ("R", "R"), ("", "L")])
def test_only_r_or_l_laterality_is_carried_into_the_result_series(tmp_path, laterality, carried):
    source = make_source()
    source.ImageLaterality = laterality
    source.Laterality = "L"  # the series' own: read only where the image's is empty, as the reader does
    results = build_results(source, make_explanation(), ALGORITHM)
    for object_type, ds in results.items():
        path = tmp_path / f"{object_type}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], (object_type, laterality)
    series_laterality = {t: ds.Laterality for t, ds in results.items() if "Laterality" in ds}
    assert set(series_laterality) == {"parametric_map", "gsps"}
    assert set(series_laterality.values()) == {carried}


@pytest.mark.parametrize("encoding", ["OW", "US"])  # US: LUTData as numbers, as some sources write it
def test_gsps_keeps_a_12_bit_voi_lut_as_the_source_displays_it(tmp_path, encoding):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    source = make_source()
    for keyword in ("WindowCenter", "WindowWidth", "VOILUTFunction"):
        if keyword in source:
            delattr(source, keyword)
    lut = np.round(4095 * np.sqrt(np.arange(4096) / 4095)).astype("<u2")
    item = Dataset()
    item.LUTDescriptor, item.LUTExplanation = [4096, 0, 12], "restore"
    item.add_new(0x00283006, encoding, lut.tobytes() if encoding == "OW" else [int(v) for v in lut])
    source.VOILUTSequence = Sequence([item])
    gsps = build_results(source, make_explanation(), ALGORITHM, ["gsps"])["gsps"]
    assert source.VOILUTSequence[0] is item and list(item.LUTDescriptor) == [4096, 0, 12]  # the source as it was
    path = tmp_path / "gsps.dcm"
    gsps.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    copied = gsps.SoftcopyVOILUTSequence[0].VOILUTSequence[0]
    assert list(copied.LUTDescriptor) == [4096, 0, 16]  # a Softcopy VOI LUT has 8 or 16 bits
    shown = np.frombuffer(bytes(copied.LUTData), "<u2") / 0xFFFF
    assert np.abs(shown - lut / 4095).max() < 1e-4  # the same display as the source's 12-bit LUT


def _add_a_16_bit_voi_lut(source):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.add_new(0x00283006, "OW", np.linspace(0, 65535, 4096).astype("<u2").tobytes())
    source.VOILUTSequence = Sequence([item])
    return source


def test_empty_windows_are_left_out_with_or_without_a_voi_lut(tmp_path):
    """Window Center and Width present but empty (Type 1C sent as Type 2): highdicom stopped
    every result object (TypeError); the GSPS keeps the LUT when there is one."""
    from pydicom.dataset import Dataset

    for with_lut in (False, True):
        source = make_source()
        source.WindowCenter, source.WindowWidth = None, None
        if with_lut:
            _add_a_16_bit_voi_lut(source)
        results = build_results(source, make_explanation(), ALGORITHM)
        assert set(results) == set(OBJECT_TYPES) and "WindowCenter" in source
        voi = results["gsps"].get("SoftcopyVOILUTSequence", [Dataset()])[0]
        assert "WindowCenter" not in voi and ("VOILUTSequence" in voi) == with_lut
        path = tmp_path / "gsps.dcm"
        results["gsps"].save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], with_lut


@pytest.mark.parametrize("centre,width", [("2048", "0"), ("2048", "-1"), ("2048\\1024", "4096"),
                                          ("2048", "NaN"), ("2048", "1e400"), ("2048", None)])
def test_windows_highdicom_cannot_write_are_left_out_not_every_object(tmp_path, centre, width):
    """A zero, negative or non-finite width, more centres than widths, or a centre alone
    failed the GSPS inside highdicom, and with it every object of the image (a fuzzer's find)."""
    from pydicom.dataset import Dataset

    source = make_source()
    source.WindowCenter = centre
    if width is None:
        del source.WindowWidth
    else:
        source.WindowWidth = width
    results = build_results(source, make_explanation(), ALGORITHM)
    assert set(results) == set(OBJECT_TYPES)
    assert "WindowCenter" not in results["gsps"].get("SoftcopyVOILUTSequence", [Dataset()])[0]
    path = tmp_path / "gsps.dcm"
    results["gsps"].save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []


@pytest.mark.parametrize("orientation,kept", [("P\\FL", True), ("A\\R", True), ("P", False), ("p\\fl", False),
                                               ("A\\FR\\X", False), ("066", False)])
def test_a_malformed_patient_orientation_is_left_empty_in_the_segs(tmp_path, orientation, kept):
    """PatientOrientation is copied into the SEGs (Type 2C): a malformed one made them invalid
    (a fuzzer's find); it is left empty instead."""
    source = make_source()
    source.PatientOrientation = orientation
    results = build_results(source, make_explanation(), ALGORITHM, ["binary_seg", "fractional_seg"])
    for kind, seg in results.items():
        assert (seg.PatientOrientation == source.PatientOrientation) if kept else seg.PatientOrientation == "", kind
        path = tmp_path / f"{kind}.dcm"
        seg.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], (kind, orientation)


@pytest.mark.parametrize("keyword", ["RescaleSlope", "RescaleIntercept"])
def test_an_empty_rescale_value_loses_no_object(keyword):
    source = make_source()
    setattr(source, keyword, "")
    assert set(build_results(source, make_explanation(), ALGORITHM)) == set(OBJECT_TYPES)


def test_gsps_of_a_source_with_both_windows_and_a_voi_lut_keeps_the_windows(tmp_path):
    """Both are legal in an image (PS3.3 C.11.2); a GSPS's Softcopy VOI LUT holds one, and
    highdicom 0.28 refused such a source, which lost every result object."""
    source = _add_a_16_bit_voi_lut(make_source())
    results = build_results(source, make_explanation(), ALGORITHM)
    assert set(results) == set(OBJECT_TYPES) and "VOILUTSequence" in source
    voi = results["gsps"].SoftcopyVOILUTSequence[0]
    assert "VOILUTSequence" not in voi
    assert float(voi.WindowCenter) == float(source.WindowCenter) and float(voi.WindowWidth) == float(source.WindowWidth)
    path = tmp_path / "gsps.dcm"
    results["gsps"].save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []


@pytest.mark.parametrize("pixel_spacing", [False, True])
def test_a_source_with_patient_geometry_gives_valid_objects(tmp_path, pixel_spacing):
    """An MG image may carry Image Position/Orientation (Patient) in its Frame of Reference;
    highdicom 0.28 then reads PixelSpacing and SliceThickness from it, which a mammogram
    rarely has (the SEG failed with AttributeError)."""
    source = make_source(frame_of_reference=True, pixel_spacing=pixel_spacing)
    source.ImagePositionPatient = [0.0, 0.0, 0.0]
    source.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]
    assert "SliceThickness" not in source
    results = build_results(source, make_explanation(), ALGORITHM)
    assert set(results) == set(OBJECT_TYPES) and "SliceThickness" not in source
    for object_type, ds in results.items():
        path = tmp_path / f"{object_type}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], object_type
    shared = results["binary_seg"].SharedFunctionalGroupsSequence[0]
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == pytest.approx(
        [float(v) for v in source.PixelSpacing] if pixel_spacing else
        [float(v) / float(source.EstimatedRadiographicMagnificationFactor) for v in source.ImagerPixelSpacing])
    assert [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient] == [0, 1, 0, 0, 0, -1]


@pytest.mark.parametrize("charset", [None, "ISO_IR 100", "ISO_IR 13"])
def test_model_names_outside_the_sources_character_set_are_carried_in_utf8(tmp_path, charset):
    """A model file named by a site in its own language: the objects declared no character
    set (or Latin-1, or JIS X 0201, whose Python codec holds more than pydicom writes) and
    held bytes of another (dciodvfy error, '?' on read-back)."""
    source = make_source()
    if charset:
        source.SpecificCharacterSet = charset
    elif "SpecificCharacterSet" in source:
        del source.SpecificCharacterSet
    name = "modèle-sein.pt" if charset is None else "乳腺モデル.pt"
    source.PatientName = {None: "Muller^Jurgen", "ISO_IR 100": "Müller^Jürgen", "ISO_IR 13": "Yamada^Taro"}[charset]
    algorithm = dataclasses.replace(ALGORITHM, model_name=name)
    for object_type, ds in build_results(source, make_explanation(), algorithm).items():
        path = tmp_path / f"{object_type}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], object_type
        back = pydicom.dcmread(path)
        assert back.SpecificCharacterSet == "ISO_IR 192", object_type
        assert str(back.PatientName) == str(source.PatientName), object_type
        assert name in [item.ManufacturerModelName for item in back.ContributingEquipmentSequence], object_type
    assert source.get("SpecificCharacterSet") == charset  # the source as it was


def _segment_pixels(seg: hd.seg.Segmentation, source, rescale: bool = False) -> np.ndarray:
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[source.SOPInstanceUID], segment_numbers=[1], rescale_fractional=rescale,
    )
    return pixels[0, :, :, 0]


def test_fractional_seg_recovers_saliency(built):
    source, explanation, _, files = built["default"]
    seg = hd.seg.segread(files["fractional_seg"])
    assert seg.SegmentationType == "FRACTIONAL" and seg.SegmentationFractionalType == "PROBABILITY"
    recovered = _segment_pixels(seg, source, rescale=True)
    assert np.abs(recovered - explanation.saliency).max() <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize("variant", ["default", "all_flags"])
def test_binary_seg_matches_region(built, variant):
    source, explanation, _, files = built[variant]
    seg = hd.seg.segread(files["binary_seg"])
    assert np.array_equal(_segment_pixels(seg, source).astype(bool), explanation.region)


def test_parametric_map_recovers_saliency_and_declares_nominal_geometry(built):
    source, explanation, _, files = built["default"]
    pm = pydicom.dcmread(files["parametric_map"])
    assert pm.pixel_array.dtype == np.float32
    assert np.array_equal(pm.pixel_array, explanation.saliency)
    shared = pm.SharedFunctionalGroupsSequence[0]
    mapping = shared.RealWorldValueMappingSequence[0]
    assert mapping.LUTLabel == "CFIA_SALIENCY" and "saliency" in mapping.LUTExplanation
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "1"
    assert (mapping.DoubleFloatRealWorldValueFirstValueMapped, mapping.DoubleFloatRealWorldValueLastValueMapped) == (0.0, 1.0)
    assert shared.FrameVOILUTSequence[0].VOILUTFunction == "LINEAR_EXACT"
    # Nominal frame of reference: present, its own, and declared in the derivation description.
    assert "FrameOfReferenceUID" in pm and "FrameOfReferenceUID" not in source
    spacing = [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing]
    magnification = float(source.EstimatedRadiographicMagnificationFactor)
    assert spacing == pytest.approx([float(v) / magnification for v in source.ImagerPixelSpacing])
    derivation = pm.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
    assert "Nominal geometry" in derivation.DerivationDescription
    assert "at the detector / magnification 1.03125, in the patient" in derivation.DerivationDescription
    assert derivation.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID


@pytest.mark.parametrize("pixel_spacing", [False, True])
def test_a_grid_with_other_row_and_column_spacing_keeps_them_apart(pixel_spacing):
    """PixelSpacing is row spacing \\ column spacing (PS3.3 10.7.1.3): the SEGs and the map
    carry the source's in that order, and its BodyPartThickness as their nominal thickness."""
    source = make_source(pixel_spacing=pixel_spacing)
    magnification = float(source.EstimatedRadiographicMagnificationFactor)
    source.ImagerPixelSpacing = [0.1 * magnification, 0.07 * magnification]
    if pixel_spacing:
        source.PixelSpacing = [0.1, 0.07]
    source.BodyPartThickness = 53
    results = build_results(source, make_explanation(), ALGORITHM)
    for object_type in ("fractional_seg", "binary_seg", "parametric_map"):
        measures = results[object_type].SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
        assert [float(v) for v in measures.PixelSpacing] == pytest.approx([0.1, 0.07]), object_type
        assert float(measures.SliceThickness) == 53, object_type


def test_parametric_map_real_world_values_are_the_saliency(built):
    """A viewer shows slope * stored + intercept: that must be the saliency itself."""
    _, explanation, _, files = built["default"]
    pm = pydicom.dcmread(files["parametric_map"])
    mapping = pm.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    values = pm.pixel_array * mapping.RealWorldValueSlope + mapping.RealWorldValueIntercept
    np.testing.assert_array_equal(values, explanation.saliency)


def test_parametric_map_windows_are_the_full_range_then_the_maps_own():
    """A map peaking at 0.6: the second window spans 0..0.6, centred at 0.3."""
    explanation = _replace(make_explanation(), saliency=make_explanation().saliency * np.float32(0.6))
    pm = build_results(make_source(), explanation, ALGORITHM, ["parametric_map"])["parametric_map"]
    voi = pm.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence[0]
    top = float(explanation.saliency.max())
    assert [float(v) for v in voi.WindowCenter] == pytest.approx([0.5, top / 2], abs=1e-6)
    assert [float(v) for v in voi.WindowWidth] == pytest.approx([1.0, top], abs=1e-6)
    assert top == pytest.approx(0.6)


@pytest.mark.parametrize("magnification, expected", [("1.8", 1 / 1.8), (None, 1.0), ("0", 1.0),
                                                     ("1", 1.0), ("0.5", 1.0), ("107", 1.0)])
def test_seg_spacing_is_in_the_patient_when_the_magnification_is_known(magnification, expected):
    """A magnification view's detector spacing overstates sizes in the breast 1.5-2 times."""
    from dicom_out.geometry import pixel_measures

    source = make_source()
    if magnification is None:
        del source.EstimatedRadiographicMagnificationFactor
    else:
        source.EstimatedRadiographicMagnificationFactor = magnification
    seg = build_results(source, make_explanation(), ALGORITHM, ["binary_seg"])["binary_seg"]
    spacing = [float(v) for v in seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing]
    assert spacing == pytest.approx([float(v) * expected for v in source.ImagerPixelSpacing])
    assert [float(v) for v in pixel_measures(source)[0].PixelSpacing] == pytest.approx(spacing)


@pytest.mark.parametrize("pixel, calibration, expected, where", [
    ("imager", None, "imager / magnification", "at the detector / magnification"),  # written both, uncorrected
    ("0.09\\0.09", None, [0.09, 0.09], "calibrated PixelSpacing"),  # differs: corrected or calibrated
    ("imager", "GEOMETRY", "imager", "calibrated PixelSpacing"),  # a calibration type says it is calibrated
    ("alone", None, "imager", "PixelSpacing, calibration unknown"),
])
def test_a_pixel_spacing_counts_as_calibrated_only_when_it_differs_from_the_imagers_or_says_so(
        pixel, calibration, expected, where):
    """PS3.3 10.7.1.1: PixelSpacing equal to ImagerPixelSpacing means no magnification correction;
    taken as calibrated, a magnification view's sizes in the patient were 1.8 times too large."""
    from dicom_out.geometry import pixel_spacing

    source = make_source()
    source.EstimatedRadiographicMagnificationFactor = "1.8"
    imager = [float(v) for v in source.ImagerPixelSpacing]
    source.PixelSpacing = source.ImagerPixelSpacing if pixel in ("imager", "alone") else pixel
    if pixel == "alone":
        del source.ImagerPixelSpacing
    if calibration:
        source.PixelSpacingCalibrationType = calibration
    spacing, whence = pixel_spacing(source)
    if expected == "imager / magnification":
        expected = [v / 1.8 for v in imager]
    elif expected == "imager":
        expected = imager
    assert spacing == pytest.approx(expected) and whence.startswith(where)


@pytest.mark.parametrize("with_pixel_spacing", [False, True])
def test_the_phantoms_spacing_header_gives_the_spacing_it_was_drawn_at(with_pixel_spacing):
    """The phantom draws its lesions at spacing_mm in the breast; its header must say so,
    with or without PixelSpacing (it said 3 % less without, and called a detector spacing calibrated with)."""
    from dicom_out.geometry import pixel_spacing
    from phantom.dicom import to_dataset
    from phantom.generate import PhantomOptions, make_one

    mg = make_one(31, 7, PhantomOptions(size=(256, 208)))
    ds = to_dataset(mg, "sp:7", 7, pixel_spacing=with_pixel_spacing)
    assert pixel_spacing(ds)[0] == pytest.approx([mg.spacing_mm] * 2, rel=1e-9)


def test_parametric_map_frame_of_reference_is_not_the_sources(built):
    source, _, results, _ = built["frame_of_reference"]
    assert results["parametric_map"].FrameOfReferenceUID != source.FrameOfReferenceUID


def test_builders_leave_the_source_untouched(built):
    source, _, _, _ = built["default"]
    fresh = make_source()
    assert source == fresh
    assert "ImagePositionPatient" not in source and "PixelSpacing" not in source


def _sr_segment_reference(sr) -> pydicom.Dataset:
    def items(node):
        for item in node.get("ContentSequence", []):
            yield item
            yield from items(item)

    refs = [
        item.ReferencedSOPSequence[0] for item in items(sr)
        if item.ValueType == "IMAGE" and item.ConceptNameCodeSequence[0].CodeValue == "121214"
    ]
    assert len(refs) == 1
    return refs[0]


def test_sr_references_the_binary_seg_segment(built):
    source, explanation, results, files = built["default"]
    seg = results["binary_seg"]
    ref = _sr_segment_reference(results["sr"])
    assert ref.ReferencedSOPInstanceUID == seg.SOPInstanceUID
    assert ref.ReferencedSOPClassUID == seg.SOPClassUID
    assert ref.ReferencedSegmentNumber in [s.SegmentNumber for s in seg.SegmentSequence]
    evidence = {
        item.ReferencedSOPInstanceUID
        for study in results["sr"].CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert evidence == {seg.SOPInstanceUID, source.SOPInstanceUID}
    # The report reads back with highdicom: score, method, device observer.
    report = hd.sr.srread(files["sr"])
    group = report.content.get_planar_roi_measurement_groups()[0]
    scores = {m.name.meaning: m.value for m in group.get_measurements()}
    assert scores["Classifier score for explained class"] == pytest.approx(explanation.score)
    assert scores["Classifier score after deletion"] == pytest.approx(explanation.score_after_deletion)
    assert group.finding_type.value == "52988006"  # SCT Lesion
    evaluations = {e.name.meaning: e.value.meaning for e in group.get_qualitative_evaluations()}
    assert evaluations == {"Explanation method": "Counterfactual impact analysis"}
    assert report.content.get_observer_contexts()[0].observer_type.meaning == "Device"
    library = [item for item in results["sr"].ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "111028"]
    entry = library[0].ContentSequence[0].ContentSequence[0]
    assert entry.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID


@pytest.mark.parametrize("positive", [True, False])
def test_sr_states_the_call_and_claims_a_finding_only_for_a_positive_one(tmp_path, positive):
    """A negative call's region is what moves the score; a TID 1500 consumer counting
    findings must not count it as a lesion."""
    explanation = dataclasses.replace(make_explanation(), score=0.87 if positive else 0.02, positive=positive)
    sr = build_results(make_source(), explanation, ALGORITHM, ["binary_seg", "sr"])["sr"]
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    group = hd.sr.srread(path).content.get_planar_roi_measurement_groups()[0]
    assert (group.finding_type is not None) == positive
    evaluations = {e.name.meaning: e.value.meaning for e in group.get_qualitative_evaluations()}
    assert evaluations["Classifier call for explained class"] == ("Present" if positive else "Absent")


def test_sr_claims_no_finding_for_an_empty_region(tmp_path):
    """A positive call whose region came out empty has nothing to locate: a consumer counting
    findings must not get a lesion pointing at an empty segment. The call is still stated."""
    base = make_explanation()
    explanation = dataclasses.replace(
        base, score=0.87, positive=True, region=np.zeros_like(base.region),
    )
    sr = build_results(make_source(), explanation, ALGORITHM, ["binary_seg", "sr"])["sr"]
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    group = hd.sr.srread(path).content.get_planar_roi_measurement_groups()[0]
    assert group.finding_type is None
    evaluations = {e.name.meaning: e.value.meaning for e in group.get_qualitative_evaluations()}
    assert evaluations["Classifier call for explained class"] == "Present"


def test_sr_without_binary_seg_keeps_the_same_reference(built):
    source, explanation, results, _ = built["default"]
    only_sr = build_results(source, explanation, ALGORITHM, enabled=["sr"])
    assert list(only_sr) == ["sr"]
    assert _sr_segment_reference(only_sr["sr"]).ReferencedSOPInstanceUID == results["binary_seg"].SOPInstanceUID


def test_same_patient_and_study_new_series(built):
    source, _, results, _ = built["default"]
    series = set()
    for object_type, ds in results.items():
        assert ds.PatientID == source.PatientID and ds.PatientName == source.PatientName
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.SeriesDescription == SERIES_DESCRIPTIONS[object_type]
        series.add(ds.SeriesInstanceUID)
    assert len(series) == len(OBJECT_TYPES) and source.SeriesInstanceUID not in series


def test_provenance(built):
    _, _, results, _ = built["default"]
    for object_type, ds in results.items():
        items = [
            item for item in ds.ContributingEquipmentSequence
            if item.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
            and item.get("ManufacturerModelName") == ALGORITHM.model_name
        ]
        assert len(items) == 1, object_type
        assert "DeviceUID" in items[0]
        assert f"model {ALGORITHM.model_version}" in items[0].SoftwareVersions
    for object_type in ("fractional_seg", "binary_seg"):
        segment = results[object_type].SegmentSequence[0]
        algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmName == ALGORITHM.name and algorithm.AlgorithmVersion == ALGORITHM.version
        assert ALGORITHM.model_version in algorithm.AlgorithmParameters
        assert len(segment.RecommendedDisplayCIELabValue) == 3
        # OHIF needs a plane orientation to overlay a SEG on a single-frame mammogram.
        assert "PlaneOrientationSequence" in results[object_type].SharedFunctionalGroupsSequence[0]
        assert results[object_type].PatientOrientation == make_source().PatientOrientation


def _uids(results) -> dict:
    return {k: (v.SeriesInstanceUID, v.SOPInstanceUID) for k, v in results.items()}


@pytest.mark.parametrize("change", [dict(model_version="sha256:ffff0000"), dict(method="gradcam"),
                                    dict(settings="0123456789abcdef")])
def test_uids_are_deterministic_and_follow_the_model_method_and_settings(built, change):
    """A resend replaces; another model, method or explainer setting makes new objects."""
    source, explanation, results, _ = built["default"]
    again = build_results(source, explanation, ALGORITHM)
    assert _uids(again) == _uids(results)
    other = build_results(source, explanation, dataclasses.replace(ALGORITHM, **change))
    old_uids = {uid for pair in _uids(results).values() for uid in pair}
    new_uids = {uid for pair in _uids(other).values() for uid in pair}
    assert not old_uids & new_uids
    assert (_device_uid(other["sr"]) != _device_uid(results["sr"])) == ("model_version" in change)


# What a rebuild may change: when it was made.
_BUILD_TIMES = {"InstanceCreationDate", "InstanceCreationTime", "ContentDate", "ContentTime",
                "ContributionDateTime", "PresentationCreationDate", "PresentationCreationTime"}


def _content(ds: pydicom.Dataset) -> list:
    """Every element but the build times, nested sequences flattened, for comparing builds."""
    out = []
    for element in ds:
        if element.keyword in _BUILD_TIMES:
            continue
        if element.VR == "SQ":
            out.append((element.tag, [_content(item) for item in element.value]))
        else:
            out.append((element.tag, element.value))
    return out


def test_a_rebuild_keeps_the_content_of_each_object(built):
    """Same SOP Instance UID, same content: a resend must replace an object with itself
    (highdicom's DimensionOrganizationUID was random per build)."""
    source, explanation, results, _ = built["default"]
    again = build_results(source, explanation, ALGORITHM)
    for object_type, first in results.items():
        assert _content(again[object_type]) == _content(first), object_type


def test_uid_sources_do_not_run_into_each_other():
    """pydicom joins entropy sources with nothing between: 'ab'+'c' must differ from 'a'+'bc'."""
    from dicom_out.uids import derived_uid, device_uid

    assert device_uid("cfia", "classifier.pt", "abc") != device_uid("cfia", "classifier.pta", "bc")
    assert derived_uid("1.2.3", ("v1", "cf", ""), "x") != derived_uid("1.2.3", ("v1c", "f", ""), "x")


def _device_uid(ds) -> str:
    (item,) = [i for i in ds.ContributingEquipmentSequence if "DeviceUID" in i]
    return item.DeviceUID


@pytest.mark.parametrize("spacing, ratio", [(["0.1", "0.05"], [2, 1]), (["0.07", "0.07"], [1, 1])])
def test_gsps_shows_pixels_of_unequal_spacing_in_their_proportion(tmp_path, spacing, ratio):
    source = make_source()
    source.ImagerPixelSpacing = spacing
    gsps = build_results(source, make_explanation(), ALGORITHM, ["gsps"])["gsps"]
    assert [int(v) for v in gsps.DisplayedAreaSelectionSequence[0].PresentationPixelAspectRatio] == ratio
    path = tmp_path / "gsps.dcm"
    gsps.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []


def test_outline_follows_region_edges():
    region = np.zeros((40, 50), bool)
    region[10:20, 30:40] = True
    region[0:5, 0:5] = True  # touches the border: still a closed outline inside the image
    outlines = sorted(region_outlines(region), key=lambda o: o[:, 0].min())
    assert len(outlines) == 2
    for outline, (c0, c1, r0, r1) in zip(outlines, [(0, 5, 0, 5), (30, 40, 10, 20)]):
        assert np.array_equal(outline[0], outline[-1])
        assert (outline[:, 0].min(), outline[:, 0].max()) == pytest.approx((c0, c1), abs=0.05)
        assert (outline[:, 1].min(), outline[:, 1].max()) == pytest.approx((r0, r1), abs=0.05)
        assert outline[:, 0].min() >= 0 and outline[:, 1].min() >= 0


def _replace(explanation, **changes):
    return dataclasses.replace(explanation, **changes)


BAD_EXPLANATIONS = {
    "saliency shape": (lambda e: _replace(e, saliency=e.saliency[:-1]), "(255, 208)"),
    "saliency range": (lambda e: _replace(e, saliency=e.saliency * 2), "to 2.0"),
    "saliency negative": (lambda e: _replace(e, saliency=e.saliency - 0.5), "-0.5"),
    "saliency nan": (lambda e: _replace(e, saliency=np.full(SIZE, np.nan, np.float32)), "NaN"),
    "saliency int": (lambda e: _replace(e, saliency=e.saliency.astype(np.uint8)), "uint8"),
    "region dtype": (lambda e: _replace(e, region=e.region.astype(np.uint8)), "uint8"),
    "region shape": (lambda e: _replace(e, region=e.region.T), "(208, 256)"),
    "score": (lambda e: _replace(e, score=1.5), "score 1.5 is out of range"),
    "score after deletion": (lambda e: _replace(e, score_after_deletion=float("nan")),
                             "score_after_deletion nan is out of range"),
    "class name": (lambda e: _replace(e, class_name=""), "''"),
}


@pytest.mark.parametrize("case", BAD_EXPLANATIONS)
def test_bad_explanation_raises_value_error_quoting_it(case):
    change, quoted = BAD_EXPLANATIONS[case]
    with pytest.raises(ValueError) as info:
        build_results(make_source(), change(make_explanation()), ALGORITHM)
    assert quoted in str(info.value)


def test_non_mammogram_source_raises_value_error():
    source = make_source()
    source.Modality, source.SOPClassUID = "CT", "1.2.840.10008.5.1.4.1.1.2"
    with pytest.raises(ValueError, match="'1.2.840.10008.5.1.4.1.1.2'.*'CT'"):
        build_results(source, make_explanation(), ALGORITHM)


def test_source_without_spacing_raises_value_error():
    source = make_source()
    del source.ImagerPixelSpacing
    with pytest.raises(ValueError, match="neither PixelSpacing nor ImagerPixelSpacing"):
        build_results(source, make_explanation(), ALGORITHM)


def test_a_single_valued_pixel_spacing_falls_back_to_the_imager_spacing():
    """As the reader does (cfia.dicom_io._spacing): one value is no row and column spacing.
    The builders raised on it, so the node explained an image and then dead-lettered it."""
    def seg_spacing(source):
        seg = build_results(source, make_explanation(), ALGORITHM)["binary_seg"]
        return [float(v) for v in seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing]

    source = make_source()
    assert "PixelSpacing" not in source
    imager = seg_spacing(source)
    source.PixelSpacing = "0.1"
    assert seg_spacing(source) == imager
    del source.ImagerPixelSpacing
    with pytest.raises(ValueError, match="PixelSpacing '0.1': not two positive numbers"):
        build_results(source, make_explanation(), ALGORITHM)
    source.PixelSpacing = [0.1] * 200_000  # quoted in the log and reason.json: bounded
    with pytest.raises(ValueError) as info:
        build_results(source, make_explanation(), ALGORITHM)
    assert len(str(info.value)) < 200


def test_bad_algorithm_and_object_type_raise_value_error():
    with pytest.raises(ValueError, match="'lime'"):
        build_results(make_source(), make_explanation(), dataclasses.replace(ALGORITHM, method="lime"))
    with pytest.raises(ValueError, match="model_version ''"):
        build_results(make_source(), make_explanation(), dataclasses.replace(ALGORITHM, model_version=""))
    with pytest.raises(ValueError, match="'rtstruct'"):
        build_results(make_source(), make_explanation(), ALGORITHM, enabled=["sr", "rtstruct"])


@pytest.mark.parametrize("offset,hours", [("+0900", 9.0), ("-0500", -5.0), ("+0530", 5.5)])
def test_results_of_a_source_with_a_time_zone_are_stamped_in_that_zone(tmp_path, offset, hours):
    """The results copied the source's +0900 StudyDate/StudyTime but were stamped in the node's
    zone with no offset declared: a viewer read the two sets of times in one zone. West of UTC
    and half-hour zones too."""
    import datetime as dt

    source = make_source()
    source.TimezoneOffsetFromUTC = offset
    results = build_results(source, make_explanation(), ALGORITHM)
    in_zone = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None) + dt.timedelta(hours=hours)
    for object_type, ds in results.items():
        assert ds.TimezoneOffsetFromUTC == offset, object_type
        created = dt.datetime.strptime(ds.InstanceCreationDate + ds.InstanceCreationTime[:6], "%Y%m%d%H%M%S")
        assert abs(created - in_zone) < dt.timedelta(minutes=2), (object_type, created, in_zone)
        stamps = {item.PurposeOfReferenceCodeSequence[0].CodeValue: item.get("ContributionDateTime")
                  for item in ds.ContributingEquipmentSequence}
        if stamps.get("109101"):  # the source's acquisition: its own time, left as it is
            assert str(stamps["109101"]) == str(source.AcquisitionDateTime)
        for purpose, stamp in stamps.items():  # the processing's: the node's clock, moved
            if stamp and purpose != "109101":
                made = dt.datetime.strptime(str(stamp)[:14], "%Y%m%d%H%M%S")
                assert abs(made - in_zone) < dt.timedelta(minutes=2), (object_type, purpose, made)
        path = tmp_path / f"{object_type}.dcm"
        ds.save_as(path, enforce_file_format=True)
        assert dciodvfy_errors(path) == [], object_type
    unzoned = build_results(make_source(), make_explanation(), ALGORITHM)
    assert all("TimezoneOffsetFromUTC" not in ds for ds in unzoned.values())
