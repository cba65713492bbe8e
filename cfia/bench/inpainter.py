"""Measure the inpainters side by side on held-out lesion-free mammograms.

    python -m cfia.bench.inpainter --data DIR [--model models/inpainter.pt] [--size 512x416]
        [--holes 2] [--seed 0] [--classifier model.ts --input-size 512x352] [--bounds] [--texture-match]

Quality: each image gets `holes` random holes (strokes and blobs, `coverage` of a
`window`-pixel square placed inside the breast); every method fills the same holes.
Reports MAE in the hole, SSIM over the hole's bounding box, texture = high-pass energy
(sigma 2) in the hole relative to the original's, and fill time per image.
Classifier shift (--classifier): mean |f(filled) - f(original)| on the same kind of
random regions of the same healthy images, on the classifier's input exactly as the node
prepares it (explain.preprocess), for learned, Telea, blur and noise fills: a good
counterfactual of healthy tissue should leave a healthy image's score alone.
Texture match (--texture-match): also the learned fill with its texture scaled to the
ring's (explain.inpaint.match_ring_texture), in both tables, and each fill's energy per
band (0-1, 1-2, 2-4, 4-8 px) relative to the original's, which shows whether the fill's
texture has the hidden tissue's spectrum and not only its energy.
Bounds (--bounds): the same metrics for fills that see the hidden pixels, to show how
far SSIM lets any fill with real-looking (hence uncorrelated) texture go.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from typing import Callable

import cv2
import numpy as np
import torch

from explain.inpaint import TEXTURE_BAND_SIGMAS, Inpainter, make_inpainter

from ..cli import _positive, _size
from ..config import DEFAULT_CLASSIFIER_INPUT
from . import check_output, refuse
from .inpaint_metrics import hole_metrics, summarise

QUALITY_METHODS = ("learned", "telea", "navier_stokes", "blur", "noise")  # + learned_noise0
SHIFT_METHODS = ("learned", "telea", "blur", "noise")


def resize_pair(image: np.ndarray, breast: np.ndarray, size: tuple[int, int] | None):
    if size is None or tuple(image.shape) == tuple(size):
        return image, breast
    rows, cols = size
    img = cv2.resize(image, (cols, rows), interpolation=cv2.INTER_AREA)
    br = cv2.resize(breast.astype(np.float32), (cols, rows), interpolation=cv2.INTER_AREA) > 0.5
    return img, br


def random_region(rng: np.random.Generator, breast: np.ndarray, window: int,
                  coverage: tuple[float, float] = (0.05, 0.4)) -> np.ndarray:
    """A bool hole of the training kind inside a window x window square wholly in the breast."""
    from cfia.training.holes import random_hole

    w = window
    frac = cv2.boxFilter(breast.astype(np.float32), -1, (w, w), anchor=(0, 0), normalize=True,
                         borderType=cv2.BORDER_CONSTANT)
    frac[breast.shape[0] - w + 1:, :] = 0
    frac[:, breast.shape[1] - w + 1:] = 0
    cand = np.flatnonzero(frac >= 0.999)
    if cand.size == 0:
        cand = np.flatnonzero(frac >= frac.max() - 1e-6)
    r, c = np.unravel_index(cand[rng.integers(cand.size)], breast.shape)
    hole = np.zeros(breast.shape, bool)
    hole[r: r + w, c: c + w] = random_hole(rng, w, w, coverage) > 0.5
    return hole


def make_cases(images, size, holes_per_image: int, window: int, seed: int):
    """[(image, hole)] with holes drawn from a generator seeded by `seed`."""
    rng = np.random.default_rng(seed)
    cases = []
    for m in images:
        img, br = resize_pair(m.image, m.breast, size)
        for _ in range(holes_per_image):
            hole = random_region(rng, br, window)
            if hole.any():
                cases.append((img, hole))
    return cases


def quality_table(inpainters: dict[str, Inpainter], cases, bands: dict | None = None) -> dict:
    """MAE / SSIM / texture and fill time per method. Given a dict `bands`, also puts in it,
    per method, the median over the same fills of each band's energy in the hole over the
    original's (band_energy_ratios; 1 = the hidden tissue's level)."""
    table = {}
    for name, inp in inpainters.items():
        rows, ratios, seconds = [], [], 0.0
        for img, hole in cases:
            x = torch.from_numpy(img)[None, None]
            h = torch.from_numpy(hole.astype(np.float32))[None, None]
            t = time.perf_counter()
            out = inp(x, h)[0, 0].numpy()
            seconds += time.perf_counter() - t
            rows.append(hole_metrics(out, img, hole))
            if bands is not None:
                ratios.append(band_energy_ratios(out, img, hole))
        table[name] = {**summarise(rows), "ms_per_fill": 1000 * seconds / max(len(cases), 1)}
        if bands is not None:
            bands[name] = dict(zip(BAND_NAMES, np.median(np.array(ratios), axis=0).tolist()))
    return table


BAND_SIGMAS = TEXTURE_BAND_SIGMAS  # the bands texture_match scales
BAND_NAMES = ("band 0-1 px", "band 1-2 px", "band 2-4 px", "band 4-8 px")


def band_energy_ratios(out: np.ndarray, orig: np.ndarray, hole: np.ndarray) -> list[float]:
    from scipy import ndimage

    def bands(x):
        levels = [x] + [ndimage.gaussian_filter(x, s) for s in BAND_SIGMAS]
        return [a - b for a, b in zip(levels[:-1], levels[1:])]

    hole = hole.astype(bool)
    return [float((a[hole] ** 2).mean() / max((b[hole] ** 2).mean(), 1e-12))
            for a, b in zip(bands(out.astype(np.float64)), bands(orig.astype(np.float64)))]


def bounds_table(cases, shift: tuple[int, int] = (23, 11)) -> dict:
    """What SSIM allows a textured fill: fills that see the hidden pixels.

    'hidden low-pass': the original blurred (sigma 2) inside the hole, an ideal smooth
    prediction no inpainter can make; '+ texture': plus the original's high-pass
    (sigma 2) taken `shift` pixels away, texture of the right kind and energy that is
    uncorrelated with the hidden one, as any plausible texture must be; 'telea +
    texture': the same texture over OpenCV's Telea fill."""
    from scipy import ndimage

    from .inpaint_metrics import high_pass

    telea = make_inpainter("telea")
    rows = {"hidden low-pass (sigma 2)": [], "hidden low-pass (sigma 2) + texture": [], "telea + texture": []}
    for img, hole in cases:
        x = img.astype(np.float64)
        lo = ndimage.gaussian_filter(x, 2.0)
        tex = np.roll(high_pass(x), shift, (0, 1))
        tel = telea(torch.from_numpy(img)[None, None], torch.from_numpy(hole.astype(np.float32))[None, None])[0, 0].numpy()
        for name, fill in zip(rows, (lo, lo + tex, tel + tex)):
            rows[name].append(hole_metrics(np.where(hole, np.clip(fill, 0.0, 1.0), x), img, hole))
    return {name: summarise(r) for name, r in rows.items()}


def classifier_shift(classifier: Callable[[torch.Tensor], torch.Tensor], inpainters: dict[str, Inpainter],
                     cases, batch: int = 8) -> dict:
    """Mean |f(filled) - f(original)| per method; `classifier` maps (B,1,H,W) -> (B,) probabilities.

    With a 'learned' entry, every other method also gets the paired difference of its
    |change| minus the learned fill's on the same regions (mean and standard error):
    the regions vary far more than the methods, so only the pairing resolves them."""
    out, changes = {}, {}
    imgs = torch.stack([torch.from_numpy(img)[None] for img, _ in cases])
    holes = torch.stack([torch.from_numpy(h.astype(np.float32))[None] for _, h in cases])
    with torch.no_grad():
        base = torch.cat([classifier(imgs[i: i + batch]).reshape(-1) for i in range(0, len(imgs), batch)])
        for name, inp in inpainters.items():
            probs = torch.cat([classifier(inp(imgs[i: i + batch], holes[i: i + batch])).reshape(-1)
                               for i in range(0, len(imgs), batch)])
            d = changes[name] = (probs - base).abs()
            out[name] = {"mean_abs_dprob": float(d.mean()), "sem_abs_dprob": float(d.std() / len(d) ** 0.5),
                         "median_abs_dprob": float(d.median()), "max_abs_dprob": float(d.max())}
    for name, d in changes.items():
        if "learned" in changes and name != "learned":
            diff = d - changes["learned"]
            out[name]["minus_learned"] = float(diff.mean())
            out[name]["minus_learned_sem"] = float(diff.std() / len(diff) ** 0.5)
    out["_baseline_mean_prob"] = float(base.mean())
    return out


def torchscript_classifier(path: str, class_index: int = 1, output: str = "logits", device: str = "cpu"):
    """A TorchScript file as a (B,1,H,W) -> (B,) probability callable.

    output 'logits': one column -> sigmoid, several -> softmax[:, class_index];
    'probabilities': column class_index (or the only one) as it is."""
    model = torch.jit.load(path, map_location=device).eval()

    def f(x: torch.Tensor) -> torch.Tensor:
        y = model(x.to(device))
        y = y.reshape(y.shape[0], -1)
        if output == "logits":
            return torch.sigmoid(y[:, 0]) if y.shape[1] == 1 else torch.softmax(y, 1)[:, class_index]
        return y[:, 0] if y.shape[1] == 1 else y[:, class_index]

    return f


def markdown(table: dict, columns: tuple[str, ...]) -> str:
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in table.items():
        if name.startswith("_"):
            continue
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:.4g}" if c in row else "—" for c in columns) + " |")
    return "\n".join(lines)


def classifier_input_cases(records, input_size, holes_per_image: int, window: int, seed: int):
    """[(image, hole)] on the classifier's input grid exactly as the node makes it
    (explain.preprocess: polarity, breast crop, resize, normalisation), holes inside
    the breast: the regions the explainer replaces when it runs."""

    from cfia.dicom_io import read_file

    rng = np.random.default_rng(seed)
    cases = []
    for rec in records:
        src = read_file(rec.path)
        pre = src.to_input(input_size)
        img, br = pre.image[0].numpy(), pre.breast[0].numpy() > 0.5
        for _ in range(holes_per_image):
            hole = random_region(rng, br, window)
            if hole.any():
                cases.append((img, hole))
    return cases


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cfia.bench.inpainter", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="held-out folder with manifest.csv (label-0 images are used)")
    p.add_argument("--model", default="models/inpainter.pt", help="learned inpainter checkpoint")
    p.add_argument("--size", type=_size, default=None, help="resize images to ROWSxCOLS first (default: as stored)")
    p.add_argument("--holes", type=int, default=2, help="random holes per image (default 2)")
    p.add_argument("--window", type=_positive, default=96, help="square the hole is drawn in, pixels (default 96)")
    p.add_argument("--limit", type=int, default=None, help="use the first N lesion-free images only")
    p.add_argument("--seed", type=int, default=0, help="seed of the holes (default 0)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--classifier", help="TorchScript classifier: also report the score shift of each fill")
    p.add_argument("--input-size", type=_size, default=DEFAULT_CLASSIFIER_INPUT,
                   help="classifier input ROWSxCOLS (default: the shipped model's, %dx%d)" % DEFAULT_CLASSIFIER_INPUT)
    p.add_argument("--class-index", type=int, default=1, help="explained class (default 1)")
    p.add_argument("--output", choices=("logits", "probabilities"), default="logits", help="what the classifier returns")
    p.add_argument("--bounds", action="store_true",
                   help="also score fills that see the hidden pixels: the SSIM a textured fill can reach")
    p.add_argument("--texture-match", action="store_true",
                   help="also the learned fill with its texture matched to the ring's, and energy per band")
    p.add_argument("--json", help="also write the results to this JSON file")
    args = p.parse_args(argv)
    check_output(args.json, "--json")
    torch.set_num_threads(args.threads)

    from cfia.manifest import read_manifest
    from cfia.training.mammo_io import load_folder

    try:  # DataError (the folder), InpainterError (--model), a classifier file that does not load
        images, skipped = load_folder(args.data, lesion_free_only=True)
        records = [r for r in read_manifest(args.data) if not r.label and str(r.path) not in skipped]
        inpainters = {k: make_inpainter(k, args.model if k == "learned" else None) for k in QUALITY_METHODS}
        # The same network with its noise input off: what texture costs in MAE / SSIM.
        inpainters["learned_noise0"] = make_inpainter("learned", args.model, noise_scale=0.0)
        clf = torchscript_classifier(args.classifier, args.class_index, args.output) if args.classifier else None
    except (ValueError, RuntimeError) as exc:
        return refuse(exc)
    images = images[: args.limit] if args.limit else images
    records = records[: args.limit] if args.limit else records
    smallest = min((min(args.size or m.image.shape) for m in images), default=args.window)
    if args.window > smallest:
        return refuse(f"--window {args.window}: larger than the images ({smallest} px on their shorter side)")
    shift_methods = SHIFT_METHODS
    if args.texture_match:
        inpainters["learned_texture_match"] = make_inpainter("learned", args.model, texture_match=True)
        shift_methods += ("learned_texture_match",)
    cases = make_cases(images, args.size, args.holes, args.window, args.seed)
    bands = {} if args.texture_match else None  # energy per band, from the quality table's fills
    result = {"command": "python -m cfia.bench.inpainter " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
                         f"{args.threads} thread(s)",
              "images": len(images), "fills": len(cases), "skipped": skipped,
              "quality": quality_table(inpainters, cases, bands)}
    print(markdown(result["quality"], ("mae", "ssim", "texture", "ms_per_fill")))
    if bands is not None:
        result["bands"] = bands
        print()
        print(markdown(bands, BAND_NAMES))
    if args.bounds:
        result["bounds"] = bounds_table(cases)
        print()
        print(markdown(result["bounds"], ("mae", "ssim", "texture")))
    if clf is not None:
        shift_cases = classifier_input_cases(records, args.input_size, args.holes,
                                             max(8, args.window * args.input_size[0] // 512), args.seed + 1)
        result["classifier_shift"] = classifier_shift(clf, {k: inpainters[k] for k in shift_methods}, shift_cases)
        print()
        print(markdown(result["classifier_shift"], ("mean_abs_dprob", "sem_abs_dprob", "median_abs_dprob",
                                                    "max_abs_dprob", "minus_learned", "minus_learned_sem")))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
