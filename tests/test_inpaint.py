"""Inpainters: interface contract, classical fills, factory errors, training CLI, shipped model."""
from __future__ import annotations

import csv
import json
import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from explain.inpaint import (BlurFill, InpainterError, LearnedInpainter, NavierStokesInpainter, NoiseFill,
                             TeleaInpainter, make_inpainter, match_ring_texture)
from explain.inpaint_net import GatedUNet

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "inpainter.pt"
CARD = ROOT / "models" / "inpainter.md"


def _image_and_hole(b=2, h=70, w=53, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 1, h, w, generator=g)
    hole = torch.zeros_like(x)
    hole[..., h // 4: h // 2, w // 4: w // 2] = 1.0
    return x, hole


@pytest.fixture(scope="module")
def random_net_inpainter():
    torch.manual_seed(0)
    return LearnedInpainter.from_network(GatedUNet())


@pytest.fixture(scope="module", params=["learned", "learned_texture_match", "telea", "navier_stokes", "blur", "noise"])
def inpainter(request, random_net_inpainter):
    if request.param == "learned_texture_match":
        return LearnedInpainter.from_network(random_net_inpainter.net, texture_match=True)
    return random_net_inpainter if request.param == "learned" else make_inpainter(request.param)


@pytest.mark.parametrize("size", [(70, 53), (64, 64), (33, 100)])
def test_contract_known_pixels_unchanged_any_size(inpainter, size):
    x, hole = _image_and_hole(h=size[0], w=size[1])
    soft = hole * 0.9  # soft holes are binarised at the threshold (0.5)
    out = inpainter(x, soft)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out[hole == 0], x[hole == 0])
    assert not torch.equal(out[hole == 1], x[hole == 1])
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_empty_hole_and_bad_shapes(inpainter):
    x, hole = _image_and_hole()
    assert torch.equal(inpainter(x, torch.zeros_like(x)), x)
    with pytest.raises(ValueError, match="hole shape"):
        inpainter(x, hole[:, :, :10])
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        inpainter(x[:, 0], hole[:, 0])


def test_a_fill_never_holds_the_hidden_pixels_nor_spreads_a_nan(inpainter):
    """A hole over the whole image: OpenCV has no boundary to march from and returned its
    input, the hidden image. A NaN is refused: 0 x NaN spread it over the known pixels."""
    x, hole = _image_and_hole(b=1)
    everything = inpainter(x, torch.ones_like(x))
    assert float((everything - x).abs().max()) > 0.1
    bad = x.clone()
    bad[0, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        inpainter(bad, hole)


def test_a_fill_does_not_see_the_pixels_it_hides(inpainter, request):
    """The counterfactual must not carry what the mask deletes: every inpainter fills the hole
    from its surroundings alone. The blur fill is the exception by design (Fong & Vedaldi's
    perturbation, which blurs what it covers)."""
    x, hole = _image_and_hole()
    other = torch.where(hole.bool(), 1.0 - x, x)  # the same surroundings, other hidden pixels
    fills = []
    for image in (x, other):
        torch.manual_seed(0)  # the noise fills draw from torch's generator
        fills.append(inpainter(image, hole))
    if request.node.callspec.params["inpainter"] == "blur":
        assert not torch.equal(*fills)
    else:
        assert torch.equal(*fills)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_float_dtypes_are_filled_as_float32(inpainter, dtype):
    x, hole = _image_and_hole()
    out = inpainter(x.to(dtype), hole.to(dtype))
    assert out.dtype == dtype and torch.equal(out[hole == 0], x.to(dtype)[hole == 0])


def test_noise_scale_0_is_the_smooth_fill_that_no_seed_moves(random_net_inpainter):
    """noise_scale multiplies the noise input (README: 0 = the network's smooth fill): at 0
    the seed no longer matters, at 1 it does, and between them the fill moves less."""
    x, hole = _image_and_hole(b=1)
    net = random_net_inpainter.net

    def fill(scale, seed):
        return LearnedInpainter.from_network(net, seed=seed, noise_scale=scale)(x, hole)

    assert torch.equal(fill(0.0, 0), fill(0.0, 1))
    full = float((fill(1.0, 0) - fill(1.0, 1)).abs().max())
    half = float((fill(0.5, 0) - fill(0.5, 1)).abs().max())
    assert 0 < half < full


def test_a_learned_fill_does_not_depend_on_its_place_in_the_batch(random_net_inpainter):
    """The node fills one image at a time, benches batch them: both must see the same fill."""
    x, hole = _image_and_hole(b=1)
    alone = random_net_inpainter(x, hole)
    batch = random_net_inpainter(torch.cat([x, x, x]), torch.cat([hole, hole, hole]))
    assert all(float((batch[i:i + 1] - alone).abs().max()) < 1e-6 for i in range(3))  # batched convolution rounding


def test_a_noise_fill_does_not_depend_on_its_place_in_the_batch():
    """The classifier-shift bench batches 8 fills: its noise row must be each image's own fill."""
    x, hole = _image_and_hole(b=1)
    noise = NoiseFill(seed=3)
    alone = noise(x, hole)
    batch = noise(torch.cat([x * 0.5, x]), torch.cat([hole, hole]))
    assert torch.equal(batch[1:], alone) and not torch.equal(batch[:1], alone)


def test_classical_fills_are_smooth_continuations():
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(48.0), indexing="ij")
    x = (0.2 + 0.005 * yy + 0.003 * xx)[None, None]
    hole = torch.zeros_like(x)
    hole[..., 20:36, 16:32] = 1
    for inp in (TeleaInpainter(), NavierStokesInpainter()):
        assert float((inp(x, hole) - x).abs().max()) < 0.05


def _texture(seed, shape=(1, 1, 160, 160), sd=0.05):
    from explain.inpaint import gaussian_blur

    t = gaussian_blur(torch.randn(shape, generator=torch.Generator().manual_seed(seed)), 1.5)
    return sd * t / t.std()


def test_texture_match_gives_the_hole_the_rings_texture_band_by_band():
    from cfia.bench.inpainter import band_energy_ratios

    image = 0.5 + _texture(1)
    hole = torch.zeros_like(image)
    hole[..., 50:110, 60:100] = 1.0
    faint = 0.5 + 0.3 * _texture(2)  # the right kind of texture at 0.3 x the amplitude (gain <= 4)
    out = match_ring_texture(image, hole, faint)
    inside = hole.bool()
    assert torch.equal(out[~inside], image[~inside])  # known pixels untouched

    def ratios(fill):  # each band's energy in the hole over the hidden tissue's
        return np.array(band_energy_ratios(fill[0, 0].numpy(), image[0, 0].numpy(), inside[0, 0].numpy()))

    assert (ratios(faint) < 0.15).all()
    assert ((ratios(out) > 0.5) & (ratios(out) < 1.5)).all(), ratios(out)  # approximate: the bands overlap
    # A fill with too much texture is turned down (the gain is clipped at 0.5 per band).
    loud = 0.5 + 1.6 * _texture(2)
    assert (ratios(match_ring_texture(image, hole, loud)) < ratios(loud)).all()


def test_texture_match_leaves_the_fill_alone_without_tissue_around():
    image = torch.zeros(1, 1, 64, 64)  # air all round: nothing to match
    hole = torch.zeros_like(image)
    hole[..., 20:40, 20:40] = 1.0
    fill = 0.5 + _texture(3, image.shape)
    assert torch.allclose(match_ring_texture(image, hole, fill)[hole.bool()], fill[hole.bool()], atol=1e-6)


def test_factory_errors(tmp_path):
    with pytest.raises(InpainterError, match="unknown inpainter kind 'magic'; allowed: learned, telea"):
        make_inpainter("magic")
    with pytest.raises(InpainterError, match="needs a checkpoint path"):
        make_inpainter("learned")
    with pytest.raises(InpainterError, match="does not exist"):
        make_inpainter("learned", tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InpainterError, match="cannot read"):
        make_inpainter("learned", bad)
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(InpainterError, match="does not hold a GatedUNet"):
        make_inpainter("learned", wrong)
    # A classifier's weights: the error is a line, not every key of both networks (3.7 kB).
    from explain.networks import MammoNet
    torch.save(MammoNet().state_dict(), wrong)
    with pytest.raises(InpainterError) as err:
        make_inpainter("learned", wrong)
    assert "does not hold a GatedUNet" in str(err.value) and len(str(err.value)) < 500
    # The per-epoch checkpoint of `cfia train inpainter` is named for what it is.
    run = tmp_path / "inpainter.ckpt"
    torch.save({"epoch": 3, "state_dict": {}, "optimizer": {}, "options": "{}"}, run)
    with pytest.raises(InpainterError, match=r"is a training run's checkpoint \(epoch 3\), not an inpainter: give "
                                             "the inpainter.pt the run writes when it ends"):
        make_inpainter("learned", run)
    assert isinstance(make_inpainter("telea", radius=3), TeleaInpainter)


# --- training CLI -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from cfia.cli import main

    out = tmp_path_factory.mktemp("inp-data")
    assert main(["phantom", "--out", str(out), "--count", "3", "--seed", "5", "--size", "256x208",
                 "--positive-fraction", "0.34", "--quiet"]) == 0
    return out


TINY = ["--epochs", "1", "--crops-per-epoch", "4", "--batch-size", "2", "--crop-size", "32", "--val-crops", "2", "--quiet"]


def _train(data, out, *extra):
    from cfia.cli import main

    return main(["train", "inpainter", "--data", str(data), "--out", str(out), *TINY, *extra])


def _weights(path):
    return torch.load(path, weights_only=True)["state_dict"]


def test_tiny_training_checkpoint_seed_and_resume(tiny_data, tmp_path, capsys):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert _train(tiny_data, a, "--seed", "3") == 0
    assert (a / "inpainter.ckpt").is_file() and (a / "inpainter.report.json").is_file()
    assert "heldout" in capsys.readouterr().out
    make_inpainter("learned", a / "inpainter.pt")  # loads
    assert _train(tiny_data, b, "--seed", "3") == 0
    for k, v in _weights(a / "inpainter.pt").items():
        assert torch.equal(v, _weights(b / "inpainter.pt")[k]), k
    # Epoch 1 then --resume to 2 equals 2 epochs straight.
    assert _train(tiny_data, a, "--seed", "3", "--epochs", "2", "--resume") == 0
    assert _train(tiny_data, c, "--seed", "3", "--epochs", "2") == 0
    assert torch.load(a / "inpainter.ckpt", weights_only=True)["epoch"] == 2
    for k, v in _weights(a / "inpainter.pt").items():
        assert torch.equal(v, _weights(c / "inpainter.pt")[k]), k


def test_texture_augmentation_of_crops(tiny_data, tmp_path, capsys):
    """--aug-texture: extra texture inside the breast only, more fine texture than before,
    a different pattern per draw; it changes training; a bad fraction exits 2."""
    from scipy import ndimage

    from cfia.training.crops import add_texture

    y, x = np.mgrid[:64, :64]
    crop = np.where(x < 40, 0.4 + 0.05 * np.sin(y / 3.0), 0.0).astype(np.float32)  # breast left, air right
    rng = np.random.default_rng(0)
    a, b = add_texture(crop, rng, (1.5, 1.5)), add_texture(crop, rng, (1.5, 1.5))
    assert a.dtype == np.float32 and a.min() >= 0 and a.max() <= 1
    assert np.array_equal(a[:, 40:], crop[:, 40:])  # air untouched
    assert not np.allclose(a, b)  # a new pattern each draw
    hp = lambda im: float((im - ndimage.gaussian_filter(im, 2))[4:-4, 4:36].std())
    assert hp(a) > 1.2 * hp(crop) or hp(b) > 1.2 * hp(crop)
    assert np.array_equal(add_texture(np.zeros_like(crop), rng, (1, 1)), np.zeros_like(crop))  # no breast
    assert _train(tiny_data, tmp_path / "plain", "--seed", "3") == 0
    assert _train(tiny_data, tmp_path / "tex", "--seed", "3", "--aug-texture", "1") == 0
    plain, tex = _weights(tmp_path / "plain" / "inpainter.pt"), _weights(tmp_path / "tex" / "inpainter.pt")
    assert not all(torch.equal(plain[k], tex[k]) for k in plain)
    capsys.readouterr()
    assert _train(tiny_data, tmp_path / "bad", "--aug-texture", "1.5") == 2
    assert "--aug-texture" in capsys.readouterr().err


def test_heldout_report_scores_the_holes_tissue_only():
    """A hole in the air has no texture to keep: it is left out of the training report
    instead of carrying its mean; a hole across the skin line is scored on its breast part."""
    from cfia.bench.inpaint_metrics import hole_metrics
    from cfia.training.inpainter import tissue_metrics

    rng = np.random.default_rng(0)
    crop = np.zeros((48, 48), np.float32)
    crop[:, :24] = 0.5 + 0.05 * rng.standard_normal((48, 24))  # breast left, air right
    filled = crop + 0.05 * rng.standard_normal(crop.shape).astype(np.float32)  # texture in the air too
    air, across = np.zeros((48, 48), bool), np.zeros((48, 48), bool)
    air[10:30, 30:44] = True
    across[10:30, 14:34] = True
    assert hole_metrics(filled, crop, air)["texture"] > 1e4  # what the report used to average
    assert tissue_metrics(filled, crop, air) is None
    tissue = across & (crop > 0.02)
    assert tissue_metrics(filled, crop, across) == hole_metrics(filled, crop, tissue)
    assert 1 < tissue_metrics(filled, crop, across)["texture"] < 4


def test_missing_files_listed_and_unreadable_skipped(tiny_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    rows = list(csv.reader((data / "manifest.csv").open()))
    rows.append(["gone1.dcm", "0", "", "L", "CC"])
    rows.append(["gone2.dcm", "0", "", "R", "CC"])
    with (data / "manifest.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    assert _train(data, tmp_path / "m") == 2
    err = capsys.readouterr().err
    assert "2 missing file(s)" in err and "gone1.dcm" in err and "gone2.dcm" in err
    with (data / "manifest.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(rows[:-2])
    (data / rows[1][0]).write_bytes(b"garbage, not DICOM")
    assert _train(data, tmp_path / "m") == 0
    assert rows[1][0] in capsys.readouterr().out  # reported under "skipped"
    # A lesion mask that cannot be read (here: another shape than its image) is named, not its image.
    label, mask = rows[0].index("label"), rows[0].index("mask")
    positive = next(r for r in rows[1:] if r[label] == "1")
    shutil.copyfile(tiny_data / rows[1][0], data / rows[1][0])
    np.save(data / positive[mask], np.zeros((10, 10), bool))
    assert _train(data, tmp_path / "k") == 0
    skipped = json.loads(capsys.readouterr().out)["skipped"]
    assert f"{data / positive[mask]}: unreadable lesion mask (ValueError: shape (10, 10)" in skipped[-1]


def test_images_are_oriented_as_the_node_orients_them(tiny_data, tmp_path):
    """Without a laterality in the header or the manifest the chest wall's side is decided
    from the image, as explain.preprocess decides it: a mirrored image loads as the original."""
    import pydicom

    from cfia.manifest import Record
    from cfia.training.mammo_io import load_record

    rows = list(csv.reader((tiny_data / "manifest.csv").open()))
    name = next(r[0] for r in rows[1:] if r[rows[0].index("laterality")] == "L")
    ds = pydicom.dcmread(tiny_data / name)
    ds.PixelData = np.ascontiguousarray(ds.pixel_array[:, ::-1]).tobytes()
    for keyword in ("ImageLaterality", "Laterality"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.save_as(tmp_path / "mirrored.dcm")
    original = load_record(Record(tiny_data / name, 0, laterality="L"))
    mirrored = load_record(Record(tmp_path / "mirrored.dcm", 0))
    assert original.breast[:, 0].sum() > original.breast[:, -1].sum()  # chest wall on the left
    assert np.array_equal(mirrored.image, original.image)


def test_training_stops_early_on_what_needs_no_images(tiny_data, tmp_path, capsys, caplog, monkeypatch):
    """A model already in --out is not replaced unless --force (--out defaults to models/);
    no CUDA, a --val-data that shares images, and a --resume with other options or data stop
    before any image is read; another --threads resumes with a warning."""
    from cfia.training import inpainter

    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    m = tmp_path / "m"
    assert _train(data, m) == 0
    before = (m / "inpainter.pt").read_bytes()
    capsys.readouterr()
    assert _train(data, m, "--seed", "4") == 2
    assert (f"{m / 'inpainter.ckpt'} holds an earlier run (epoch 1), and {m / 'inpainter.pt'} exists; give --resume"
            in capsys.readouterr().err)
    assert (m / "inpainter.pt").read_bytes() == before
    assert _train(data, m, "--seed", "4", "--force") == 0
    assert _train(data, m, "--seed", "4", "--epochs", "2", "--resume", "--threads", "2") == 0
    assert any("--threads 2, the checkpoint's run used 1: the weights will not be bit-identical" in r.getMessage()
               for r in caplog.records)

    def read(*args, **kwargs):
        raise AssertionError("images read")

    monkeypatch.setattr(inpainter, "load_folder", read)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    capsys.readouterr()
    with (data / "manifest.csv").open("a", newline="") as fh:
        csv.writer(fh).writerow(["extra.dcm", "0", "", "L", "CC"])
    shutil.copyfile(data / list(csv.reader((data / "manifest.csv").open()))[1][0], data / "extra.dcm")
    for extra, says in ((["--device", "cuda"], "--device cuda: no CUDA device is available"),
                        (["--val-data", str(data)], "--val-data shares 3 image(s) with --data"),
                        (["--resume", "--seed", "4", "--epochs", "3"], f"data {data}: its manifest.csv changed"),
                        (["--resume", "--seed", "4", "--epochs", "3", "--val-data", str(tiny_data)],
                         f"val_data [] (now [{str(tiny_data.resolve())!r}])")):
        assert _train(data, m if "--resume" in extra else tmp_path / "n", *extra) == 2
        assert says in capsys.readouterr().err, extra
    # --resume beside a model but no checkpoint: says so (not "give --force", which would not help).
    (m / "inpainter.ckpt").unlink()
    assert _train(data, m, "--resume") == 2
    assert "--resume: no checkpoint" in capsys.readouterr().err


def test_what_would_teach_or_report_the_wrong_thing_is_refused(tiny_data, tmp_path, capsys):
    """A positive without its mask would teach its lesion as healthy tissue: skipped by
    path. A held-out folder without lesion-free images would turn the held-out report
    into one on training images: stopped. A --resume with other options: stopped."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    rows = list(csv.reader((data / "manifest.csv").open()))
    label, mask = rows[0].index("label"), rows[0].index("mask")
    positive = next(r for r in rows[1:] if r[label] == "1")
    positive[mask] = ""
    with (data / "manifest.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    assert _train(data, tmp_path / "m") == 0
    skipped = json.loads(capsys.readouterr().out)["skipped"]
    assert skipped == [f"{data / positive[0]} (a positive without a lesion mask)"]
    only_positive = tmp_path / "val"
    shutil.copytree(tiny_data, only_positive)
    rows = list(csv.reader((only_positive / "manifest.csv").open()))
    with (only_positive / "manifest.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([rows[0]] + [r for r in rows[1:] if r[label] == "1"])
    assert _train(tiny_data, tmp_path / "v", "--val-data", str(only_positive)) == 2
    assert "no lesion-free held-out images" in capsys.readouterr().err
    assert _train(tiny_data, tmp_path / "s", "--val-data", str(tiny_data)) == 2
    assert "--val-data shares 2 image(s) with --data" in capsys.readouterr().err
    assert _train(tiny_data, tmp_path / "m", "--epochs", "2", "--resume", "--crop-size", "48") == 2
    assert "crop_size 32 (now 48)" in capsys.readouterr().err


# --- shipped model -----------------------------------------------------------------------

def test_shipped_model_matches_card_and_keeps_texture(tiny_data):
    from cfia.bench.inpaint_metrics import hole_metrics
    from cfia.bench.inpainter import make_cases
    from cfia.training.mammo_io import load_folder

    assert MODEL.stat().st_size <= 15 * 2**20
    digest = hashlib.sha256(MODEL.read_bytes()).hexdigest()
    assert re.search(r"sha256[^0-9a-f]*([0-9a-f]{64})", CARD.read_text()).group(1) == digest
    learned, blur = make_inpainter("learned", MODEL), BlurFill()
    images, _ = load_folder(tiny_data, lesion_free_only=True)
    cases = make_cases(images, None, 2, 48, seed=0)
    tex = {"learned": [], "blur": []}
    for img, hole in cases:
        x, h = torch.from_numpy(img)[None, None], torch.from_numpy(hole.astype(np.float32))[None, None]
        for name, inp in (("learned", learned), ("blur", blur)):
            tex[name].append(hole_metrics(inp(x, h)[0, 0].numpy(), img, hole)["texture"])
    assert np.mean(tex["learned"]) > np.mean(tex["blur"])
    assert np.mean(tex["learned"]) > 0.3


class _MeanBrightness(torch.nn.Module):
    def forward(self, x):
        return (x.mean((1, 2, 3)) * 8 - 2)[:, None]  # one logit column


def test_bench_command_with_classifier(tiny_data, tmp_path, capsys):
    import json

    from cfia.bench.inpainter import main

    clf = tmp_path / "clf.ts"
    torch.jit.script(_MeanBrightness()).save(str(clf))
    out = tmp_path / "bench.json"
    assert main(["--data", str(tiny_data), "--model", str(MODEL), "--holes", "1", "--window", "48",
                 "--classifier", str(clf), "--input-size", "128x104", "--bounds", "--texture-match",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["quality"]) == {"learned", "learned_noise0", "learned_texture_match", "telea",
                                      "navier_stokes", "blur", "noise"}
    assert set(result["classifier_shift"]) >= {"learned", "learned_texture_match", "telea", "blur", "noise"}
    # Energy per band: Telea's smooth fill has next to none of the finest band; the
    # texture-matched fill differs from the plain one.
    bands = result["bands"]
    assert bands["telea"]["band 0-1 px"] < 0.2 < bands["learned"]["band 0-1 px"]
    assert bands["learned_texture_match"] != bands["learned"]
    assert all(v["mean_abs_dprob"] >= 0 for k, v in result["classifier_shift"].items() if not k.startswith("_"))
    shift = result["classifier_shift"]
    assert all(0 <= v["median_abs_dprob"] <= v["max_abs_dprob"] for k, v in shift.items() if not k.startswith("_"))
    for name in ("telea", "blur", "noise"):  # paired against the learned fill on the same regions
        assert shift[name]["minus_learned"] == pytest.approx(
            shift[name]["mean_abs_dprob"] - shift["learned"]["mean_abs_dprob"], abs=1e-6)
    assert "minus_learned" not in shift["learned"]
    # Bounds: texture uncorrelated with the hidden one costs SSIM even over an ideal smooth fill.
    b = result["bounds"]
    assert b["hidden low-pass (sigma 2)"]["ssim"] > b["hidden low-pass (sigma 2) + texture"]["ssim"]
    assert b["hidden low-pass (sigma 2) + texture"]["texture"] > 10 * b["hidden low-pass (sigma 2)"]["texture"]
    assert "| learned |" in capsys.readouterr().out


def test_input_size_trains_on_the_grid_the_node_inpaints_on(tiny_data, tmp_path, capsys):
    """The node inpaints on the classifier's input: a detector-size image reaches it about six
    times reduced, its air zeroed. Crops of the stored pixels have another scale (docs/models.md,
    "Training your own"); with --input-size the crops come from that input."""
    import torch

    from cfia.dicom_io import read_file
    from cfia.manifest import read_manifest
    from cfia.training.mammo_io import load_record

    records = read_manifest(tiny_data)
    positive = next(r for r in records if r.label == 1)
    node = read_file(positive.path).to_input((128, 96))
    loaded = load_record(positive, (128, 96))
    assert loaded.image.shape == (128, 96)
    assert torch.equal(torch.from_numpy(loaded.image), node.image[0])  # what the node's inpainter is given, air zeroed
    assert loaded.lesion is not None and loaded.lesion.any() and loaded.lesion.shape == (128, 96)
    assert _train(tiny_data, tmp_path / "m", "--input-size", "128x96") == 0
    report = json.loads((tmp_path / "m" / "inpainter.report.json").read_text())
    assert report["options"]["input_size"] == [128, 96], report.get("options")
