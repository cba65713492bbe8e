"""Sanity checks of the saliency maps: do they depend on the classifier, or only on the image?

    python -m cfia.bench.sanity --data FOLDER [--limit 20] [--occlusion-limit 5] [--steps 4]
        [--methods cf,blur,gradcam,occlusion,ig] [--downsample 4] [--config PATH] [--out report.json]

The model-randomisation test of Adebayo et al., "Sanity checks for saliency maps"
(NeurIPS 2018), cascading version. For the first --limit lesion images of a `cfia phantom`
folder that the configured classifier calls positive, each method explains the image
with the trained classifier, then again after the classifier's blocks are re-initialised
(their own `reset_parameters`, BatchNorm running statistics included) from the output
head down, cumulatively, in --steps steps, the last one fully random. The inpainter,
the preprocessing and every explainer setting stay as configured: only the classifier
changes.

Per step and method, against the trained classifier's map of the same image, on the
source grid averaged down by --downsample: the Spearman rank correlation inside the
breast and the SSIM (data range 1) over the breast's bounding box; and per map: the
fraction of its energy inside the true lesion (explain.metrics.energy_inside), the
pointing game (tolerance 2 mm, as `cfia evaluate`) and its Spearman correlation with
the image's edges. The lesion's share of the breast is the energy a uniform map would
put there (chance). cf and blur are measured twice from one run: the map they report
(`saliency: change`, the mask weighted by |C - x|) and the optimised mask itself
(`:mask`). Maps without a model are references, measured once per image: "edges" (the
image's Sobel magnitude) and "image only" (cf's and blur's |C - x| term alone), what a
map that explains the image rather than the model looks like.

A method passes when its maps stop resembling the trained classifier's as the
classifier is randomised: mean Spearman of the fully random step below --pass-below
(default 0.5). A map that still concentrates on the lesion under a fully random
classifier explains the image, not the model.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage, stats
from skimage.metrics import structural_similarity

from cfia.config import METHODS

TOLERANCE_MM = 2.0


# -- the classifier, randomised block by block ---------------------------------------
def blocks_top_down(net: torch.nn.Module, x: torch.Tensor) -> list[str]:
    """Names of the network's blocks that hold parameters and take part in its forward
    pass, output end first: its direct children, a Sequential's children one by one
    (modules forward() never calls, such as a training-only head, are left out)."""
    candidates = []
    for name, child in net.named_children():
        if type(child) is torch.nn.Sequential:  # a plain container, not a block built on one
            candidates += [(f"{name}.{n}", c) for n, c in child.named_children()]
        else:
            candidates.append((name, child))
    called, handles = [], []
    for name, module in candidates:
        if any(True for _ in module.parameters()):
            handles.append(module.register_forward_hook(lambda m, i, o, name=name: called.append(name)))
    try:
        with torch.no_grad():
            net(x)
    finally:
        for h in handles:
            h.remove()
    order = list(dict.fromkeys(called))  # first call order, each once
    return order[::-1]


def cascade(blocks: list[str], steps: int) -> list[list[str]]:
    """Cumulative groups of blocks to randomise: the head alone first, all of them last."""
    steps = max(1, min(steps, len(blocks)))
    cuts = sorted({int(round(v)) for v in np.linspace(len(blocks), 1, steps)})  # one step: all of them
    return [blocks[:c] for c in cuts]


def randomise(net: torch.nn.Module, names: list[str], seed: int) -> None:
    """Re-initialise every module inside the named blocks as at construction (in place)."""
    torch.manual_seed(seed)
    modules = dict(net.named_modules())
    with torch.no_grad():
        for name in names:
            for m in modules[name].modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()


# -- one image's maps -------------------------------------------------------------------
def maps(pipeline, pre, methods: list[str]) -> dict[str, np.ndarray]:
    """Each method's map on the source grid ({name: float32 (rows, cols)}); cf and blur also
    as their optimised mask (`name:mask`)."""
    from cfia.pipeline import on_source

    x = pre.image[None].to(pipeline.device)
    breast = (pre.breast[None] > 0.5).float().to(pipeline.device)
    out = {}
    for method in methods:
        res = pipeline.explainer(method)(x, breast)
        main = res.mask if res.saliency is None else res.saliency
        out[method] = on_source(pre.geometry, main.detach().float().cpu().numpy())
        if res.saliency is not None:
            out[f"{method}:mask"] = on_source(pre.geometry, res.mask.detach().float().cpu().numpy())
    return out


def edge_map(pre) -> np.ndarray:
    """A saliency map without a model: the input's Sobel gradient magnitude inside the
    breast, lightly smoothed, scaled to [0, 1], on the source grid."""
    from cfia.pipeline import on_source

    img = pre.image[0].numpy().astype(np.float64)
    mag = np.hypot(ndimage.sobel(img, 0), ndimage.sobel(img, 1))
    mag = ndimage.gaussian_filter(mag, 2.0) * (pre.breast[0].numpy() > 0.5)
    return on_source(pre.geometry, (mag / max(mag.max(), 1e-12)).astype(np.float32))


def difference_maps(pipeline, pre, methods) -> dict[str, np.ndarray]:
    """cf's and blur's image term alone, no model: G(|C - x|) inside the breast, scaled to
    [0, 1], with C the tiled counterfactual (cf; refreshes of the region left out) or the
    blurred image (blur), as explainer.saliency: change weights the mask with it."""
    from cfia.pipeline import on_source
    from explain.perturbation import blurred, tiled_counterfactual

    e = pipeline.cfg.explainer
    x = pre.image[None].to(pipeline.device)
    inside = (pre.breast[None] > 0.5).float().to(x.device)
    fills = {"cf": lambda: tiled_counterfactual(x, pipeline.inpainter, e.tile, e.tilings),
             "blur": lambda: blurred(x, e.blur_sigma)}
    out = {}
    with torch.no_grad():
        for method in (m for m in methods if m in fills):
            d = (fills[method]() - x).abs()
            d = (blurred(d, e.saliency_sigma) if e.saliency_sigma > 0 else d) * inside
            c = "C" if method == "cf" else "B"
            out[f"image only: {method} abs({c}-x)"] = on_source(
                pre.geometry, (d / d.max().clamp(min=1e-12))[0, 0].cpu().numpy())
    return out


# -- similarity and localisation ----------------------------------------------------------
def downsample(a: np.ndarray, factor: int) -> np.ndarray:
    """Block mean by `factor` (edge rows and columns that do not fill a block dropped)."""
    if factor <= 1:
        return a.astype(np.float64)
    r, c = (a.shape[0] // factor) * factor, (a.shape[1] // factor) * factor
    return a[:r, :c].reshape(r // factor, factor, c // factor, factor).astype(np.float64).mean(axis=(1, 3))


def similarity(a: np.ndarray, b: np.ndarray, inside: np.ndarray, factor: int) -> dict:
    """Spearman rank correlation of a and b inside `inside` (the breast), and their SSIM
    (data range 1) over its bounding box, both maps averaged down by `factor`."""
    da, db = downsample(a, factor), downsample(b, factor)
    keep = downsample(inside.astype(np.float32), factor) > 0.5
    va, vb = da[keep], db[keep]
    rho = float(stats.spearmanr(va, vb)[0]) if va.std() > 0 and vb.std() > 0 else float("nan")
    rows, cols = np.flatnonzero(keep.any(axis=1)), np.flatnonzero(keep.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    ssim = float(structural_similarity(da[box], db[box], data_range=1.0))
    return {"spearman": rho, "ssim": ssim}


def localisation(saliency: np.ndarray, lesion: np.ndarray, spacing) -> dict:
    from cfia.evaluate import tolerance_px
    from explain import metrics

    tol = tolerance_px(TOLERANCE_MM, spacing)
    return {"energy_inside": metrics.energy_inside(saliency, lesion),
            "pointing": float(metrics.pointing_game(saliency, lesion, tolerance_px=tol, smooth_px=tol))}


# -- the run ------------------------------------------------------------------------------
def positives(pipeline, folder: Path, limit: int):
    """(record, source, preprocessed, probability) of the first `limit` lesion images the
    classifier calls positive."""
    from cfia.config import CALL_THRESHOLD
    from cfia.dicom_io import read_file
    from cfia.evaluate import require_masks
    from cfia.manifest import read_manifest

    found = 0
    for rec in require_masks(read_manifest(folder)):
        if found >= limit:
            return
        if rec.label != 1:
            continue
        src = read_file(rec.path)
        pre = src.to_input(pipeline.cfg.models.classifier.input_size)
        p = pipeline.probability(pre.image[None].to(pipeline.device))
        if p >= CALL_THRESHOLD:
            found += 1
            yield rec, src, pre, p


def one_image(pipeline, net, groups, rec, src, pre, methods, occlusion: bool, factor: int, seed: int) -> dict:
    """Every method's map with the trained classifier and each randomisation step, measured."""
    from cfia.manifest import read_mask
    from cfia.pipeline import on_source

    lesion = read_mask(rec.mask, src.pixels.shape)
    breast = on_source(pre.geometry, pre.breast[0].numpy()) > 0.5
    used = [m for m in methods if m != "occlusion" or occlusion]
    x = pre.image[None].to(pipeline.device)
    edges = edge_map(pre)
    trained = maps(pipeline, pre, used)

    def measured(v: np.ndarray, reference: np.ndarray | None) -> dict:
        out = localisation(v, lesion, src.spacing)
        out["spearman_edges"] = similarity(edges, v, breast, factor)["spearman"]
        if reference is not None:
            out.update(similarity(reference, v, breast, factor))
        return out

    case = {"file": rec.path.name, "kind": rec.kind, "chance": float(lesion.sum() / max(breast.sum(), 1)),
            "steps": [{"randomised": [], "p": pipeline.probability(x),
                       "maps": dict({k: measured(v, None) for k, v in trained.items()},
                                    edges=localisation(edges, lesion, src.spacing),
                                    **{k: measured(v, None) for k, v in difference_maps(pipeline, pre, used).items()})}]}
    original = {k: v.clone() for k, v in net.state_dict().items()}
    try:
        for names in groups:
            randomise(net, names, seed)
            step = {"randomised": names, "p": pipeline.probability(x), "maps": {}}
            for k, v in maps(pipeline, pre, used).items():
                step["maps"][k] = measured(v, trained[k])
            case["steps"].append(step)
            net.load_state_dict(original)  # each step from the trained weights: a cumulative cascade
    finally:
        net.load_state_dict(original)
    return case


def run(pipeline, folder: Path, limit: int, methods, steps: int, occlusion_limit: int, factor: int,
        seed: int, checkpoint=None, progress=print) -> dict:
    net = pipeline.classifier.model
    if isinstance(net, torch.jit.ScriptModule):
        raise ValueError("the classifier is TorchScript: randomising its layers needs the network "
                         "(kind monai_network or monai_bundle with network_def)")
    size = pipeline.cfg.models.classifier.input_size
    probe = torch.zeros(1, pipeline.classifier.in_channels, *size, device=pipeline.device)
    blocks = blocks_top_down(net, probe)
    groups = cascade(blocks, steps)
    report = {"blocks_top_down": blocks, "groups": groups, "methods": list(methods), "cases": []}
    for i, (rec, src, pre, p) in enumerate(positives(pipeline, folder, limit)):
        start = time.perf_counter()
        case = one_image(pipeline, net, groups, rec, src, pre, methods, i < occlusion_limit, factor, seed)
        case["seconds"] = round(time.perf_counter() - start, 1)
        report["cases"].append(case)
        progress(f"{rec.path.name}: p {p:.3f}, {case['seconds']} s")
        report["summary"] = summarise(report["cases"], groups)
        if checkpoint:
            checkpoint(report)
    report["summary"] = summarise(report["cases"], groups)
    return report


def summarise(cases: list[dict], groups) -> dict:
    """{map name: [per step: means over images (n: images with that map)]}; step 0 = trained."""
    names = sorted({k for c in cases for k in c["steps"][0]["maps"]})
    out = {}
    for name in names:
        rows = []
        for s in range(len(groups) + 1):
            vals = [c["steps"][s]["maps"][name] for c in cases if name in c["steps"][s]["maps"]]
            row = {"randomised": groups[s - 1][-1] if s else "none (trained)", "n": len(vals),
                   "p": _mean([c["steps"][s]["p"] for c in cases if name in c["steps"][s]["maps"]])}
            for k in ("spearman", "ssim", "energy_inside", "pointing", "spearman_edges"):
                row[k] = _mean([v[k] for v in vals if k in v])
            rows.append(row)
        out[name] = rows
    out["chance_energy"] = _mean([c["chance"] for c in cases])
    return out


def _reference(name: str) -> bool:
    """A map without a model (measured once per image, not per step)."""
    return name == "edges" or name.startswith("image only")


def _mean(values) -> float:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(finite)) if finite else float("nan")


def table(summary: dict, pass_below: float) -> str:
    lines = ["| map | randomised down to | n | p | Spearman | SSIM | energy in lesion | pointing | Spearman vs edges |",
             "|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for name, rows in summary.items():
        if name == "chance_energy":
            continue
        for r in (rows[:1] if _reference(name) else rows):
            sim = ("—", "—") if r["randomised"].startswith("none") else (f"{r['spearman']:.2f}", f"{r['ssim']:.2f}")
            lines.append(f"| {name} | {r['randomised']} | {r['n']} | {r['p']:.3f} | {sim[0]} | {sim[1]} | "
                         f"{r['energy_inside']:.3f} | {r['pointing']:.2f} | {r['spearman_edges']:.2f} |")
        if not _reference(name) and len(rows) > 1:
            last = rows[-1]
            ok = math.isfinite(last["spearman"]) and last["spearman"] < pass_below
            verdicts.append(f"{name}: {'passes' if ok else 'FAILS'} (Spearman fully random {last['spearman']:.2f}; "
                            f"energy in lesion {rows[0]['energy_inside']:.3f} trained, {last['energy_inside']:.3f} "
                            f"fully random, chance {summary['chance_energy']:.3f})")
    return "\n".join(lines + [""] + verdicts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cfia.bench.sanity", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="cfia phantom folder (manifest.csv with lesion masks)")
    p.add_argument("--limit", type=int, default=20, help="positive-called lesion images (default 20)")
    p.add_argument("--occlusion-limit", type=int, default=5, help="of which occlusion explains the first N "
                                                                  "(slow; default 5)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated (default {','.join(METHODS)})")
    p.add_argument("--steps", type=int, default=4, help="randomisation steps, head first, the last fully random "
                                                        "(default 4)")
    p.add_argument("--downsample", type=int, default=4, help="source-grid block size for the similarities "
                                                             "(default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the re-initialised weights (default 0)")
    p.add_argument("--pass-below", type=float, default=0.5, help="a method passes when its fully random "
                                                                 "Spearman is below this (default 0.5)")
    p.add_argument("--config", help="config file (default: config.yaml in the install folder)")
    p.add_argument("--out", help="write the report (per image, per step) as JSON")
    args = p.parse_args(argv)
    from cfia.bench import check_output, refuse
    from cfia.cli import load_config
    from cfia.config import ConfigError
    from cfia.evaluate import write_report
    from cfia.manifest import DataError
    from cfia.pipeline import Pipeline

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        p.error(f"--methods {args.methods!r}: expected some of {', '.join(METHODS)}")
    if args.limit < 1 or args.steps < 1 or args.downsample < 1:
        p.error("--limit, --steps and --downsample must be >= 1")
    check_output(args.out)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        return refuse(exc)
    command = "python -m cfia.bench.sanity " + " ".join(sys.argv[1:] if argv is None else argv)
    checkpoint = (lambda r: write_report(r, Path(args.out), command)) if args.out else None
    try:
        report = run(Pipeline(cfg), Path(args.data), args.limit, methods, args.steps, args.occlusion_limit,
                     args.downsample, args.seed, checkpoint, progress=lambda s: print(s, flush=True))
    except (DataError, ValueError) as exc:
        return refuse(exc)
    if not report["cases"]:
        return refuse(f"{args.data}: no lesion image the classifier calls positive")
    print(f"{len(report['cases'])} positive-called lesion images; blocks top-down: {', '.join(report['blocks_top_down'])}")
    print(table(report["summary"], args.pass_below))
    if checkpoint:
        checkpoint(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
