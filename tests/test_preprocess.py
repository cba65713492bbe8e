"""Preprocessing: intensity, orientation, crop, resize, and the exact way back."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from scipy import ndimage

from explain.preprocess import Geometry, breast_mask, preprocess


def synthetic(shape=(600, 480), chest_right=False, blob=(300, 140, 20), bits=12, seed=0):
    """A half-ellipse 'breast' against the chest wall, a bright blob, an air background."""
    rng = np.random.default_rng(seed)
    rows, cols = shape
    y, x = np.mgrid[:rows, :cols]
    cy, ry, rx = rows * 0.5, rows * 0.42, cols * 0.6
    breast = ((y - cy) / ry) ** 2 + (x / rx) ** 2 <= 1.0
    img = np.where(breast, 1500 + 300 * rng.random(shape), 60 + 20 * rng.random(shape))
    br, bc, rad = blob
    blob_mask = (y - br) ** 2 + (x - bc) ** 2 <= rad ** 2
    img[blob_mask] += 1500
    if chest_right:
        img, breast, blob_mask = img[:, ::-1], breast[:, ::-1], blob_mask[:, ::-1]
    return np.clip(img, 0, 2 ** bits - 1).astype(np.uint16), breast.copy(), blob_mask.copy()


CASES = [
    # source shape, chest wall on the right, input size
    ((600, 480), False, (384, 256)),    # downsample
    ((600, 480), True, (384, 256)),     # flip + downsample
    ((300, 240), True, (512, 416)),     # flip + upsample
    ((1000, 700), True, (256, 208)),    # strong downsample
    ((4096, 3328), True, (384, 256)),   # the largest mammogram
]


@pytest.mark.parametrize("shape,right,size", CASES)
def test_points_round_trip_exactly(shape, right, size):
    img, _, _ = synthetic(shape, right, blob=(shape[0] // 2, shape[1] // 4, shape[0] // 30))
    geo = preprocess(img, size).geometry
    assert geo.flipped == right
    pts = np.array([[0, 0], [shape[0] - 1, shape[1] - 1], [12.25, 99.5], [shape[0] / 2, 3]])
    back = geo.points_to_source(geo.points_to_input(pts))
    np.testing.assert_allclose(back, pts, atol=1e-9)
    # And each lands where the image goes: a square's centre follows it through to_input
    # (a shift of one source pixel is one whole `scale` away; it lands within a tenth of one).
    for r, c in ((shape[0] // 2, shape[1] // 4), (shape[0] // 3, shape[1] // 6)):
        c = shape[1] - 1 - c if right else c
        square = np.zeros(shape, np.float32)
        square[r - 8: r + 9, c - 8: c + 9] = 1.0
        centre = np.array(ndimage.center_of_mass(geo.to_input(square, mode="area")))
        assert np.all(np.abs(centre - geo.points_to_input([[r, c]])[0]) < 0.1 * np.array(geo.scale))


@pytest.mark.parametrize("shape,right,size", CASES)
def test_blob_maps_forward_and_back_onto_its_pixels(shape, right, size):
    r, c, rad = shape[0] // 2, shape[1] // 4, max(shape[0] // 15, 12)
    img, breast, blob = synthetic(shape, right, blob=(r, c, rad))
    pre = preprocess(img, size)
    geo = pre.geometry
    # Forward: the blob lands where the point mapping says, and is the bright spot there.
    on_input = geo.to_input(blob)
    (ri, ci), = geo.points_to_input([[r, shape[1] - 1 - c if right else c]])
    assert on_input[int(round(ri)), int(round(ci))] > 0.9
    tissue = pre.image[0].numpy()[on_input == 0]  # the blob (3000+) is brighter than any tissue (< 1800)
    assert pre.image[0, int(round(ri)), int(round(ci))] > tissue.max()
    # Back: thresholding the returned map gives the same pixels, up to the boundary
    # band that one input pixel covers in the source (1 / scale source pixels).
    back = geo.to_source(on_input) >= 0.5
    band = int(np.ceil(1.0 / min(geo.scale))) + 1
    from scipy import ndimage

    inner = ndimage.binary_erosion(blob, iterations=band)
    outer = ndimage.binary_dilation(blob, iterations=band)
    assert back[inner].all(), "pixels well inside the blob must come back"
    assert not back[~outer].any(), "nothing well outside the blob may come back"
    iou = (back & blob).sum() / (back | blob).sum()
    assert iou > 0.85
    cm_a, cm_b = ndimage.center_of_mass(blob), ndimage.center_of_mass(back)
    assert np.hypot(cm_a[0] - cm_b[0], cm_a[1] - cm_b[1]) < 0.5 / min(geo.scale) + 0.5


def test_upsampling_round_trip_is_pixel_exact():
    """Source smaller than the input: nearest back-mapping returns exactly the blob."""
    img, _, blob = synthetic((200, 160), True, blob=(100, 40, 9))
    geo = preprocess(img, (512, 416)).geometry
    assert min(geo.scale) > 1
    back = geo.to_source(geo.to_input(blob, mode="nearest"), mode="nearest") > 0.5
    r0, r1, c0, c1 = geo.crop
    assert np.array_equal(back, blob)


def test_identity_geometry_is_lossless():
    geo = Geometry((50, 40), True, (0, 50, 0, 40), (50, 40), (0, 0), (50, 40))
    a = np.random.default_rng(1).random((50, 40)).astype(np.float32)
    np.testing.assert_array_equal(geo.to_input(a), a[:, ::-1])
    np.testing.assert_array_equal(geo.to_source(geo.to_input(a)), a)


def test_a_one_pixel_pattern_shrunk_from_detector_size_averages_out():
    """Shrinking ~10.7 times without antialiasing samples a checkerboard between 2 pixels:
    moire from 0.28 to 0.72. Area mode averages each input pixel's footprint: 0.5 throughout."""
    geo = Geometry((4096, 3328), False, (0, 4096, 0, 3328), (384, 312), (0, 0), (384, 312))
    rows, cols = np.indices(geo.source_shape)
    shrunk = geo.to_input(((rows + cols) % 2).astype(np.float32), mode="area")
    assert np.abs(shrunk - 0.5).max() < 0.02


def test_monochrome1_gives_the_same_input_as_monochrome2():
    img, _, _ = synthetic((600, 480), False)
    inverted = (4095 - img.astype(np.int32)).astype(np.uint16)
    a = preprocess(img, (384, 256), "MONOCHROME2")
    b = preprocess(inverted, (384, 256), "MONOCHROME1")
    assert a.geometry == b.geometry
    assert torch.allclose(a.image, b.image, atol=1e-5)


def test_laterality_decides_the_side_where_the_image_does_not():
    """A breast as tall at both edges (a wide field, or a spot view): the image cannot say
    which side the chest wall is on, so ImageLaterality does (R: flipped)."""
    rng = np.random.default_rng(0)
    img = (60 + 20 * rng.random((300, 240))).astype(np.uint16)
    img[20:280, :] = (1500 + 300 * rng.random((260, 240))).astype(np.uint16)
    assert not preprocess(img, (256, 208), laterality="L").geometry.flipped
    assert preprocess(img, (256, 208), laterality="R").geometry.flipped


def test_laterality_gives_one_canonical_orientation():
    left, _, _ = synthetic((600, 480), False)
    right = left[:, ::-1].copy()
    a, b = preprocess(left, (384, 256), laterality="L"), preprocess(right, (384, 256), laterality="R")
    assert not a.geometry.flipped and b.geometry.flipped
    assert torch.allclose(a.image, b.image, atol=1e-5)
    # Chest wall on the left: the left columns are breast, the right ones padding/air.
    assert a.breast[0, :, :5].mean() > 0.5 and float(a.image[0, :, -3:].max()) == 0.0


@pytest.mark.parametrize("right", [False, True])
@pytest.mark.parametrize("air", ["all round", "chest-wall strip", "top and bottom"])
def test_air_an_export_adds_around_the_breast_does_not_change_the_input(right, air):
    """Detectors and exports differ in how much air they leave around the breast; the
    crop is the breast's own box, so the classifier sees the same input."""
    img, _, _ = synthetic((600, 480), chest_right=right)
    widths = {"all round": 60, "chest-wall strip": ((0, 0), (0, 20) if right else (20, 0)),
              "top and bottom": ((150, 150), (0, 0))}[air]
    a = preprocess(img, (384, 256))
    b = preprocess(np.pad(img, widths, constant_values=int(img.min())), (384, 256))
    assert a.geometry.resized == b.geometry.resized and a.geometry.pad == b.geometry.pad
    assert float((a.image - b.image).abs().max()) < 1e-5


@pytest.mark.parametrize("right", [False, True])
def test_chest_wall_side_is_found_with_air_all_around_and_no_laterality(right):
    """Some exports pad the image with air, so the breast touches no edge; without a
    laterality tag the side must still come from the breast's own shape."""
    img, _, _ = synthetic((600, 480), chest_right=right)
    padded = np.pad(img, 60, constant_values=int(img.min()))
    assert preprocess(padded, (384, 256), laterality=None).geometry.flipped == right
    assert preprocess(padded, (384, 256), laterality="R" if not right else "L").geometry.flipped == right


@pytest.mark.parametrize("right", [False, True])
def test_a_burned_in_label_beside_the_breast_does_not_reach_the_classifier(right):
    """Sites burn a label ('L MLO', a bright box) into the air beside the breast; the
    classifier never saw one in training, so preprocessing must give it air there."""
    img, _, _ = synthetic((600, 480), chest_right=right)
    labelled = img.copy()
    box = (slice(60, 96), slice(200, 280))  # air inside the breast's bounding box, either side
    labelled[box] = 4095
    labelled[70:86, 210:270] = 0  # letters cut out
    clean, marked = preprocess(img, (384, 256)), preprocess(labelled, (384, 256))
    # The label's values move Otsu's threshold within this image's flat air, so the
    # crop may move by a few pixels; the label itself must be air on the input.
    assert np.abs(np.subtract(marked.geometry.crop, clean.geometry.crop)).max() <= 6
    footprint = np.zeros(img.shape)
    footprint[box] = 1
    on_input = marked.geometry.to_input(footprint)
    assert on_input.sum() > 10 and float(marked.image[0][on_input > 0].max()) == 0.0


@pytest.mark.parametrize("right", [False, True])
def test_collimated_edges_are_air_and_leave_the_breast_as_it_was(right):
    """Unexposed strips at the collimated edges are bright in display; left in, they join
    the breast (here it touches the top and bottom) and the crop and scaling follow them."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:600, :480]
    breast = ((y - 300) / 330) ** 2 + (x / 300) ** 2 <= 1.0  # touches the top and bottom edges
    img = np.where(breast, 1500 + 300 * rng.random(breast.shape), 60 + 20 * rng.random(breast.shape))
    framed = img.copy()
    strips = np.zeros(img.shape, bool)
    strips[:12], strips[-12:], strips[:, -12:] = True, True, True
    framed[strips] = 4000 + 5 * rng.random(int(strips.sum()))
    if right:
        img, framed, strips = img[:, ::-1], framed[:, ::-1], strips[:, ::-1]
    clean, marked = preprocess(img.astype(np.uint16), (384, 256)), preprocess(framed.astype(np.uint16), (384, 256))
    # The side strip does not join the breast: the crop ends where the breast does. (Top
    # and bottom, the strips hide 12 rows of breast, so the breast is that much shorter.)
    assert abs(marked.geometry.crop[3] - clean.geometry.crop[3]) <= 6
    on_input = marked.geometry.to_input(strips.astype(np.float32))
    assert on_input.sum() > 10 and float(marked.image[0][on_input > 0.99].max()) == 0.0
    # The strips do not move the breast's intensity scaling either.
    breast_mean = [float(pre.image[0][pre.breast[0] > 0.99].mean()) for pre in (clean, marked)]
    assert abs(breast_mean[0] - breast_mean[1]) < 0.01


def test_intensity_range_crop_and_breast_coverage():
    img, breast, _ = synthetic((600, 480), True)
    pre = preprocess(img, (384, 256))
    assert pre.image.shape == (1, 384, 256) and pre.image.dtype == torch.float32
    assert float(pre.image.min()) >= 0.0 and float(pre.image.max()) <= 1.0
    r0, r1, c0, c1 = pre.geometry.crop
    # The crop holds the whole breast and little else.
    flipped = breast[:, ::-1]
    assert flipped[r0:r1, c0:c1].sum() == flipped.sum()
    assert (r1 - r0) * (c1 - c0) < 0.8 * breast.size
    back = pre.geometry.to_source(pre.breast[0]) > 0.5
    assert (back == breast).mean() > 0.99


def test_the_breasts_1st_and_99_8th_percentiles_map_to_0_and_1():
    """README: the breast's 1st / 99.8th percentiles to [0, 1]. Inside the breast the input is
    that linear map of the display values, resampled as the geometry says."""
    from explain.preprocess import breast_mask, display_values

    img, _, _ = synthetic((600, 480), False)
    pre = preprocess(img, (384, 256))
    values = display_values(img, "MONOCHROME2", False)
    mask = breast_mask(values)
    lo, hi = np.percentile(values[mask], (1.0, 99.8))
    expected = pre.geometry.to_input(np.clip((values - lo) / (hi - lo), 0, 1).astype(np.float32), mode="area")
    inner = ndimage.binary_erosion(pre.breast[0].numpy() > 0.99, iterations=3)
    assert inner.sum() > 1000
    assert float(np.abs(pre.image[0].numpy()[inner] - expected[inner]).max()) < 1e-4


def test_the_resized_breast_is_centred_vertically():
    """Its rows are padded equally above and below (a pixel apart at most), as in training."""
    img, _, _ = synthetic((600, 480), False)
    for size in ((512, 128), (384, 96)):  # narrow inputs: the breast's width decides the scale
        geo = preprocess(img, size).geometry
        below = size[0] - geo.pad[0] - geo.resized[0]
        assert abs(geo.pad[0] - below) <= 1, (size, geo)


def test_an_input_map_goes_back_smoothly():
    """to_source interpolates a map (bilinear): a ramp on the input grid comes back without
    the steps of nearest-neighbour blocks (about 2.3 source pixels each here)."""
    img, _, _ = synthetic((600, 480), False)
    geo = preprocess(img, (256, 208)).geometry
    ramp = np.tile(np.linspace(0, 1, 208, dtype=np.float32), (256, 1))
    back = geo.to_source(ramp)
    r0, r1, c0, c1 = geo.crop
    steps = np.abs(np.diff(back[(r0 + r1) // 2, c0 + 5: c1 - 5]))
    assert steps.max() < 0.6 / 207  # an input step (1 / 207) spread over its 2.3 source pixels


def test_orientation_by_laterality_and_bad_arguments():
    img, _, _ = synthetic((600, 480), False)
    assert preprocess(img, (384, 256), laterality="R", orientation="laterality").geometry.flipped
    with pytest.raises(ValueError, match="photometric"):
        preprocess(img, (384, 256), "RGB")
    with pytest.raises(ValueError, match="2-D"):
        preprocess(np.zeros((2, 8, 8)), (384, 256))
    geo = preprocess(img, (384, 256)).geometry
    with pytest.raises(ValueError, match="input size"):
        geo.to_source(np.zeros((10, 10)))


def test_phantom_dicom_through_reader(phantom_dir, tmp_path):
    from cfia.dicom_io import ImageReadError, read_file

    src = read_file(phantom_dir / "img00000.dcm")
    assert src.photometric == "MONOCHROME2" and src.laterality in ("L", "R") and src.spacing
    pre = preprocess(src.pixels, (384, 256), src.photometric, src.laterality)
    assert pre.image.shape == (1, 384, 256)
    (tmp_path / "junk.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(ImageReadError, match="junk.dcm"):
        read_file(tmp_path / "junk.dcm")


@pytest.mark.parametrize("photometric,for_processing", [("MONOCHROME2", False), ("MONOCHROME1", False),
                                                        ("MONOCHROME2", True)])
def test_nothing_of_a_phantom_is_taken_for_a_collimated_edge(photometric, for_processing):
    """The chest-wall column of an MLO (pectoral muscle and tissue, bright but textured)
    and the air are not unexposed strips: only flat bright lines are."""
    from skimage.filters import threshold_otsu

    from cfia.dicom_io import from_dataset
    from explain.preprocess import collimated_edges, display_values
    from phantom.dicom import to_dataset
    from phantom.generate import PhantomOptions, make_one

    opts = PhantomOptions(size=(512, 416), for_processing=for_processing)
    for index in range(6):
        mg = make_one(5, index, opts)
        src = from_dataset(to_dataset(mg, f"c:{index}", index, photometric=photometric, for_processing=for_processing))
        values = display_values(src.pixels, src.photometric, src.for_processing)
        assert not collimated_edges(values, threshold_otsu(values)).any(), (index, mg.view)


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_air_padded_with_a_white_value_is_read_as_air(photometric):
    """Vendors may pad the air with a value that displays white and declare it in
    PixelPaddingValue; read as pixels it would look like tissue around the breast."""
    from cfia.dicom_io import from_dataset
    from explain.preprocess import display_values
    from phantom.dicom import to_dataset
    from phantom.generate import PhantomOptions, make_one

    mg = make_one(31, 7, PhantomOptions(size=(512, 416), positive_fraction=1.0))
    ds = to_dataset(mg, "pad:7", 7, photometric=photometric)
    clean = from_dataset(ds)
    stored = ds.pixel_array.copy()
    pad = ~ndimage.binary_dilation(mg.breast, iterations=6)
    white = 0 if photometric == "MONOCHROME1" else 4095
    stored[pad] = white
    ds.PixelData, ds.PixelPaddingValue = stored.tobytes(), white
    padded = from_dataset(ds)
    assert padded.pixels.dtype == clean.pixels.dtype
    shown = display_values(padded.pixels, photometric, False)
    assert np.all(shown[pad] == shown.min()) and np.array_equal(padded.pixels[~pad], stored[~pad])
    a = preprocess(clean.pixels, (512, 352), clean.photometric, clean.laterality)
    b = preprocess(padded.pixels, (512, 352), padded.photometric, padded.laterality)
    # Otsu's threshold moves with the air's values, so the crop may move by a pixel and
    # the resampling with it (0.013 here); the padding read as pixels gave 0.058.
    assert np.abs(np.subtract(a.geometry.crop, b.geometry.crop)).max() <= 2
    assert float((a.image - b.image).abs().mean()) < 0.03


@pytest.mark.parametrize("stored", ["MONOCHROME1 sign -1", "MONOCHROME2 sign -1", "MONOCHROME1 sign +1",
                                    "MONOCHROME1 no sign", "MONOCHROME1 sign -1 through a Modality LUT"])
def test_for_processing_linear_follows_its_sign_and_is_inverted_about_the_stored_range(stored):
    """PS3.3 C.8.11.3.1.2: LIN sign +1, lower values = less X-ray intensity (raw as it
    comes); -1, higher values = less (stored inverted). The sign decides, the photometric
    interpretation only without one; inverted values are undone about the stored range's top
    (2^BitsStored - 1), not the image's maximum, which shifted the -log (mean |diff| 0.15)."""
    from cfia.dicom_io import from_dataset
    from phantom.dicom import to_dataset
    from phantom.generate import PhantomOptions, make_one

    mg = make_one(15, 0, PhantomOptions(size=(512, 416), positive_fraction=1.0, for_processing=True))
    raw = to_dataset(mg, "lin:15", 15, for_processing=True)
    assert (raw.PhotometricInterpretation, raw.PixelIntensityRelationshipSign) == ("MONOCHROME2", 1)
    ds = to_dataset(mg, "lin:15", 15, for_processing=True, photometric="MONOCHROME1") \
        if stored.startswith("MONOCHROME1") else raw.copy()
    if stored == "MONOCHROME2 sign -1":
        ds.PixelData = (4095 - raw.pixel_array.astype(np.int32)).astype(np.uint16).tobytes()
        ds.PixelIntensityRelationshipSign = -1
    if stored == "MONOCHROME1 sign +1":  # the values raw, the sign says so: the sign wins
        ds.PixelData = raw.PixelData
        ds.PixelIntensityRelationshipSign = 1
    if stored == "MONOCHROME1 no sign":
        del ds.PixelIntensityRelationshipSign
    if stored == "MONOCHROME1 sign -1 through a Modality LUT":  # outputs 16 x stored: the LUT's top, not 4095
        from pydicom.dataset import Dataset

        lut = Dataset()
        lut.LUTDescriptor, lut.ModalityLUTType = [4096, 0, 16], "US"
        lut.LUTData = [16 * v for v in range(4096)]
        ds.ModalityLUTSequence = [lut]
        del ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType
    a, b = from_dataset(raw).to_input((512, 352)), from_dataset(ds).to_input((512, 352))
    assert a.geometry == b.geometry
    # Through the LUT, -log(16 v + 1) is -log(v + 1) shifted but for the + 1: 1e-4 (blank before).
    assert float((a.image - b.image).abs().max()) < (1e-3 if "LUT" in stored else 1e-5)


@pytest.mark.parametrize("dense", ["bright", "dark", "dark-no-sign"])
def test_for_processing_stored_as_log_is_not_logged_twice(dense):
    """A For Processing image may come already logarithmic (PixelIntensityRelationship
    LOG), dense tissue bright (sign -1) or dark (sign +1, or no sign and MONOCHROME1); it
    must reach the classifier as the linear raw image of the same exposure does."""
    from cfia.dicom_io import from_dataset
    from phantom.dicom import to_dataset
    from phantom.generate import PhantomOptions, make_one

    mg = make_one(31, 7, PhantomOptions(size=(512, 416), positive_fraction=1.0, for_processing=True))
    ds = to_dataset(mg, "log:7", 7, for_processing=True)
    assert ds.PixelIntensityRelationship == "LIN"
    linear = from_dataset(ds)
    logged = np.log(ds.pixel_array.astype(np.float64) + 1.0)
    logged = (logged - logged.min()) / (logged.max() - logged.min()) * 4095  # air brightest
    if dense == "bright":
        logged = 4095 - logged
    ds.PixelData = np.round(logged).astype(np.uint16).tobytes()
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = -1 if dense == "bright" else 1
    if dense == "dark-no-sign":
        del ds.PixelIntensityRelationshipSign
        ds.PhotometricInterpretation = "MONOCHROME1"
    src = from_dataset(ds)
    assert not src.for_processing
    a = preprocess(linear.pixels, (512, 352), linear.photometric, linear.laterality, linear.for_processing)
    b = preprocess(src.pixels, (512, 352), src.photometric, src.laterality, src.for_processing)
    assert a.geometry == b.geometry
    assert float((a.image - b.image).abs().mean()) < 0.01  # logged twice: 0.21-0.29; inverted: 0.46


def test_rescale_is_applied_and_other_modalities_are_refused():
    """A CR, DX or secondary-capture mammogram may carry a Rescale Slope/Intercept (a
    negative slope stores it inverted); a CT is not a mammogram at all."""
    from cfia.dicom_io import ImageReadError, from_dataset
    from phantom.dicom import to_dataset
    from phantom.generate import PhantomOptions, make_one

    ds = to_dataset(make_one(31, 7, PhantomOptions(size=(256, 208), positive_fraction=1.0)), "rs:7", 7)
    plain = from_dataset(ds)
    ds.Modality = "DX"
    ds.PixelData = (4095 - ds.pixel_array).astype(np.uint16).tobytes()
    ds.RescaleSlope, ds.RescaleIntercept = -1, 4095
    rescaled = from_dataset(ds)
    np.testing.assert_array_equal(rescaled.pixels, plain.pixels)
    ds.Modality = "CT"
    with pytest.raises(ImageReadError, match="Modality CT; not a mammogram"):
        from_dataset(ds)


def test_monochrome2_through_an_inverse_presentation_lut_is_read_as_it_displays():
    """A CR or secondary capture may store the image inverted and say so with an INVERSE
    Presentation LUT on MONOCHROME2: a viewer shows it right, so must cfia read it."""
    from cfia.dicom_io import from_dataset
    from phantom.dicom import to_dataset
    from phantom.generate import PhantomOptions, make_one

    ds = to_dataset(make_one(31, 7, PhantomOptions(size=(256, 208), positive_fraction=1.0)), "inv:7", 7)
    plain = from_dataset(ds)
    a = preprocess(plain.pixels, (256, 176), plain.photometric, plain.laterality, plain.for_processing)
    ds.PixelData = (4095 - ds.pixel_array).astype(np.uint16).tobytes()
    ds.PresentationLUTShape = "INVERSE"
    stored_inverted = from_dataset(ds)
    assert stored_inverted.photometric == "MONOCHROME1"
    b = preprocess(stored_inverted.pixels, (256, 176), stored_inverted.photometric, stored_inverted.laterality,
                   stored_inverted.for_processing)
    assert a.geometry == b.geometry and float((a.image - b.image).abs().max()) < 0.01


@pytest.mark.parametrize("keyword, value, message", [
    ("RescaleSlope", "1,5", "RescaleSlope '1,5' is not a number"),  # a decimal comma, as exports write it
    ("RescaleSlope", "0", "RescaleSlope 0 would give every pixel the same value"),
    ("PixelPaddingValue", [0, 1], "PixelPaddingValue [0, 1] is not a number"),
])
def test_a_header_number_that_cannot_be_read_is_an_image_read_error(tmp_path, keyword, value, message):
    """Not a traceback, and in the node a permanent failure, not one retried."""
    import re

    import pydicom

    from cfia.dicom_io import ImageReadError, from_dataset
    from phantom.dicom import to_dataset
    from phantom.generate import PhantomOptions, make_one

    ds = to_dataset(make_one(31, 7, PhantomOptions(size=(256, 208))), "num:7", 7)
    if keyword == "PixelPaddingValue":
        ds.add_new(keyword, "US", value)
    else:  # pydicom will not hold '1,5' as DS: write '1.5', then change the file's bytes
        ds.add_new(keyword, "DS", value.replace(",", "."))
    path = tmp_path / "num.dcm"
    ds.save_as(path, enforce_file_format=True)
    if keyword == "RescaleSlope" and "," in value:
        data = path.read_bytes()
        element = b"\x28\x00\x53\x10DS\x04\x001.5 "  # (0028,1053) RescaleSlope, explicit VR LE
        assert data.count(element) == 1
        path.write_bytes(data.replace(element, element.replace(b"1.5", b"1,5")))
    with pytest.raises(ImageReadError, match=re.escape(message)):
        from_dataset(pydicom.dcmread(path), "num.dcm")


def test_a_blank_image_is_refused_not_explained():
    from cfia.dicom_io import ImageReadError, from_dataset
    from phantom.dicom import to_dataset
    from phantom.generate import PhantomOptions, make_one

    ds = to_dataset(make_one(31, 7, PhantomOptions(size=(256, 208))), "blank:7", 7)
    ds.PixelData = np.full((256, 208), 1000, np.uint16).tobytes()
    with pytest.raises(ImageReadError, match="every pixel has the value 1000; a blank image has no breast"):
        from_dataset(ds, "blank.dcm")


def test_a_dataset_without_the_file_header_is_named_with_the_way_to_fix_it(tmp_path):
    """Some old exports save the bare dataset: no preamble, no 'DICM'. The error says so and how to
    add the header; dcmtk's dcmconv, as it says, writes a file that then reads."""
    import shutil
    import subprocess

    from pydicom.filebase import DicomFileLike
    from pydicom.filewriter import write_dataset

    from cfia.dicom_io import ImageReadError, read_dataset
    from phantom.dicom import to_dataset
    from phantom.generate import PhantomOptions, make_one

    ds = to_dataset(make_one(31, 7, PhantomOptions(size=(256, 208))), "raw:7", 7)
    del ds.file_meta
    raw = tmp_path / "raw.dcm"
    with open(raw, "wb") as fh:
        out = DicomFileLike(fh)
        out.is_little_endian, out.is_implicit_VR = True, True
        write_dataset(out, ds)
    with pytest.raises(ImageReadError, match=r"raw.dcm: not a DICOM file: no 'DICM' after a 128-byte preamble .*"
                                             r"dcmtk's `dcmconv IN OUT` writes it with one"):
        read_dataset(raw)
    if shutil.which("dcmconv"):  # CI installs dcmtk
        subprocess.run(["dcmconv", str(raw), str(tmp_path / "fixed.dcm")], check=True)
        assert read_dataset(tmp_path / "fixed.dcm").pixel_array.shape == (256, 208)


def test_float_pixels_that_are_nan_or_infinite_are_refused_not_explained():
    """Float Pixel Data is read; a NaN or an infinity in it failed in the breast mask's threshold."""
    from cfia.dicom_io import ImageReadError, from_dataset
    from phantom.dicom import to_dataset
    from phantom.generate import PhantomOptions, make_one

    ds = to_dataset(make_one(31, 7, PhantomOptions(size=(256, 208))), "float:7", 7)
    pixels = ds.pixel_array.astype(np.float32)
    del ds.PixelData, ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    ds.BitsAllocated = 32
    ds.FloatPixelData = pixels.tobytes()
    assert from_dataset(ds, "float.dcm").pixels.shape == (256, 208)
    for bad in (np.nan, np.inf, -np.inf):
        spoilt = pixels.copy()
        spoilt[5, 5:7] = bad
        ds.FloatPixelData = spoilt.tobytes()
        with pytest.raises(ImageReadError, match="float.dcm: 2 pixel.s. are NaN or infinite; not a mammogram"):
            from_dataset(ds, "float.dcm")


def test_a_header_declaring_a_huge_image_is_refused_before_decoding():
    """A small RLE payload may declare 65535 x 65535 pixels: decoding would take gigabytes."""
    from pydicom.uid import RLELossless

    from cfia.dicom_io import ImageReadError, from_dataset
    from phantom.dicom import to_dataset
    from phantom.generate import PhantomOptions, make_one

    ds = to_dataset(make_one(31, 7, PhantomOptions(size=(256, 208))), "huge:7", 7)
    ds.compress(RLELossless)
    ds.Rows = ds.Columns = 65535
    with pytest.raises(ImageReadError, match="65535x65535x1 pixels; at most one frame of 8192x8192"):
        from_dataset(ds, "huge.dcm")


def test_a_single_valued_pixel_spacing_is_no_spacing():
    """Some exports write one value; it is neither a row nor a column spacing."""
    from cfia.dicom_io import from_dataset
    from phantom.dicom import to_dataset
    from phantom.generate import PhantomOptions, make_one

    ds = to_dataset(make_one(31, 7, PhantomOptions(size=(256, 208))), "sp:7", 7)
    magnification = float(ds.EstimatedRadiographicMagnificationFactor)
    assert from_dataset(ds).spacing == pytest.approx([float(v) / magnification for v in ds.ImagerPixelSpacing])
    ds.ImagerPixelSpacing = "0.1"
    assert from_dataset(ds).spacing is None


def test_a_fatty_periphery_below_otsu_is_not_blanked_as_air():
    """The second generator's dense breasts put Otsu's threshold between fat and gland; the
    fat at the thin periphery is still breast, so the grown mask must cover it."""
    from explain.preprocess import SKIN_LINE_GROW, breast_masks
    from phantom.generate import PhantomOptions, make_one

    opts = PhantomOptions(size=(512, 416), generator="compartments")
    for i in range(6):
        mg = make_one(5000, i, opts)
        otsu, grown = breast_masks(mg.pixels.astype(np.float32), (0, SKIN_LINE_GROW))
        assert (mg.breast & ~otsu).mean() > 0.003                 # Otsu alone misses the periphery
        assert (mg.breast & ~grown).sum() <= 0.001 * mg.breast.sum(), i


@pytest.mark.parametrize("air_noise", [20, 0])  # 0: air clipped to one value
def test_crop_keeps_a_lesion_in_the_fatty_periphery_of_a_dense_breast(air_noise):
    """Otsu's threshold falls between fat and gland in a dense breast: the crop must
    still keep the fat beyond it, or a lesion there never reaches the classifier."""
    rng = np.random.default_rng(3)
    rows, cols = 600, 480
    y, x = np.mgrid[:rows, :cols]
    r = np.hypot((y - rows / 2) / (rows * 0.42), x / (cols * 0.6))
    img = np.where(r <= 1.0, 450 + 60 * rng.random((rows, cols)), 60 + air_noise * rng.random((rows, cols)))  # fat
    img = np.where(r <= 0.8, 1500 + 300 * rng.random((rows, cols)), img)  # dense gland
    lesion = np.hypot(y - rows / 2, x - 0.93 * 0.6 * cols) <= 7  # in the fat, near the skin line
    img[lesion] += 500
    pre = preprocess(img.astype(np.uint16), (384, 256))
    r0, r1, c0, c1 = pre.geometry.crop
    assert c1 > np.nonzero(lesion)[1].max() + 3, pre.geometry.crop
    assert pre.geometry.to_input(lesion.astype(np.float32)).sum() > 0


def test_non_square_pixels_keep_a_round_lesion_round():
    """Columns half as wide as rows are high (spacing 0.1 x 0.05 mm): a round lesion spans
    twice as many columns as rows in the source, and as many of each in the input."""
    from cfia.dicom_io import SourceImage

    rows, cols = 600, 960
    y, x = np.mgrid[:rows, :cols]
    breast = ((y - rows / 2) / (rows * 0.42)) ** 2 + (x / (cols * 0.6)) ** 2 <= 1.0
    img = np.where(breast, 1500 + 300 * np.random.default_rng(0).random((rows, cols)), 60.0)
    lesion = ((y - 300) / 20.0) ** 2 + ((x - 300) / 40.0) ** 2 <= 1.0  # 4 mm across both ways
    img[lesion] += 1500
    src = SourceImage(img.astype(np.uint16), "MONOCHROME2", "L", "CC", (0.1, 0.05), False)
    on_input = src.to_input((384, 256)).geometry.to_input(lesion.astype(np.float32)) > 0.5
    r, c = np.nonzero(on_input)
    height, width = r.max() - r.min() + 1, c.max() - c.min() + 1
    assert abs(height - width) <= 1, (height, width)
    square = SourceImage(img.astype(np.uint16), "MONOCHROME2", "L", "CC", (0.1, 0.1), False)
    r, c = np.nonzero(square.to_input((384, 256)).geometry.to_input(lesion.astype(np.float32)) > 0.5)
    assert (c.max() - c.min() + 1) >= 1.8 * (r.max() - r.min() + 1)  # square pixels: as stored


def test_pixel_aspect_ratio_keeps_the_breast_shape_where_no_spacing_is_given():
    """A secondary capture or scanned film may state only PixelAspectRatio (vertical\\horizontal):
    every second column dropped, the breast must reach the classifier as wide as with spacing."""
    from cfia.dicom_io import from_dataset
    from phantom.dicom import to_dataset
    from phantom.generate import PhantomOptions, make_one

    mg = make_one(15, 0, PhantomOptions(size=(512, 416), positive_fraction=1.0))
    ds = to_dataset(mg, "aspect:15", 15)
    narrow = ds.pixel_array[:, ::2].copy()
    ds.PixelData, ds.Columns = narrow.tobytes(), narrow.shape[1]
    spacing = [float(v) for v in ds.ImagerPixelSpacing]
    ds.ImagerPixelSpacing = [spacing[0], 2 * spacing[1]]
    with_spacing = from_dataset(ds).to_input((512, 352)).geometry
    del ds.ImagerPixelSpacing
    ds.PixelAspectRatio = [1, 2]
    src = from_dataset(ds)
    assert src.spacing is None and src.to_input((512, 352)).geometry == with_spacing
    del ds.PixelAspectRatio
    squashed = from_dataset(ds).to_input((512, 352)).geometry
    assert squashed.resized[1] < 0.6 * with_spacing.resized[1] * squashed.resized[0] / with_spacing.resized[0]


@pytest.mark.parametrize("shape", [(2294, 1914), (4096, 3328)])
def test_the_breast_mask_lies_on_the_breast_at_detector_size(shape):
    """The mask is segmented on every step-th pixel and repeated back: sampled at each
    block's first pixel it sat (step - 1) / 2 source pixels down and right (2 rows at
    2294x1914, 3.5 at 4096x3328); at the blocks' centres, within a pixel."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    breast = ((rows - shape[0] / 2) / (shape[0] * 0.4)) ** 2 + (cols / (shape[1] * 0.6)) ** 2 <= 1
    values = breast.astype(np.float32) + np.random.default_rng(0).normal(0, 0.01, shape).astype(np.float32)
    mask = breast_mask(values)
    offset = np.argwhere(mask).mean(0) - np.argwhere(breast).mean(0)
    assert np.abs(offset).max() < 1.0, offset


def _positive(for_processing=False, **kwargs):
    from phantom.dicom import to_dataset
    from phantom.generate import PhantomOptions, make_one

    mg = make_one(15, 0, PhantomOptions(size=(512, 416), positive_fraction=1.0, for_processing=for_processing))
    return to_dataset(mg, "hdr:15", 15, for_processing=for_processing, **kwargs)


def test_a_for_processing_class_without_presentation_intent_is_read_as_for_processing():
    """PresentationIntentType is Type 1 but some exports leave it out; read as For
    Presentation, a raw image reached the classifier inverted (its map in the air)."""
    from cfia.dicom_io import from_dataset

    ds = _positive(for_processing=True)
    bare = copy.deepcopy(ds)
    del bare.PresentationIntentType
    a, b = from_dataset(ds).to_input((512, 352)), from_dataset(bare).to_input((512, 352))
    assert a.geometry == b.geometry and float((a.image - b.image).abs().max()) == 0.0


@pytest.mark.parametrize("sop_class", ["1.2.840.10008.5.1.4.1.1.1.2.1", "1.2.840.10008.5.1.4.1.1.13.1.5"])
def test_every_for_processing_class_is_read_as_for_processing(sop_class):
    """Digital Mammography and Breast Projection X-Ray, For Processing, without the intent."""
    from cfia.dicom_io import from_dataset

    ds = _positive(for_processing=True)
    ds.SOPClassUID = sop_class
    del ds.PresentationIntentType
    assert from_dataset(ds).for_processing


def test_image_laterality_comes_before_laterality_and_a_scanned_films_spacing_is_read():
    """ImageLaterality is the image's own (Laterality, the series', may say otherwise); a
    digitised film carries NominalScannedPixelSpacing and neither of the others."""
    from cfia.dicom_io import from_dataset

    ds = _positive()
    ds.ImageLaterality, ds.Laterality = "R", "L"
    assert from_dataset(ds).laterality == "R"
    del ds.ImageLaterality
    assert from_dataset(ds).laterality == "L"
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.NominalScannedPixelSpacing = [0.05, 0.06]
    assert from_dataset(ds).spacing == (0.05, 0.06)


def test_a_presentation_intent_that_contradicts_the_sop_class_is_refused():
    from cfia.dicom_io import ImageReadError, from_dataset

    ds = _positive(for_processing=True)
    ds.PresentationIntentType = "FOR PRESENTATION"
    with pytest.raises(ImageReadError, match="PresentationIntentType FOR PRESENTATION contradicts its SOP class"):
        from_dataset(ds)


def test_a_high_bit_other_than_bits_stored_minus_one_is_refused():
    """pydicom keeps the low BitsStored bits whatever HighBit says: values stored in the
    upper bits would reach the classifier as garbage."""
    from cfia.dicom_io import ImageReadError, from_dataset

    ds = _positive()
    ds.PixelData = (ds.pixel_array.astype(np.uint16) << 4).tobytes()
    ds.HighBit = 15
    with pytest.raises(ImageReadError, match=r"HighBit 15 is not BitsStored - 1 \(11\)"):
        from_dataset(ds)


def test_padding_moved_by_lossy_compression_is_still_padding():
    """A lossy codec moves a few padding pixels off the padding value; exact matching left
    them as white specks around the breast (a positive call went negative)."""
    from pydicom.uid import JPEG2000

    from cfia.dicom_io import from_dataset
    from explain.preprocess import display_values

    from phantom.dicom import to_dataset
    from phantom.generate import PhantomOptions, make_one

    mg = make_one(15, 0, PhantomOptions(size=(512, 416), positive_fraction=1.0))
    ds = to_dataset(mg, "hdr:15", 15, photometric="MONOCHROME1")
    stored = ds.pixel_array.copy()
    pad = ~ndimage.binary_dilation(mg.breast, iterations=6)  # the air
    stored[pad] = 0  # padding that displays white
    ds.PixelPaddingValue = 0
    ds.PixelData = stored.tobytes()
    exact = from_dataset(ds)
    ds.compress(JPEG2000, j2k_cr=[5])
    ds.LossyImageCompression = "01"
    lossy = from_dataset(ds)
    moved = pad & (lossy.pixels != exact.pixels)
    assert moved.any()  # the codec did move padding pixels (to the air's value once read)
    assert np.array_equal(display_values(lossy.pixels, "MONOCHROME1", False)[pad],
                          display_values(exact.pixels, "MONOCHROME1", False)[pad])
    # A gateway that decompressed it keeps LossyImageCompression "01": still lossy padding.
    ds.decompress()
    assert str(ds.file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.1" and ds.LossyImageCompression == "01"
    again = from_dataset(ds)
    assert np.array_equal(display_values(again.pixels, "MONOCHROME1", False)[pad],
                          display_values(exact.pixels, "MONOCHROME1", False)[pad])


def test_a_padding_range_is_read_as_air():
    """PixelPaddingValue up to PixelPaddingRangeLimit: the whole range is padding, not only
    its first value (air padded 0..20 on a MONOCHROME1 image displays white)."""
    from cfia.dicom_io import from_dataset
    from explain.preprocess import display_values
    from phantom.dicom import to_dataset
    from phantom.generate import PhantomOptions, make_one

    mg = make_one(31, 7, PhantomOptions(size=(512, 416), positive_fraction=1.0))
    ds = to_dataset(mg, "range:7", 7, photometric="MONOCHROME1")
    stored = ds.pixel_array.copy()
    pad = ~ndimage.binary_dilation(mg.breast, iterations=6)
    stored[pad] = np.random.default_rng(0).integers(0, 21, int(pad.sum()))
    ds.PixelData, ds.PixelPaddingValue, ds.PixelPaddingRangeLimit = stored.tobytes(), 0, 20
    shown = display_values(from_dataset(ds).pixels, "MONOCHROME1", False)
    assert np.all(shown[pad] == shown.min())


def test_a_rescale_in_an_enhanced_files_functional_groups_is_applied():
    """Breast Projection X-Ray files carry the Modality LUT in Pixel Value Transformation;
    ignored, an inverting rescale showed the image inverted."""
    from pydicom.dataset import Dataset

    from cfia.dicom_io import from_dataset

    ds = _positive()
    plain = from_dataset(ds).to_input((512, 352))
    ds.PixelData = (4095 - ds.pixel_array.astype(np.int32)).astype(np.uint16).tobytes()
    for key in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
        if key in ds:
            delattr(ds, key)
    transform, shared = Dataset(), Dataset()
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = -1, 4095, "US"
    shared.PixelValueTransformationSequence = [transform]
    ds.SharedFunctionalGroupsSequence = [shared]
    rescaled = from_dataset(ds).to_input((512, 352))
    assert rescaled.geometry == plain.geometry and float((rescaled.image - plain.image).abs().max()) < 1e-5


def test_lossy_padding_is_not_grown_from_dense_tissue_at_the_padding_value():
    """Tissue that saturates at the padding value lies inside the breast: growing from it
    turned the tissue around it into air (lesion pixels among it) once the file said lossy."""
    from cfia.dicom_io import _padding
    from phantom.dicom import to_dataset
    from phantom.generate import PhantomOptions, make_one

    mg = make_one(15, 7, PhantomOptions(size=(512, 416), positive_fraction=1.0))
    x, breast = mg.pixels.astype(float), mg.breast
    low, high = np.percentile(x[breast], 0.5), np.percentile(x[breast], 99.5)
    stored = np.clip((x - low) / (high - low) * 4095, 0, 4095).astype(np.uint16)  # the densest 0.5 % at 4095
    stored[~breast] = 4095  # the air padded with the top value
    ds = to_dataset(mg, "sat:7", 7)
    ds.PixelData, ds.PixelPaddingValue = stored.tobytes(), 4095
    exact = _padding(stored, ds, "sat")
    ds.LossyImageCompression = "01"  # the same pixels, said to have been compressed once
    grown = _padding(stored, ds, "sat")
    assert np.array_equal(grown & breast, exact & breast)
