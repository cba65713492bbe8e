"""The synthetic mammograms: valid DICOM, realistic texture, honest lesions and masks."""
from __future__ import annotations

import csv
import hashlib

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from cfia.cli import main
from phantom import compartments
from phantom.generate import MANIFEST_COLUMNS, PhantomOptions, make_one, write_dataset
from phantom.lesions import ALL_KINDS, LESION_KINDS
from phantom.texture import power_law_noise, spectral_slope
from tests.conftest import dciodvfy_errors


def _manifest(folder):
    with (folder / "manifest.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_manifest_lists_every_image_with_its_mask(phantom_dir):
    rows = _manifest(phantom_dir)
    assert tuple(rows[0].keys()) == MANIFEST_COLUMNS
    assert len(rows) == 8
    assert {r["label"] for r in rows} == {"0", "1"}
    for r in rows:
        ds = pydicom.dcmread(phantom_dir / r["file"])
        assert ds.ImageLaterality == r["laterality"] and ds.ViewPosition == r["view"]
        if r["label"] == "1":
            mask = np.load(phantom_dir / r["mask"])
            assert mask.dtype == bool and mask.shape == (ds.Rows, ds.Columns) and mask.any()
            # The mask is where the lesion is: where the same image drawn without it differs most
            # (over a tenth of the largest change; the display mapping moves the rest a little).
            index = int(r["file"][3:8])
            bare = make_one(7, index, PhantomOptions(size=(512, 416)), lesion_gain=0.0).pixels
            change = np.abs(ds.pixel_array.astype(float) - bare)
            changed = change > 0.1 * change.max()
            near = ndimage.binary_dilation(mask, iterations=3)
            assert changed[mask].mean() > 0.7 and changed[~near].sum() == 0, r["file"]
            assert r["kind"] and set(r["kind"].split("+")) <= set(LESION_KINDS)
            # The drawn contrast in tissue s.d.: masses 0.8-2.5, calcifications 2.5-6.
            low = 2.5 if "calcifications" in r["kind"] else 0.8
            assert low <= float(r["contrast"]) <= 6.0, r
        else:
            assert r["mask"] == "" and r["kind"] == "" and r["contrast"] == ""


def test_files_are_mg_dicom_that_dciodvfy_accepts(phantom_dir):
    for r in _manifest(phantom_dir)[:3]:
        path = phantom_dir / r["file"]
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.2" and ds.Modality == "MG"
        assert 12 <= ds.BitsStored <= 16 and "ImagerPixelSpacing" in ds
        assert dciodvfy_errors(path) == []


@pytest.mark.parametrize("flags", [
    ["--for-processing"],
    ["--photometric", "MONOCHROME1", "--bits", "16"],
    ["--frame-of-reference", "--pixel-spacing", "--bits", "14"],
])
def test_variants_are_valid(tmp_path, flags):
    assert main(["phantom", "--out", str(tmp_path), "--count", "1", "--size", "256x208", "--quiet", *flags]) == 0
    ds = pydicom.dcmread(tmp_path / "img00000.dcm")
    assert dciodvfy_errors(tmp_path / "img00000.dcm") == []
    if "--for-processing" in flags:
        assert ds.SOPClassUID.endswith(".1.2.1") and ds.PresentationIntentType == "FOR PROCESSING"
    if "MONOCHROME1" in flags:
        assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.PresentationLUTShape == "INVERSE"


def test_same_seed_same_bytes_other_seed_other_image(tmp_path):
    opts = PhantomOptions(size=(256, 208))
    digests = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        write_dataset(tmp_path / name, 2, seed, opts)
        digests.append([hashlib.sha256((tmp_path / name / f).read_bytes()).hexdigest()
                        for f in ("img00000.dcm", "img00001.dcm")])
    assert digests[0] == digests[1]
    assert digests[0][0] != digests[2][0]


def test_power_law_noise_has_the_requested_slope():
    field = power_law_noise((512, 512), 3.0, np.random.default_rng(0))
    assert abs(spectral_slope(field[128:384, 128:384]) - 3.0) < 0.35


def _tissue_patch(mg, half=96):
    """The square patch of breast tissue farthest from the skin line."""
    pad = 4 * half
    depth = ndimage.distance_transform_edt(np.pad(mg.breast, pad, mode="edge"))[pad:-pad, pad:-pad]
    r, c = np.unravel_index(np.argmax(depth), depth.shape)
    r = int(np.clip(r, half, mg.breast.shape[0] - half))
    c = int(np.clip(c, half, mg.breast.shape[1] - half))
    sl = (slice(r - half, r + half), slice(c - half, c + half))
    assert mg.breast[sl].mean() > 0.98
    return mg.pixels[sl].astype(np.float64)


def test_tissue_spectrum_follows_mammographic_power_law():
    """beta measured on the final image (detrended tissue patch) lies in [2.5, 3.5]."""
    opts = PhantomOptions(size=(1024, 832), positive_fraction=0.0)
    slopes = [spectral_slope(_tissue_patch(make_one(11, i, opts))) for i in range(6)]
    assert all(2.5 <= s <= 3.5 for s in slopes), slopes


def test_masks_lie_inside_the_breast_and_lesions_stand_out():
    opts = PhantomOptions(size=(512, 416), positive_fraction=1.0)
    for i in range(10):
        mg = make_one(21, i, opts)
        assert mg.mask.any() and mg.breast[mg.mask].all()
        labels, _ = ndimage.label(mg.mask)
        px = mg.pixels.astype(float)
        tissue_std = px[mg.breast & ~ndimage.binary_dilation(mg.mask, iterations=10)].std()
        for kind, row, col, *_ in mg.lesions:
            assert labels[row, col], (i, kind, mg.laterality)  # the centre lies on its own lesion
            lesion = labels == labels[row, col]
            ring = ndimage.binary_dilation(lesion, iterations=8) & ~ndimage.binary_dilation(lesion, iterations=3)
            ring &= mg.breast
            # Lesions add attenuation: brighter than their surroundings.
            stat = np.percentile(px[lesion], 99) if kind == "calcifications" else px[lesion].mean()
            assert stat > px[ring].mean(), (i, kind)
            # ... yet a mass's contrast is of the order of the tissue's own
            # fluctuation, so finding it takes more than a brightness threshold.
            if kind != "calcifications":
                assert px[lesion].mean() - px[ring].mean() < 1.5 * tissue_std, (i, kind)


def test_all_lesion_kinds_and_both_views_and_lateralities_occur():
    opts = PhantomOptions(size=(256, 208), positive_fraction=1.0)
    mgs = [make_one(5, i, opts) for i in range(24)]
    assert {k for mg in mgs for k, *_ in mg.lesions} == {"circumscribed", "spiculated", "calcifications"}
    assert {mg.view for mg in mgs} == {"CC", "MLO"} and {mg.laterality for mg in mgs} == {"L", "R"}


def test_right_breasts_have_the_chest_wall_on_the_right():
    opts = PhantomOptions(size=(256, 208), positive_fraction=0.0)
    for i in range(8):
        mg = make_one(9, i, opts)
        col_fill = mg.breast.mean(axis=0)
        assert (col_fill[-1] > col_fill[0]) == (mg.laterality == "R")


def test_full_size_mammogram(tmp_path):
    assert main(["phantom", "--out", str(tmp_path), "--count", "1", "--size", "4096x3328",
                 "--positive-fraction", "1", "--quiet"]) == 0
    ds = pydicom.dcmread(tmp_path / "img00000.dcm")
    assert (ds.Rows, ds.Columns) == (4096, 3328)
    assert np.load(tmp_path / "masks" / "img00000.npy").shape == (4096, 3328)


def test_bad_size_is_a_clear_usage_error(tmp_path, capsys):
    assert main(["phantom", "--out", str(tmp_path), "--size", "8192x100"]) == 2
    assert "8192x100 is out of range" in capsys.readouterr().err


# The second and third generators (phantom/compartments.py, phantom/trabecular.py): other
# texture, outline and detector models; the second also other lesion models.
OWN_KINDS = {"compartments": set(compartments.KINDS), "trabecular": set(ALL_KINDS)}


@pytest.mark.parametrize("generator", ["compartments", "trabecular"])
def test_other_generators_write_valid_files_with_their_own_lesion_kinds(tmp_path, generator):
    args = ["phantom", "--generator", generator, "--size", "256x208", "--positive-fraction", "1", "--quiet"]
    assert main(args + ["--out", str(tmp_path), "--count", "12"]) == 0
    rows = _manifest(tmp_path)
    kinds = {k for r in rows for k in r["kind"].split("+")}
    assert kinds and kinds <= OWN_KINDS[generator]
    if generator == "compartments":
        assert not kinds & set(LESION_KINDS)
    else:  # draws the first generator's kinds and the second's
        assert kinds & set(LESION_KINDS) and kinds & set(compartments.KINDS)
    assert dciodvfy_errors(tmp_path / rows[0]["file"]) == []
    again = tmp_path / "again"
    assert main(args + ["--out", str(again), "--count", "2"]) == 0
    assert (again / "img00001.dcm").read_bytes() == (tmp_path / "img00001.dcm").read_bytes()
    # Not the first generator's image for the same seed, nor its UIDs.
    assert main(["phantom", "--out", str(tmp_path / "std"), "--count", "1", "--size", "256x208", "--quiet"]) == 0
    assert (pydicom.dcmread(tmp_path / "std" / "img00000.dcm").SOPInstanceUID
            != pydicom.dcmread(tmp_path / "img00000.dcm").SOPInstanceUID)


@pytest.mark.parametrize("generator", ["compartments", "trabecular"])
def test_other_generators_lesions_lie_in_the_breast_and_stand_out(generator):
    opts = PhantomOptions(size=(512, 416), positive_fraction=1.0, generator=generator)
    for i in range(8):
        mg = make_one(23, i, opts)
        assert mg.mask.any() and mg.breast[mg.mask].all()
        px = mg.pixels.astype(float)
        for kind, row, col, *_ in mg.lesions:
            ring = ndimage.binary_dilation(mg.mask, iterations=8) & ~ndimage.binary_dilation(mg.mask, iterations=3)
            stat = np.percentile(px[mg.mask], 99)
            assert stat > px[ring & mg.breast].mean(), (i, kind)


def test_each_generator_draws_the_others_lesions_on_request():
    """Texture and lesion models cross: one generator's lesions on the other's breasts."""
    opts = PhantomOptions(size=(256, 208), positive_fraction=1.0, generator="compartments",
                          lesion_kinds=("circumscribed", "calcifications"))
    assert {k for i in range(10) for k, *_ in make_one(3, i, opts).lesions} == {"circumscribed", "calcifications"}
    opts = PhantomOptions(size=(256, 208), positive_fraction=1.0, lesion_kinds=("lobulated", "distortion"))
    assert {k for i in range(10) for k, *_ in make_one(3, i, opts).lesions} == {"lobulated", "distortion"}
    with pytest.raises(ValueError, match="lesion kinds \\['bogus'\\] not allowed"):
        PhantomOptions(generator="compartments", lesion_kinds=("bogus",)).check()
    with pytest.raises(ValueError, match="generator 'nope' unknown"):
        PhantomOptions(generator="nope").check()


@pytest.mark.parametrize("generator", ["compartments", "trabecular"])
def test_other_generators_texture_has_a_mammographic_spectrum(generator):
    """Compartments or strands, not a power-law field, yet a spectrum in the range real mammograms show."""
    opts = PhantomOptions(size=(1024, 832), positive_fraction=0.0, generator=generator)
    slopes = [spectral_slope(_tissue_patch(make_one(11, i, opts))) for i in range(6)]
    assert all(2.5 <= s <= 4.5 for s in slopes), slopes


# -- identity: every option that changes the pixels or the header changes the UIDs ---------

def _identity(path):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID


def test_other_options_give_other_uids_and_patient(tmp_path):
    """Other pixels, other identity: a node's queue would take the second image for a resend of the first."""
    base = ["phantom", "--count", "1", "--size", "256x208", "--quiet"]
    assert main(base + ["--out", str(tmp_path / "a")]) == 0
    assert main(base + ["--out", str(tmp_path / "b"), "--positive-fraction", "1"]) == 0
    assert main(base + ["--out", str(tmp_path / "c"), "--photometric", "MONOCHROME1"]) == 0
    assert (tmp_path / "a" / "img00000.dcm").read_bytes() != (tmp_path / "b" / "img00000.dcm").read_bytes()
    ids = [_identity(tmp_path / name / "img00000.dcm") for name in "abc"]
    for one, other in ((0, 1), (0, 2), (1, 2)):
        assert all(x != y for x, y in zip(ids[one], ids[other])), (ids[one], ids[other])
    assert all(i[3].startswith("PH000000") for i in ids)


def test_default_runs_keep_their_uids():
    """The key of a default run (any generator) is what it always was, so are its UIDs and PatientID."""
    from phantom.dicom import to_dataset
    from phantom.generate import patient_id, uid_key

    assert uid_key(0, 0, PhantomOptions()) == "cfia-phantom:0:0" and patient_id(0, 0, PhantomOptions()) is None
    assert uid_key(4, 2, PhantomOptions(generator="trabecular")) == "cfia-phantom-trabecular:4:2"
    # The generator's own kinds, named, draw the same images as the default: the same key.
    assert uid_key(4, 2, PhantomOptions(lesion_kinds=LESION_KINDS)) == "cfia-phantom:4:2"
    ds = to_dataset(make_one(0, 0, PhantomOptions()), uid_key(0, 0, PhantomOptions()), 0)
    assert ds.SOPInstanceUID == "1.2.826.0.1.3680043.8.498.11673725735610407264983779354361624463"
    assert ds.PatientID == "PH000000" and ds.AccessionNumber == "A0000000"


def test_every_option_is_in_the_uid_key():
    """Each option, set away from its default, gives its own key and PatientID; a new option must be added here."""
    import dataclasses

    from phantom.generate import patient_id, uid_key

    other = {"size": (512, 416), "positive_fraction": 0.25, "bits_stored": 14, "for_processing": True,
             "photometric": "MONOCHROME1", "frame_of_reference": True, "pixel_spacing": True,
             "lesion_kinds": ("spiculated",), "generator": "compartments"}
    assert set(other) == {f.name for f in dataclasses.fields(PhantomOptions)}
    opts = [PhantomOptions()] + [PhantomOptions(**{name: value}) for name, value in other.items()]
    keys = {uid_key(7, 3, o) for o in opts}
    pids = {patient_id(7, 3, o) for o in opts}
    assert len(keys) == len(pids) == len(opts)
    assert all(p is None or (p.startswith("PH700003-") and len(p) <= 64) for p in pids)


# -- the display window of a MONOCHROME1 image ----------------------------------------------

@pytest.mark.parametrize("bits", [12, 16])
def test_monochrome1_window_covers_the_same_tissue_as_monochrome2(bits):
    from phantom.dicom import to_dataset

    opts = PhantomOptions(size=(256, 208), bits_stored=bits)
    maxval = (1 << bits) - 1
    for i in range(3):
        mg = make_one(2, i, opts)
        windows = {}
        for photometric in ("MONOCHROME2", "MONOCHROME1"):
            ds = to_dataset(mg, f"t:{i}", i, bits, photometric=photometric)
            stored = ds.pixel_array.astype(float)[mg.breast]
            centre, width = float(ds.WindowCenter), float(ds.WindowWidth)
            outside = np.mean((stored < centre - width / 2) | (stored > centre + width / 2))
            assert outside < 0.03, (i, photometric, outside)  # the 1st-99th percentile of the breast
            windows[photometric] = centre, width
        # The MONOCHROME1 window is the MONOCHROME2 one mirrored (the stored values are inverted).
        (c2, w2), (c1, w1) = windows["MONOCHROME2"], windows["MONOCHROME1"]
        assert w1 == w2 and c1 == pytest.approx(maxval - c2, abs=0.11)
        breast = mg.pixels[mg.breast]  # MONOCHROME2 as before: from the pixels as drawn
        assert c2 == pytest.approx(float(np.percentile(breast, [1, 99]).mean()), abs=0.051)


# -- arguments refused before any file is written -------------------------------------------

@pytest.mark.parametrize("flags, says", [
    (["--count", "-3"], "count -3 is out of range"),
    (["--count", "0"], "count 0 is out of range"),
    (["--count", "100001"], "count 100001 is out of range"),
    (["--seed", "-1"], "seed -1 is out of range"),
    (["--seed", "99999999999"], "seed 99999999999 is out of range"),
    (["--size", "1000x64"], "size 1000x64 is out of range"),
    (["--size", "4096x64"], "size 4096x64 is out of range"),
    (["--size", "64x3328", "--generator", "trabecular"], "size 64x3328 is out of range"),
    (["--size", "64x512", "--generator", "trabecular"], "size 64x512 is out of range"),
])
def test_bad_count_seed_or_size_is_refused_before_any_file(tmp_path, capsys, flags, says):
    out = tmp_path / "out"
    assert main(["phantom", "--out", str(out), "--quiet", *flags]) == 2
    err = capsys.readouterr().err
    assert says in err and "allowed:" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    with pytest.raises(ValueError, match="out of range"):  # the library refuses them too, writing nothing
        size = tuple(int(v) for v in flags[1].split("x")) if flags[0] == "--size" else (256, 208)
        count = int(flags[1]) if flags[0] == "--count" else 1
        seed = int(flags[1]) if flags[0] == "--seed" else 0
        generator = flags[-1] if len(flags) > 2 else "standard"
        write_dataset(out, count, seed, PhantomOptions(size=size, generator=generator))
    assert not out.exists()


def test_the_largest_seed_writes_a_valid_header(tmp_path):
    from phantom.generate import MAX_SEED

    assert main(["phantom", "--out", str(tmp_path), "--count", "1", "--seed", str(MAX_SEED), "--size", "64x64",
                 "--quiet"]) == 0
    ds = pydicom.dcmread(tmp_path / "img00000.dcm", stop_before_pixels=True)
    assert len(ds.AccessionNumber) <= 16 and ds.AccessionNumber == f"A{MAX_SEED * 100000:07d}"
    assert dciodvfy_errors(tmp_path / "img00000.dcm") == []


@pytest.mark.parametrize("generator", ["standard", "compartments", "trabecular"])
def test_every_generator_draws_a_lesion_at_the_extreme_sizes_allowed(generator):
    """Narrowest (columns/rows 0.5), widest (2) and smallest sizes, every lesion kind, positive images."""
    for size in ((128, 64), (64, 128), (64, 64), (512, 256), (256, 512)):
        PhantomOptions(size=size).check()
        opts = PhantomOptions(size=size, positive_fraction=1.0, generator=generator, lesion_kinds=ALL_KINDS)
        for i in range(8):
            assert make_one(13, i, opts).mask.any()
    for size in ((129, 64), (64, 129)):  # just outside
        with pytest.raises(ValueError, match="columns/rows from 0.5 to 2"):
            PhantomOptions(size=size).check()


@pytest.mark.parametrize("generator", ["standard", "compartments", "trabecular"])
def test_lesion_centres_lie_on_their_lesion_in_either_breast(generator):
    """Mammogram.lesions' (row, col) is in the displayed frame, mirrored for a right breast as the mask is."""
    opts = PhantomOptions(size=(256, 208), positive_fraction=1.0, generator=generator)
    mgs = [make_one(5, i, opts) for i in range(8)]
    assert {mg.laterality for mg in mgs} == {"L", "R"}
    for mg in mgs:
        for kind, row, col, *_ in mg.lesions:
            assert mg.mask[row, col], (mg.laterality, kind, row, col)


def test_a_spiculated_masks_ground_truth_holds_its_spicules():
    """The ground truth holds the spicules the pixels show: evaluate scores against it."""
    from phantom.lesions import spiculated_mass

    for seed in range(5):
        profile, mask = spiculated_mass(0.1, np.random.default_rng(seed))
        strong = profile > 0.3
        assert mask[strong].mean() > 0.9, seed
