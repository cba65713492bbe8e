"""Headers a fuzzer made (session 45) that crashed a path instead of being refused in one line:
a malformed image attribute at the listener (0xC211, the handler's own bug, instead of 0xC001),
a file `cfia explain` read but could not use (a traceback instead of exit 2), a Modality LUT
without its descriptor and a rescale beyond float32 (a bare library error)."""
from __future__ import annotations

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from cfia.dicom_io import ImageReadError, from_dataset, read_dataset
from listener.checks import check_mammogram
from node_helpers import mammogram, write

MG = "1.2.840.10008.5.1.4.1.1.1.2"


@pytest.mark.parametrize("keyword,value", [("BitsAllocated", [16, 16]), ("SamplesPerPixel", [1, 1]),
                                           ("Rows", "512")])
def test_an_image_attribute_that_is_not_one_whole_number_is_refused_by_name(keyword, value):
    ds = mammogram(1)
    setattr(ds, keyword, value)
    refusal = check_mammogram(ds, MG, ExplicitVRLittleEndian)
    assert refusal is not None and refusal.code == 0xC001 and keyword in refusal.reason


@pytest.mark.parametrize("good,bad", [
    (b"\x28\x00\x11\x00US\x02\x00", b"\x28\x00\x11\x00US\x03\x00\x00"),  # Columns of 3 bytes
    (b"\x08\x00\x60\x00CS\x02\x00MG", b"\x08\x00\x60\x00M\xe6\x02\x00MG"),  # Modality, an unknown VR
])
def test_a_file_with_an_element_pydicom_cannot_convert_is_an_image_read_error(tmp_path, good, bad):
    path = write(mammogram(2), tmp_path / "bad.dcm")
    data = path.read_bytes()
    assert data.count(good) == 1
    path.write_bytes(data.replace(good, bad))
    with pytest.raises(ImageReadError, match="bad.dcm: not a readable DICOM file"):
        read_dataset(path)


def test_a_compressed_file_without_columns_is_an_image_read_error(tmp_path):
    from pydicom.uid import JPEG2000Lossless

    ds = mammogram(3)
    ds.compress(JPEG2000Lossless)
    del ds.Columns
    with pytest.raises(ImageReadError, match="Rows or Columns"):
        from_dataset(ds, "j2k.dcm")


def test_a_modality_lut_item_without_its_descriptor_is_an_image_read_error():
    from pydicom.dataset import Dataset

    ds = mammogram(4)
    ds.ModalityLUTSequence = [Dataset()]
    with pytest.raises(ImageReadError, match="Modality LUT cannot be applied"):
        from_dataset(ds, "mlut.dcm")


def test_a_rescale_beyond_float32_is_an_image_read_error():
    ds = mammogram(5)
    ds.RescaleSlope, ds.RescaleIntercept = 1e38, 1e38
    with pytest.raises(ImageReadError, match="beyond float32"):
        from_dataset(ds, "rescale.dcm")


def test_a_rescale_that_merges_neighbouring_values_in_float32_is_an_image_read_error():
    """RescaleIntercept 1e9: float32 steps of 64 there, so the image collapsed and the breast's
    histogram failed in numpy ("Too many bins for data range")."""
    ds = mammogram(5)
    ds.RescaleSlope, ds.RescaleIntercept = 1, 1e9
    with pytest.raises(ImageReadError, match="one value in float32"):
        from_dataset(ds, "rescale.dcm")
    ds.RescaleIntercept = -1024  # an ordinary CT-like intercept reads as before
    assert from_dataset(ds, "rescale.dcm").to_input((512, 352)).image.max() > 0


def test_a_file_that_reads_cleanly_is_untouched(tmp_path):
    ds = mammogram(6)
    path = write(ds, tmp_path / "good.dcm")
    assert read_dataset(path).SOPInstanceUID == ds.SOPInstanceUID
    assert pydicom.dcmread(path).Rows == ds.Rows
