"""The listener's limits at their edges: the largest side and one frame, pixel data two bytes
short, a 65-character UID, a codestream too tall only, a wrong called AE title below the
association limit, a dataset half again the size limit."""
from __future__ import annotations

from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, UID
from pynetdicom import AE

from listener import statuses
from listener.checks import check_mammogram, too_large_image
from node_helpers import mammogram, push
from test_listener import MG, _declaring, start_listener  # noqa: F401  (fixture)


def test_the_largest_side_is_accepted_and_one_frame_only():
    ds = mammogram(1)
    ds.Rows = 8192
    assert too_large_image(ds) is None
    ds = mammogram(1)
    ds.NumberOfFrames = 2
    assert too_large_image(ds) is not None


def test_pixel_data_two_bytes_short_is_refused():
    ds = mammogram(1)
    ds.PixelData = ds.PixelData[:-2]
    refusal = check_mammogram(ds, MG, UID(ExplicitVRLittleEndian))
    assert refusal is not None and refusal.code == statuses.PIXEL_LENGTH_MISMATCH


def test_a_uid_of_65_characters_is_refused():
    ds = mammogram(1)
    ds.SeriesInstanceUID = "1." + "2" * 63
    refusal = check_mammogram(ds, MG, UID(ExplicitVRLittleEndian))
    assert refusal is not None and refusal.code == statuses.INVALID_UID


def test_a_codestream_taller_only_is_refused():
    bomb = _declaring(mammogram(2), JPEG2000Lossless, 24000, 208)
    refusal = check_mammogram(bomb, MG, UID(JPEG2000Lossless))
    assert refusal is not None and refusal.code == statuses.TOO_LARGE


def test_a_wrong_called_ae_below_the_limit_is_not_busy(start_listener):  # noqa: F811
    port, intake = start_listener(max_associations=2)
    ae = AE(ae_title="BULK")
    ae.add_requested_context("1.2.840.10008.1.1")
    first = ae.associate("127.0.0.1", port, ae_title="CFIA")
    try:
        assert first.is_established
        second = ae.associate("127.0.0.1", port, ae_title="WRONG")
        assert second.is_rejected
        assert intake.counts["rejected_called_ae"] == 1 and intake.counts["rejected_busy"] == 0
    finally:
        first.release()


def test_a_dataset_half_again_the_limit_is_refused(start_listener):  # noqa: F811
    port, intake = start_listener(max_dataset_bytes=2 << 20)
    big = mammogram(2)
    big.add_new(0x00090010, "LO", "BIG")
    big.add_new(0x00091000, "OB", bytes(3 << 20))
    assert push(port, [big]) == [None]
    assert intake.counts["rejected_too_large"] == 1
