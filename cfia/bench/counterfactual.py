"""How well each counterfactual removes a lesion, and how healthy it looks itself.

    python -m cfia.bench.counterfactual --data FOLDER [--limit 40] [--tiles 16,24,48] [--tilings 1,5]
        [--grow 0,2,8] [--config PATH]

The explainer can only find a lesion whose replacement lowers the classifier's score,
so the counterfactual C is measured on its own, with the true lesion masks of a
`cfia phantom` folder. For the first --limit positive-called images: the probability
once the lesion, grown by each --grow (px, default 2), is replaced by C ("lesion+G <- C",
what the deletion side of the objective sees), once only that grown lesion is kept and
the rest of the breast is C ("kept lesion+G", the preservation side), and once the
whole image is C. For the first --limit negatives: the probability of C, against that
of the image, and the change in probability when --regions random regions (holes of the
inpainter's training kind in a square of 96 px at a 512-row input, inside the breast) are
replaced by C one at a time: a counterfactual of healthy tissue should leave it alone.
C is the learned inpainter's tiled fill at each --tiles size (default: the config's
explainer `tile`) and each --tilings count (default: the config's explainer `tilings`:
shifted grids, median), so by default the fill the explainer uses, the blur
perturbation (`blur_sigma`), and, as the ideal, the inpainter's fill of the lesion
itself as one hole (needs the mask, so the explainer cannot use it).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _counterfactuals(pipeline, tiles, tilings=(1,)):
    from explain.perturbation import blurred, tiled_counterfactual

    out = {}
    for t in tiles:
        for n in tilings:
            name = f"tiled {t} px" + (f", median of {n} grids" if n > 1 else "")
            out[name] = lambda x, t=t, n=n: tiled_counterfactual(x, pipeline.inpainter, t, n)
    out[f"blur sigma {pipeline.cfg.explainer.blur_sigma:g}"] = lambda x: blurred(x, pipeline.cfg.explainer.blur_sigma)
    return out


def measure(pipeline, folder: Path, limit: int, tiles, grows=(2,), tilings=(1,), regions: int = 4,
            seed: int = 0) -> dict:
    """{"positives": {C: {"lesion+G": [...], "kept+G": [...], "whole": [...]}, ...},
    "negatives": {C: {"whole": [...], "region change": [...]}}} probabilities (and changes
    in probability for random regions replaced by C), G for each grow."""
    import torch

    from cfia.bench.inpainter import random_region
    from explain.perturbation import apply

    from cfia.dicom_io import read_file
    from cfia.evaluate import lesion_inpainted_score, lesion_on_input, require_masks
    from cfia.manifest import read_manifest, read_mask

    variants = _counterfactuals(pipeline, tiles, tilings)
    res = {"positives": {"image": {"whole": []}, "lesion as one hole": {f"lesion+{g}": [] for g in grows}},
           "negatives": {"image": {"whole": []}}}
    for k in variants:
        res["positives"][k] = dict({f"lesion+{g}": [] for g in grows}, **{f"kept+{g}": [] for g in grows}, whole=[])
        res["negatives"][k] = {"whole": [], "region change": []}
    counts = {1: 0, 0: 0}
    for rec in require_masks(read_manifest(folder)):
        if counts.get(rec.label, limit) >= limit:
            continue
        src = read_file(rec.path)
        pre = src.to_input(pipeline.cfg.models.classifier.input_size)
        x = pre.image[None].to(pipeline.device)
        p = pipeline.probability(x)
        if rec.label == 1 and p < 0.5:
            continue
        counts[rec.label] += 1
        side = res["positives" if rec.label == 1 else "negatives"]
        side["image"]["whole"].append(p)
        lesions = {}
        if rec.label == 1:
            lesion = read_mask(rec.mask)
            lesions = {g: lesion_on_input(pre, lesion, g).to(x.device) for g in grows}
            for g, hole in lesions.items():
                side["lesion as one hole"][f"lesion+{g}"].append(lesion_inpainted_score(pipeline, x, hole))
        breast = (pre.breast[None] > 0.5).float().to(x.device)
        window = max(8, round(96 * x.shape[-2] / 512))
        rng = np.random.default_rng([seed, counts[0]])
        holes = [] if rec.label == 1 else [
            torch.from_numpy(random_region(rng, breast[0, 0].cpu().numpy() > 0.5, window))[None, None].to(x)
            for _ in range(regions)]
        for name, make in variants.items():
            c = make(x)
            side[name]["whole"].append(pipeline.probability(c))
            for hole in holes:
                side[name]["region change"].append(pipeline.probability(apply(x, hole, c)) - p)
            for g, hole in lesions.items():
                side[name][f"lesion+{g}"].append(pipeline.probability(apply(x, hole, c)))
                side[name][f"kept+{g}"].append(pipeline.probability(apply(x, (1.0 - hole) * breast, c)))
    return res


def table(res: dict, grows=(2,)) -> str:
    def cell(v):
        return f"{np.mean(v):.3f} ({np.median(v):.3f})" if v else "—"

    cols = [f"lesion+{g}" for g in grows] + [f"kept+{g}" for g in grows]
    heads = [f"positives: lesion+{g} px <- C" for g in grows] + [f"positives: lesion+{g} px kept, rest C"
                                                                  for g in grows]
    def change(v):
        return f"{np.mean(v):+.4f} ({np.mean(np.abs(v)):.4f})" if v else "—"

    lines = ["| C | " + " | ".join(heads) + " | positives: whole image C | negatives: whole image C "
             "| negatives: a random region <- C, change in p (mean abs) |",
             "|---|" + "---|" * (len(cols) + 3)]
    for name, pos in res["positives"].items():
        neg = res["negatives"].get(name, {})
        cells = [cell(pos.get(k, [])) for k in cols] + [cell(pos.get("whole", [])), cell(neg.get("whole", [])),
                                                        change(neg.get("region change", []))]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cfia.bench.counterfactual", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="cfia phantom folder (manifest.csv with lesion masks)")
    p.add_argument("--limit", type=int, default=40, help="positive-called images and negatives, each (default 40)")
    p.add_argument("--tiles", help="comma-separated tile sizes of the tiled fill (default: the config's "
                                   "explainer.tile)")
    p.add_argument("--tilings", help="comma-separated odd counts of shifted grids (default: the config's "
                                     "explainer.tilings)")
    p.add_argument("--regions", type=int, default=4, help="random regions per negative (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random regions (default 0)")
    p.add_argument("--grow", default="2", help="comma-separated px the lesion is grown by (default 2)")
    p.add_argument("--config", help="config file (default: config.yaml in the install folder)")
    p.add_argument("--json", help="also write the per-image probabilities as JSON")
    args = p.parse_args(argv)
    from cfia.bench import check_output, refuse
    from cfia.cli import load_config
    from cfia.config import ConfigError
    from cfia.manifest import DataError
    from cfia.pipeline import Pipeline

    check_output(args.json, "--json")
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        return refuse(exc)

    def numbers(flag, text):
        try:
            return [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            p.error(f"{flag} {text!r}: expected comma-separated whole numbers")

    tiles = numbers("--tiles", args.tiles) if args.tiles else [cfg.explainer.tile]
    grows = numbers("--grow", args.grow)
    tilings = numbers("--tilings", args.tilings) if args.tilings else [cfg.explainer.tilings]
    if any(g < 0 for g in grows):
        p.error(f"--grow {args.grow!r}: pixels must be >= 0")
    if any(n < 1 or n % 2 == 0 for n in tilings):
        p.error(f"--tilings {args.tilings!r}: counts must be odd and >= 1")
    pipeline = Pipeline(cfg)
    try:
        res = measure(pipeline, Path(args.data), args.limit, tiles, grows, tilings, args.regions, args.seed)
    except DataError as exc:
        return refuse(exc)
    n_pos, n_neg = len(res["positives"]["image"]["whole"]), len(res["negatives"]["image"]["whole"])
    print(f"probability, mean (median); {n_pos} positive-called images, {n_neg} negatives")
    print(table(res, grows))
    if args.json:
        Path(args.json).write_text(json.dumps({"command": "python -m cfia.bench.counterfactual " +
                                               " ".join(argv or sys.argv[1:]), "probabilities": res}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
