"""A manifest's lesion masks in the forms datasets ship them: a .npy array, a lossless image
file (grey, colour, palette, with an alpha channel), a DICOM image whose nonzero pixels mark the
lesion, and a DICOM Segmentation of the mammogram; each reads as the same bool mask, and `cfia
evaluate` scores a folder whose manifest names PNG masks as it scores the .npy ones."""
from __future__ import annotations

import csv
import json
from copy import deepcopy

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from cfia.cli import main
from cfia.manifest import read_mask
from dicom_out import AlgorithmInfo, Explanation, build_results
from phantom.dicom import to_dataset
from phantom.generate import PhantomOptions, make_one

SHAPE = (64, 48)


@pytest.fixture
def lesion() -> np.ndarray:
    rows, cols = np.mgrid[: SHAPE[0], : SHAPE[1]]
    return ((rows - 30) ** 2 + (cols - 20) ** 2 < 100) | ((rows > 50) & (cols > 40))


def _dicom_image(path, pixels: np.ndarray) -> None:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = pixels.astype(np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_every_form_reads_as_the_same_mask(tmp_path, lesion):
    np.save(tmp_path / "m.npy", lesion.astype(np.uint8) * 255)
    grey = (lesion * 255).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(grey).save(tmp_path / "grey.tif")
    Image.fromarray(grey).save(tmp_path / "grey.bmp")
    Image.fromarray(lesion.astype(np.uint16) * 1000).save(tmp_path / "sixteen.png")
    rgba = np.zeros((*SHAPE, 4), np.uint8)
    rgba[..., 3] = 255  # an opaque black background: alpha is not the mask
    rgba[lesion, 0] = 200
    Image.fromarray(rgba, "RGBA").save(tmp_path / "red.png")
    palette = Image.fromarray(lesion.astype(np.uint8), "P")
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.save(tmp_path / "palette.png")
    _dicom_image(tmp_path / "mask.dcm", grey)
    _dicom_image(tmp_path / "no-suffix", grey)
    for name in ("m.npy", "grey.png", "grey.tif", "grey.bmp", "sixteen.png", "red.png", "palette.png", "mask.dcm",
                 "no-suffix"):
        mask = read_mask(tmp_path / name, SHAPE)
        assert mask.dtype == bool and np.array_equal(mask, lesion), name


def test_a_palette_whose_index_0_is_not_black_marks_by_colour(tmp_path, lesion):
    palette = Image.fromarray((~lesion).astype(np.uint8), "P")  # the lesion is index 0, coloured
    palette.putpalette([255, 0, 0, 0, 0, 0] + [0] * 762)
    palette.save(tmp_path / "palette.png")
    assert np.array_equal(read_mask(tmp_path / "palette.png"), lesion)


def test_a_binary_segmentation_of_the_mammogram_is_its_region(tmp_path):
    source = to_dataset(make_one(11, 0, PhantomOptions(size=(256, 208), positive_fraction=1.0)), "seg", 11)
    rows, cols = np.mgrid[:256, :208]
    saliency = np.exp(-((rows - 120) ** 2 + (cols - 90) ** 2) / (2 * 15.0**2)).astype(np.float32)
    region = saliency > 0.5
    seg = build_results(source, Explanation(saliency=saliency, region=region, score=0.9, score_after_deletion=0.2),
                        AlgorithmInfo(model_name="toy", model_version="1", method="cf"))["binary_seg"]
    seg.save_as(tmp_path / "region.dcm", enforce_file_format=True)
    assert np.array_equal(read_mask(tmp_path / "region.dcm", (256, 208)), region)


def _two_frame_seg(tmp_path, second_image_uid: str | None):
    """The binary SEG of a phantom with its one frame repeated, the copy of `second_image_uid`
    (None: of the same image), as a SEG of a study's views or of one image's two segments."""
    source = to_dataset(make_one(11, 0, PhantomOptions(size=(256, 208), positive_fraction=1.0)), "seg", 11)
    region = np.zeros((256, 208), bool)
    region[100:140, 70:110] = True
    seg = build_results(source, Explanation(saliency=region.astype(np.float32), region=region, score=0.9,
                                            score_after_deletion=0.2),
                        AlgorithmInfo(model_name="toy", model_version="1", method="cf"))["binary_seg"]
    assert int(seg.NumberOfFrames) == 1 and (256 * 208) % 8 == 0  # bit-packed frames concatenate
    seg.PixelData = bytes(seg.PixelData)[: 256 * 208 // 8] * 2
    seg.NumberOfFrames = 2
    frame = deepcopy(seg.PerFrameFunctionalGroupsSequence[0])
    if second_image_uid:
        frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID = second_image_uid
    seg.PerFrameFunctionalGroupsSequence.append(frame)
    seg.save_as(tmp_path / "seg.dcm", enforce_file_format=True)
    return tmp_path / "seg.dcm", region, str(source.SOPInstanceUID)


def test_a_segmentation_of_two_images_is_refused_not_merged(tmp_path):
    path, region, _ = _two_frame_seg(tmp_path, None)
    assert np.array_equal(read_mask(path, (256, 208)), region)  # two frames of one image: their union
    other = generate_uid()
    path, _, uid = _two_frame_seg(tmp_path, other)
    with pytest.raises(ValueError, match="a Segmentation of 2 images.*give each image its own") as err:
        read_mask(path, (256, 208))
    assert uid in str(err.value) and other in str(err.value)


def test_a_frame_without_its_source_counts_every_image_the_series_lists(tmp_path):
    path, region, _ = _two_frame_seg(tmp_path, None)
    seg = pydicom.dcmread(path)
    del seg.PerFrameFunctionalGroupsSequence[1].DerivationImageSequence  # frame 2 says not whose it is
    listed = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    listed.append(deepcopy(listed[0]))
    listed[-1].ReferencedSOPInstanceUID = generate_uid()
    seg.save_as(path, enforce_file_format=True)
    with pytest.raises(ValueError, match="a Segmentation of 2 images"):
        read_mask(path, (256, 208))
    seg.NumberOfFrames, seg.PixelData = 1, bytes(seg.PixelData)[: 256 * 208 // 8]  # one frame is one image's
    del seg.PerFrameFunctionalGroupsSequence[1]
    seg.save_as(path, enforce_file_format=True)
    assert np.array_equal(read_mask(path, (256, 208)), region)


def test_masks_that_cannot_be_used_say_why(tmp_path, lesion):
    Image.fromarray((lesion * 255).astype(np.uint8)).save(tmp_path / "m.jpg")
    with pytest.raises(ValueError, match="JPEG mask.*save it as PNG"):
        read_mask(tmp_path / "m.jpg", SHAPE)
    Image.fromarray((lesion * 255).astype(np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(ValueError, match=r"shape \(64, 48\), its image \(48, 64\)"):
        read_mask(tmp_path / "m.png", (48, 64))
    (tmp_path / "m.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(ValueError, match="DICOM with pixels"):
        read_mask(tmp_path / "m.dcm")


def test_evaluate_scores_png_masks_as_it_scores_npy_ones(phantom_dir, tmp_path):
    with open(phantom_dir / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    folder = tmp_path / "png"
    folder.mkdir()
    for row in rows:
        (folder / row["file"]).symlink_to(phantom_dir / row["file"])
        if row["mask"]:
            png = row["mask"].replace(".npy", ".png")
            (folder / png).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((np.load(phantom_dir / row["mask"]) != 0).astype(np.uint8) * 255).save(folder / png)
            row["mask"] = png
    with open(folder / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    reports = []
    for data, name in ((phantom_dir, "npy"), (folder, "png")):
        assert main(["evaluate", "--data", str(data), "--methods", "gradcam", "--limit", "2",
                     "--out", str(tmp_path / f"{name}.json")]) == 0
        reports.append(json.loads((tmp_path / f"{name}.json").read_text()))
    npy, png = ([{k: v for k, v in c["methods"]["gradcam"].items() if k != "seconds"} for c in r["cases"]]
                for r in reports)
    assert len(npy) == 2 and png == npy


def test_transparent_pixels_are_background_whatever_their_colour(tmp_path, lesion):
    rgba = np.full((*SHAPE, 4), 255, np.uint8)
    rgba[..., 3] = 0  # transparent white, as editors keep a cleared layer
    rgba[lesion] = (200, 0, 0, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "layer.png")
    assert np.array_equal(read_mask(tmp_path / "layer.png", SHAPE), lesion)


def test_every_page_of_a_tiff_counts(tmp_path, lesion):
    pages = [Image.fromarray(np.zeros(SHAPE, np.uint8)), Image.fromarray((lesion * 255).astype(np.uint8))]
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    assert np.array_equal(read_mask(tmp_path / "pages.tif", SHAPE), lesion)


def test_a_lossy_dicom_mask_is_refused_like_a_jpeg(tmp_path, lesion):
    _dicom_image(tmp_path / "mask.dcm", (lesion * 255).astype(np.uint8))
    ds = pydicom.dcmread(tmp_path / "mask.dcm")
    ds.LossyImageCompression = "01"  # as a lossy compression leaves it, whatever the syntax now
    ds.save_as(tmp_path / "lossy.dcm", enforce_file_format=True)
    with pytest.raises(ValueError, match="lossy compressed DICOM mask"):
        read_mask(tmp_path / "lossy.dcm", SHAPE)


def test_a_file_of_no_kind_says_what_a_mask_may_be(tmp_path, lesion):
    Image.fromarray((lesion * 255).astype(np.uint8)).save(tmp_path / "m.png")
    (tmp_path / "m.png").rename(tmp_path / "m.mask")  # an image file without its suffix
    with pytest.raises(ValueError, match=r"not a \.npy array, an image file \(\.png"):
        read_mask(tmp_path / "m.mask", SHAPE)
