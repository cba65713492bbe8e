"""Values the result objects take from the source and the explanation: the source header's
mending (first of several names, an absent PatientID emptied, slashed dates, sex 'OTHER',
a 12-bit VOI LUT rescaled to 16), the GSPS (note box inside the image, no 'negative' for an
unknown call, closed outlines after decimation, the source's Presentation LUT Shape kept, a
region at the right edge outlined to it) and the Parametric Map's windows and geometry note."""
from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from dicom_out.gsps import MAX_POINTS, _note, build_gsps, region_outlines
from dicom_out.pm import _windows, build_parametric_map
from dicom_out.source_header import result_header
from test_dicom_out import ALGORITHM, make_explanation, make_source


def _header(**values) -> Dataset:
    ds = Dataset()
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "ReferringPhysicianName", "AccessionNumber", "StudyID"):
        setattr(ds, keyword, "")
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def test_the_header_copy_mends_names_ids_dates_and_sex():
    source = _header(PatientName=["DOE^JANE", "ROE^JANE"], StudyDate="1950/01/31", PatientSex="OTHER")
    del source.PatientID
    copy, mended = result_header(source)
    assert str(copy.PatientName) == "DOE^JANE"
    assert "PatientID" in copy and not copy.PatientID
    assert copy.StudyDate == "19500131"
    assert copy.PatientSex == "O"
    assert {"PatientName", "PatientID", "StudyDate", "PatientSex"} <= set(mended)
    assert isinstance(source["PatientName"].value, MultiValue) and "PatientID" not in source


def test_a_twelve_bit_voi_lut_spans_the_sixteen_bit_range():
    source = _header()
    item = Dataset()
    item.LUTDescriptor = [2, 0, 12]
    item.LUTData = np.array([0, 4095], "<u2").tobytes()
    item["LUTData"].VR = "OW"
    source.VOILUTSequence = [item]
    copy, _ = result_header(source)
    lut = copy.VOILUTSequence[0]
    assert list(lut.LUTDescriptor)[2] == 16
    assert list(np.frombuffer(bytes(lut.LUTData), "<u2")) == [0, 65535]


def test_the_note_stays_inside_the_image_and_an_unknown_call_is_not_negative():
    source = make_source()
    rows, cols = int(source.Rows), int(source.Columns)
    assert rows != cols
    note = _note(source, make_explanation(), ALGORITHM)
    corners = [*note.BoundingBoxTopLeftHandCorner, *note.BoundingBoxBottomRightHandCorner]
    left, top, right, bottom = [float(v) for v in corners]
    assert 0 <= left < right <= cols and 0 <= top < bottom <= rows
    assert "negative" not in note.UnformattedTextValue


def test_a_decimated_outline_is_closed():
    region = np.zeros((60, 6020), bool)
    region[10:20, 10:6010] = True
    region[20:40, 10:6010:2] = True   # 3000 teeth: some 12000 corners
    outlines = region_outlines(region)
    longest = max(outlines, key=len)
    assert len(longest) <= MAX_POINTS + 1
    assert np.allclose(longest[0], longest[-1])


def test_a_region_at_the_right_edge_is_outlined_to_it():
    region = np.zeros((40, 30), bool)
    region[10:20, 25:] = True
    xs = np.concatenate([o[:, 0] for o in region_outlines(region)])
    assert xs.max() == 30.0 and xs.min() == 25.0


def test_the_gsps_keeps_the_sources_presentation_lut_shape():
    source = make_source()
    assert source.PhotometricInterpretation == "MONOCHROME2"
    source.PresentationLUTShape = "INVERSE"
    assert build_gsps(source, make_explanation(), ALGORITHM).PresentationLUTShape == "INVERSE"


def test_parametric_map_windows_and_nominal_geometry_note():
    full, own = _windows(np.array([[0.0, 0.8]], np.float32)), _windows(np.zeros((2, 2), np.float32))
    assert np.allclose([float(v) for v in full.WindowCenter], [0.5, 0.4])
    assert np.allclose([float(v) for v in full.WindowWidth], [1.0, 0.8])
    assert min(float(v) for v in own.WindowWidth) > 0
    pm = build_parametric_map(make_source(), make_explanation(), ALGORITHM)
    notes = [d.get("DerivationDescription", "") for f in pm.PerFrameFunctionalGroupsSequence
             for d in f.get("DerivationImageSequence", [])]
    assert notes and all("nominal" in n.lower() for n in notes)
