"""What a site's data folder may hold that the phantoms never do: masks saved another way
or contradicting their label, unreadable positives, copies of training images under other
names, a model run at another input size than it was trained at."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cfia.manifest import DataError, read_manifest

SIZE = (64, 48)  # the classifier input of these tests


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    """Six 128x104 phantoms, three with a lesion."""
    from cfia.cli import main

    out = tmp_path_factory.mktemp("phantoms")
    assert main(["phantom", "--out", str(out), "--count", "6", "--seed", "7", "--size", "128x104",
                 "--positive-fraction", "0.5", "--quiet"]) == 0
    return out


def _records(phantoms: Path, label: int) -> list:
    return [r for r in read_manifest(phantoms) if r.label == label]


def _site(tmp_path: Path, phantoms: Path, rows: list, name: str = "site") -> Path:
    """A folder with the phantoms' files and a manifest file,label,mask of `rows`."""
    folder = tmp_path / name
    shutil.copytree(phantoms, folder, ignore=shutil.ignore_patterns(".cfia-cache", "manifest.csv"))
    with (folder / "manifest.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["file", "label", "mask"], *rows])
    return folder


def _row(rec, phantoms: Path) -> list:
    """The phantom's own manifest row (file, label, mask)."""
    return [rec.path.name, rec.label, str(rec.mask.relative_to(phantoms)) if rec.mask else ""]


def _messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def _load(folder: Path, tmp_path: Path, training: bool):
    from cfia.training.data import load_images

    return load_images(folder, SIZE, tmp_path / "cache", workers=1, progress=False, training=training)


def _breast_crop(path: Path) -> tuple:
    """The classifier's crop (r0, r1, c0, c1, half-open) of an image whose chest wall is on the left."""
    from cfia.dicom_io import read_file

    geometry = read_file(path).to_input(SIZE).geometry
    assert not geometry.flipped
    return geometry.crop


def _cover_of(loaded, name: str) -> torch.Tensor:
    _, masks, _, files = loaded
    return masks[[Path(f).name for f in files].index(name)].float()


def test_an_npz_mask_is_refused_and_named(phantoms, tmp_path, caplog):
    """np.savez under a .npy name: np.load gives an archive, not an array. Refused with a
    ValueError; the classifier's training skips its image and the inpainter's names the mask."""
    from cfia.manifest import read_mask
    from cfia.training.mammo_io import load_folder

    pos, negs = _records(phantoms, 1)[0], _records(phantoms, 0)
    folder = _site(tmp_path, phantoms, [[pos.path.name, 1, "pos_mask.npy"], *[_row(n, phantoms) for n in negs]])
    with (folder / "pos_mask.npy").open("wb") as fh:
        np.savez_compressed(fh, mask=np.load(pos.mask))
    with pytest.raises(ValueError, match=r"not a \.npy array \(an \.npz archive\?\)"):
        read_mask(folder / "pos_mask.npy", (128, 104))
    files = _load(folder, tmp_path, training=True)[3]
    assert pos.path.name not in [Path(f).name for f in files] and len(files) == len(negs)
    assert any(f"{folder / 'pos_mask.npy'}: unreadable lesion mask" in m for m in _messages(caplog))
    _, skipped = load_folder(folder)
    assert len(skipped) == 1 and skipped[0].startswith(f"{folder / 'pos_mask.npy'}: unreadable lesion mask")


def test_evaluate_stops_on_an_unreadable_positive_before_explaining_any(phantoms, tmp_path):
    """A positive cut short, or not DICOM at all, stops `cfia evaluate` before any image is
    explained (the pipeline is never touched), naming the image, not its mask."""
    from cfia.evaluate import evaluate

    p1, p2, p3 = (_row(r, phantoms) for r in _records(phantoms, 1))
    folder = _site(tmp_path, phantoms, [p1, ["trunc.dcm", 1, p2[2]], ["notes.dcm", 1, p3[2]]])
    data = (phantoms / p2[0]).read_bytes()
    (folder / "trunc.dcm").write_bytes(data[: len(data) // 2])
    (folder / "notes.dcm").write_text("not dicom\n")
    with pytest.raises(DataError) as stop:
        evaluate(None, folder, ["gradcam"])
    msg = str(stop.value)
    assert "2 lesion image(s) unreadable" in msg, msg
    assert str(folder / "trunc.dcm") in msg and str(folder / "notes.dcm") in msg
    assert "lesion mask(s) unusable" not in msg


def test_masks_that_contradict_their_label_are_not_learnt(phantoms, tmp_path, caplog):
    """A positive whose mask marks nothing (on its image, or on the input grid) has an
    unknown lesion map, not 'no lesion anywhere', and the inpainter skips it; a negative's
    mask that marks a lesion is ignored. Each is warned of, named by its mask."""
    from cfia.training.mammo_io import load_folder

    (p1, p2, p3), (n1, n2, _) = _records(phantoms, 1), _records(phantoms, 0)
    folder = _site(tmp_path, phantoms, [[p1.path.name, 1, "empty.npy"], [p2.path.name, 1, "speck.npy"],
                                        [n1.path.name, 0, "other.npy"], [n2.path.name, 0, ""]])
    np.save(folder / "empty.npy", np.zeros((128, 104), np.uint8))
    crop = _breast_crop(folder / p2.path.name)
    speck = np.zeros((128, 104), bool)
    speck[0, crop[3] + 2] = True  # one pixel outside the breast's crop: nothing on the input
    np.save(folder / "speck.npy", speck)
    np.save(folder / "other.npy", np.load(p3.mask))
    loaded = _load(folder, tmp_path, training=True)
    assert _cover_of(loaded, p1.path.name).max() < 0 and _cover_of(loaded, p2.path.name).max() < 0
    assert _cover_of(loaded, n1.path.name).abs().max() == 0
    messages = _messages(caplog)
    for mask, says in (("empty.npy", "marks no lesion on its image"), ("speck.npy", "marks no lesion on the 64x48"),
                       ("other.npy", "marks a lesion, but")):
        assert any(m.startswith(f"{folder / mask}: {says}") for m in messages), (mask, messages)
    images, skipped = load_folder(folder)
    by_name = {Path(m.source).name: m for m in images}
    assert p1.path.name not in by_name and skipped[0].startswith(f"{folder / 'empty.npy'}: marks no lesion")
    assert by_name[n1.path.name].lesion is None


def test_validation_copies_of_training_images_under_other_names_stop(phantoms, tmp_path):
    """Byte-identical copies are the same images: the same SOPInstanceUID. Both files named."""
    from cfia.training.data import check_held_apart

    (p1, *_), (n1, n2, _) = _records(phantoms, 1), _records(phantoms, 0)
    train = _site(tmp_path, phantoms, [_row(n1, phantoms), _row(p1, phantoms)], "tr")
    val = tmp_path / "va"
    val.mkdir()
    shutil.copyfile(n1.path, val / "renamed.dcm")
    shutil.copyfile(n2.path, val / "other.dcm")
    (val / "manifest.csv").write_text("file,label\nother.dcm,0\nrenamed.dcm,0\n")
    with pytest.raises(DataError) as stop:
        check_held_apart([train], [val])
    msg = str(stop.value)
    assert "--val-data shares 1 image(s) with --data" in msg
    assert f"{train / n1.path.name} and {val / 'renamed.dcm'}" in msg, msg
    (val / "manifest.csv").write_text("file,label\nother.dcm,0\n")
    check_held_apart([train], [val])  # held apart: no stop


def test_evaluation_keeps_images_whose_mask_only_training_would_use(phantoms, tmp_path, caplog):
    """--eval-only and per-epoch validation use no masks: an unreadable one keeps its image
    (mask unknown); training, from the same cache, skips it, named by the mask."""
    (p1, p2, _), negs = _records(phantoms, 1), _records(phantoms, 0)
    folder = _site(tmp_path, phantoms, [[p1.path.name, 1, "bad.npy"], *[_row(r, phantoms) for r in (p2, *negs)]])
    np.save(folder / "bad.npy", np.zeros((10, 10), bool))  # not its image's shape
    evaluated = _load(folder, tmp_path, training=False)
    assert len(evaluated[3]) == 5 and _cover_of(evaluated, p1.path.name).max() < 0
    assert not any("bad.npy" in m for m in _messages(caplog))
    trained = _load(folder, tmp_path, training=True)
    assert len(trained[3]) == 4 and p1.path.name not in [Path(f).name for f in trained[3]]
    assert any(f"{folder / 'bad.npy'}: unreadable lesion mask" in m for m in _messages(caplog))
    assert len(list((tmp_path / "cache").glob("classifier-*.pt"))) == 1  # one cache serves both


def test_eval_only_warns_when_the_model_was_trained_at_another_input_size(phantoms, tmp_path, caplog):
    """classifier.json beside the model says 64x48: evaluating it at 96x64 warns, naming both."""
    from explain.networks import MammoNet

    from cfia.cli import main
    from cfia.training.classifier import export_model

    args = {"channels": [4, 8, 8], "subunits": 1}
    torch.manual_seed(0)
    export_model(MammoNet(**args).eval(), tmp_path / "m", {"network": "MammoNet", "network_args": args,
                                                           "input_size": list(SIZE)})
    model = tmp_path / "m" / "classifier.ts"
    run = ["train", "classifier", "--eval-only", "--data", str(phantoms), "--model", str(model),
           "--workers", "1", "--threads", "1", "--quiet", "--cache-dir", str(tmp_path / "cache")]
    assert main([*run, "--input-size", "96x64"]) == 0
    warned = [m for m in _messages(caplog) if "trained at input size" in m]
    assert len(warned) == 1 and "64x48" in warned[0] and "run at 96x64" in warned[0], _messages(caplog)
    caplog.clear()
    assert main([*run, "--input-size", "64x48"]) == 0
    assert not any("trained at input size" in m for m in _messages(caplog))


def test_the_node_warns_when_its_model_was_trained_at_another_input_size(tmp_path, caplog):
    """Every model load goes through explain.classifier.load_classifier: the node's and
    `cfia explain`'s too, not only --eval-only."""
    import logging

    from explain.networks import MammoNet

    from cfia.config import from_dict
    from cfia.pipeline import Pipeline
    from cfia.training.classifier import export_model

    args = {"channels": [4, 8, 8], "subunits": 1}
    export_model(MammoNet(**args).eval(), tmp_path / "m", {"network": "MammoNet", "network_args": args,
                                                           "input_size": list(SIZE)})
    with caplog.at_level(logging.WARNING):
        Pipeline(from_dict({"models": {"inpainter": {"kind": "telea"},
                                       "classifier": {"kind": "torchscript", "path": str(tmp_path / "m" / "classifier.ts"),
                                                      "input_size": [96, 64]}},
                            "explainer": {"method": "occlusion", "occlusion_size": 16}}))
    warned = [m for m in _messages(caplog) if "trained at input size" in m]
    assert len(warned) == 1 and "64x48" in warned[0] and "run at 96x64" in warned[0], _messages(caplog)
    # Another model in the same folder: the card is not its own, so it says nothing of it.
    (tmp_path / "m" / "classifier.ts").rename(tmp_path / "m" / "mine.ts")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        Pipeline(from_dict({"models": {"inpainter": {"kind": "telea"},
                                       "classifier": {"kind": "torchscript", "path": str(tmp_path / "m" / "mine.ts"),
                                                      "input_size": [96, 64]}},
                            "explainer": {"method": "occlusion", "occlusion_size": 16}}))
    assert not any("trained at input size" in m for m in _messages(caplog))
