"""How the classifier's AUC holds when the acquisition differs from its training data.

    python -m cfia.bench.robustness --data FOLDER [--model models/classifier.ts] [--json OUT]

Every image of a `manifest.csv` folder is altered on its display values (its stored pixels
turned dense-bright, air dark, as explain.preprocess.display_values does for MONOCHROME1 and
For Processing images; `altered`), before the rest of cfia's preprocessing, the way another
detector or processing chain might differ: a gamma
curve, added noise (white or correlated), a softer (blurred) or coarser
(half-resolution) detector, a label burned in beside the breast, unexposed strips at the
collimated edges, strands the phantom lacks, a lead marker on the skin line, a breast
implant behind the tissue, a biopsy marker clip in it, air added around the breast. The classifier
then scores it through the run-time path
(explain.preprocess + the adapter); the table gives AUC and accuracy per alteration and,
when "as stored" runs first (the default), how far each alteration moves each image's
score and how many calls (p >= 0.5) it changes.
The phantom has no other sources, so this is the cheapest stand-in for "mammograms
from elsewhere"; it is not real data.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch
from scipy import ndimage

from ..config import DEFAULT_CLASSIFIER_INPUT
from . import check_output, refuse
from ..cli import _size


def _gamma(g):
    def f(px, rng):
        lo, hi = float(px.min()), float(px.max())
        return lo + (hi - lo) * ((px - lo) / max(hi - lo, 1e-9)) ** g
    return f


def _bright_sd(px) -> float:
    """The standard deviation of the brightest 70 % of the pixels: the noise and strands' unit.
    Not the breast's own s.d.: a phantom's breast fills 30-70 % of the image, so this takes in air
    and the step to it, about 2.9 x the breast's s.d. (median over 400 phantoms, 0.9-4.7 x;
    docs/models.md, "Other acquisitions"). Kept as it is so that every figure stays reproducible."""
    return float(px[px > np.percentile(px, 30)].std())


def _noise(fraction):
    def f(px, rng):  # white noise, `fraction` of _bright_sd (not of the breast's own s.d.)
        return px + rng.normal(0.0, fraction * _bright_sd(px), px.shape)
    return f


def _correlated_noise(fraction, sigma):
    def f(px, rng):  # white noise Gaussian-filtered (sigma px), then scaled as _noise's
        n = ndimage.gaussian_filter(rng.normal(0.0, 1.0, px.shape), sigma)
        return px + n * (fraction * _bright_sd(px) / float(n.std()))
    return f


def _blur(sigma):
    return lambda px, rng: ndimage.gaussian_filter(px, sigma)


def _half_resolution(px, rng):
    small = ndimage.zoom(px, 0.5, order=1)
    return ndimage.zoom(small, np.array(px.shape) / np.array(small.shape), order=1)


def _chest_wall_left(px) -> bool:
    """The breast lies against the left edge: its outer tenth is the brighter one
    (display values, air dark: `altered`)."""
    edge = max(1, px.shape[1] // 10)
    return bool(px[:, :edge].mean() > px[:, -edge:].mean())


def _burned_in_label(px, rng):
    """A technologist's label as many sites burn it in: a box at the brightest displayed
    value with the view's letters cut out, in the top corner away from the breast
    (the side whose outer columns are darker: air)."""
    import cv2

    rows, cols = px.shape
    h, w = max(8, rows * 6 // 100), max(24, cols * 22 // 100)
    r0 = rows * 2 // 100
    c0 = cols - cols * 2 // 100 - w if _chest_wall_left(px) else cols * 2 // 100
    letters = np.zeros((h, w), np.uint8)
    cv2.putText(letters, "L MLO", (w // 12, h * 3 // 4), cv2.FONT_HERSHEY_SIMPLEX, h / 40, 255, max(1, h // 12))
    out = px.copy()
    out[r0:r0 + h, c0:c0 + w] = np.where(letters > 0, px.min(), px.max())
    return out


def _collimated_edges(px, rng):
    """Strips the collimator kept unexposed, at the brightest displayed value: along the
    top, the bottom and the edge away from the breast, 2 % of the image deep."""
    rows, cols = px.shape
    depth = max(2, rows // 50)
    out = px.copy()
    out[:depth], out[-depth:] = px.max(), px.max()
    if _chest_wall_left(px):
        out[:, -depth:] = px.max()
    else:
        out[:, :depth] = px.max()
    return out


def _strands(px, rng):
    """Curvilinear strands (ducts, Cooper's ligaments) that run from the chest wall and
    converge on the nipple, as in real breasts and not in the phantom's isotropic
    texture: thin, bent, a little brighter than the tissue (up to 0.25 x _bright_sd, about
    0.7 x the breast's own pixel s.d.), so they resemble a spiculated mass's spicules without a mass."""
    import cv2

    rows, cols = px.shape
    breast = _breast(px)
    flip = not _chest_wall_left(px)  # work with the chest wall on the left
    breast = breast[:, ::-1] if flip else breast
    reach = np.nonzero(breast.any(axis=0))[0].max()
    nipple = np.array([reach, np.nonzero(breast[:, reach])[0].mean()])
    wall = np.nonzero(breast[:, 0])[0]
    if wall.size == 0:
        return px
    scale = rows / 512
    canvas = np.zeros((rows, cols), np.float32)
    for _ in range(int(rng.integers(25, 50))):
        point = np.array([0.0, float(rng.choice(wall))])
        length = reach * rng.uniform(0.4, 0.9)
        heading = np.arctan2(*(nipple - point)[::-1]) + rng.normal(0.0, 0.25)
        points = [point.copy()]
        while np.hypot(*(points[-1] - points[0])) < length:
            toward = np.arctan2(*(nipple - point)[::-1])
            heading += rng.normal(0.0, 0.15) + 0.1 * np.angle(np.exp(1j * (toward - heading)))
            point = point + 2.0 * scale * np.array([np.cos(heading), np.sin(heading)])
            points.append(point.copy())
        cv2.polylines(canvas, [np.round(np.array(points)).astype(np.int32)], False, float(rng.uniform(0.4, 1.0)),
                      thickness=max(1, int(round(scale))), lineType=cv2.LINE_AA)
    canvas = ndimage.gaussian_filter(canvas, 0.7 * scale) * breast
    canvas = canvas[:, ::-1] if flip else canvas
    return px + 0.25 * _bright_sd(px) * canvas / max(float(canvas.max()), 1e-9)


def _breast(px) -> np.ndarray:
    from skimage.filters import threshold_otsu

    return px > threshold_otsu(px)


def _marker_on_skin(px, rng):
    """A lead letter imaged on the skin line a third of the way down the breast: saturated
    (the brightest displayed value), 5 % of the image high, touching the breast."""
    import cv2

    rows, cols = px.shape
    breast = _breast(px)
    covered = np.nonzero(breast.any(axis=1))[0]
    if covered.size == 0:
        return px
    row = int(covered[len(covered) // 3])  # a third of the way down the breast
    inside = np.nonzero(breast[row])[0]
    col = inside.max() if _chest_wall_left(px) else inside.min()
    size = max(8, rows // 20)
    letter = np.zeros((rows, cols), np.uint8)
    cv2.putText(letter, "R", (col - size // 2, row + size // 2), cv2.FONT_HERSHEY_SIMPLEX, size / 22, 255,
                max(2, size // 6))
    return np.where(letter > 0, px.max(), px)


def _implant(px, rng):
    """A breast implant seen through the tissue (a full-implant view, not the implant-displaced
    one): a smooth ellipse behind the gland, against the chest wall, half the breast deep and
    half its height high, at 95 % of the way to the brightest displayed value (silicone stops
    nearly every photon), so the tissue over it keeps a twentieth of its contrast."""
    breast = _breast(px)
    rows_in = np.nonzero(breast.any(axis=1))[0]
    cols_in = np.nonzero(breast.any(axis=0))[0]
    if rows_in.size == 0:
        return px
    left = _chest_wall_left(px)
    depth = cols_in.max() - cols_in.min() + 1
    centre_row = (rows_in.min() + rows_in.max()) / 2
    centre_col = cols_in.min() if left else cols_in.max()
    yy, xx = np.mgrid[: px.shape[0], : px.shape[1]]
    inside = ((yy - centre_row) / (0.25 * rows_in.size)) ** 2 + ((xx - centre_col) / (0.5 * depth)) ** 2 <= 1
    profile = ndimage.gaussian_filter(inside.astype(np.float64), max(1.0, px.shape[0] / 100)) * breast
    return px + 0.95 * (float(px.max()) - px) * profile


def _clip(px, rng):
    """A biopsy marker clip: a saturated bar about 3 mm long (1 % of the rows at the phantom's
    0.47 mm pixels, 6 pixels at 512 rows) at a random place well inside the breast."""
    import cv2

    inner = np.argwhere(ndimage.binary_erosion(_breast(px), iterations=max(2, px.shape[0] // 20)))
    if inner.size == 0:
        return px
    row, col = inner[rng.integers(len(inner))]
    half = max(2, px.shape[0] // 170)
    angle = rng.uniform(0, np.pi)
    dr, dc = half * np.sin(angle), half * np.cos(angle)
    clip = np.zeros(px.shape, np.uint8)
    cv2.line(clip, (int(col - dc), int(row - dr)), (int(col + dc), int(row + dr)), 255, max(1, half // 2))
    return np.where(clip > 0, px.max(), px)


def _air(where: str):
    """Air (the image's darkest displayed value) added around the image, as exports and
    larger detectors leave more of it: all round (an eighth of the rows on each side), above
    and below (a quarter of the rows each), or a strip of 3 % of the columns on the chest
    wall's side, so the breast touches no edge there."""
    def f(px, rng):
        rows, cols = px.shape
        widths = {"all": ((rows // 8,) * 2, (rows // 8,) * 2), "top-bottom": ((rows // 4,) * 2, (0, 0)),
                  "chest": ((0, 0), (max(1, cols * 3 // 100), 0) if _chest_wall_left(px)
                            else (0, max(1, cols * 3 // 100)))}[where]
        return np.pad(px, widths, constant_values=float(px.min()))
    return f


ALTERATIONS = {
    "as stored": lambda px, rng: px,
    "gamma 0.7": _gamma(0.7),
    "gamma 1.4": _gamma(1.4),
    "noise 0.1 sd": _noise(0.1),
    "noise 0.3 sd": _noise(0.3),
    "correlated noise 0.3 sd": _correlated_noise(0.3, 2.0),
    "blur sigma 1 px": _blur(1.0),
    "half resolution": _half_resolution,
    "burned-in label": _burned_in_label,
    "collimated edges": _collimated_edges,
    "strands": _strands,
    "marker on the skin line": _marker_on_skin,
    "breast implant": _implant,
    "biopsy clip": _clip,
    "air all round": _air("all"),
    "air above and below": _air("top-bottom"),
    "air strip at the chest wall": _air("chest"),
}

# The alterations that keep the image's pixel grid, so a lesion mask still fits (cfia
# evaluate --alter): the air ones pad the image.
SAME_GRID = {name: f for name, f in ALTERATIONS.items() if not name.startswith("air ")}


def altered(src, alter, rng):
    """`src` (a cfia.dicom_io.SourceImage) with `alter` applied to its display values.

    The alterations take dense tissue bright and air dark (the chest wall is the brighter
    edge, a label or marker is the brightest value, air the darkest), which a MONOCHROME2
    For Presentation image's stored values are and a MONOCHROME1 or For Processing one's
    are not. So the stored values are first turned into display values (explain.preprocess
    .display_values) and the result is a MONOCHROME2 For Presentation image of them: the
    preprocessing starts with display_values, which leaves those as they are, so every
    source polarity reaches the classifier altered alike."""
    from dataclasses import replace

    from explain.preprocess import display_values

    values = display_values(src.pixels, src.photometric, src.for_processing).astype(np.float64)
    return replace(src, pixels=alter(values, rng).astype(np.float32), photometric="MONOCHROME2",
                   for_processing=False)


def scores(records, clf, input_size, alter, seed: int = 0) -> np.ndarray:

    from cfia.dicom_io import read_file

    rng = np.random.default_rng(seed)
    out = []
    for rec in records:
        src = altered(read_file(rec.path), alter, rng)
        pre = src.to_input(input_size)
        with torch.no_grad():
            out.append(float(clf.probability(pre.image[None])[0]))
    return np.array(out)


def _cell(value, spec: str) -> str:
    """A table cell: the value formatted, or a dash where there is none (the AUC and the
    specificity of a folder without normals, the change before "as stored" has run)."""
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cfia.bench.robustness", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder with manifest.csv (labels 0/1)")
    p.add_argument("--model", default="models/classifier.ts", help="TorchScript classifier")
    p.add_argument("--input-size", type=_size, default=DEFAULT_CLASSIFIER_INPUT,
                   help="classifier input ROWSxCOLS (default: the shipped model's, %dx%d)" % DEFAULT_CLASSIFIER_INPUT)
    p.add_argument("--limit", type=int, help="first N images only")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--json", help="also write the table as JSON")
    p.add_argument("--only", help="comma-separated alterations, spaces as hyphens (e.g. as-stored,strands); "
                                  "default all")
    args = p.parse_args(argv)
    check_output(args.json, "--json")
    torch.set_num_threads(args.threads)

    from explain.classifier import load_classifier

    from cfia.manifest import read_manifest
    from cfia.training.classifier import report

    size = args.input_size
    try:
        records = read_manifest(args.data)[: args.limit] if args.limit else read_manifest(args.data)
        clf = load_classifier("torchscript", args.model, input_size=size)
    except ValueError as exc:  # DataError; a classifier file missing or unreadable
        return refuse(exc)
    labels = np.array([r.label for r in records])
    named = {name.replace(" ", "-"): name for name in ALTERATIONS}
    wanted = [w.strip() for w in args.only.split(",")] if args.only else list(named)
    unknown = [w for w in wanted if w not in named]
    if unknown:
        p.error(f"--only: {', '.join(unknown)} not among {', '.join(named)}")
    table, stored = {}, None
    print("| acquisition | AUC | accuracy | sensitivity | specificity | mean abs(p - p as stored) | calls changed |\n"
          "|---|---|---|---|---|---|---|")
    for name in (named[w] for w in wanted):
        p_alt = scores(records, clf, size, ALTERATIONS[name])
        r = report(p_alt, labels)
        if name == "as stored":
            stored = p_alt
        if stored is not None:  # the same image's own score as stored: how far the alteration moves it
            r["mean_abs_change"] = round(float(np.abs(p_alt - stored).mean()), 4)
            r["calls_changed"] = int(((p_alt >= 0.5) != (stored >= 0.5)).sum())
        table[name] = r
        print(f"| {name} | {_cell(r['auc'], '.3f')} | {_cell(r['accuracy'], '.3f')} | "
              f"{_cell(r['sensitivity'], '.3f')} | {_cell(r['specificity'], '.3f')} | "
              f"{_cell(r.get('mean_abs_change'), '.4f')} | {_cell(r.get('calls_changed'), 'd')} |", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"command": "python -m cfia.bench.robustness " + " ".join(argv or sys.argv[1:]),
                       "n": len(records), "positives": int(labels.sum()), "table": table}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
