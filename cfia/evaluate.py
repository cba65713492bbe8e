"""`cfia evaluate`: every method on every positive-called phantom image, side by side.

For each image the classifier calls positive (probability >= threshold), each method
explains it and its map is scored against the lesion mask on the source grid:
pointing game, saliency energy inside the lesion, IoU of the salient region, pixel
average precision, mean boundary distance (mm), passes and seconds.

An image without a pixel spacing has no millimetres: its pointing tolerance and smoothing
fall back to pixels (tolerance_px), its boundary distance is reported in pixels only
("boundary_distance_px"; "boundary_distance_mm" null) and left out of the summary's.

Each case also records the classifier's score once the true lesion is inpainted as one
hole ("score_lesion_inpainted"). A positive call that survives that does not rest on
the lesion, and a faithful map need not point at it: the report lists those cases, and
the pointing game cannot exceed the share of the others.
"""
from __future__ import annotations

import json
import math
import platform
import secrets
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from explain import metrics
from explain.counterfactual import NoGradient

from . import overlay
from .dicom_io import ImageReadError, read_file
from .manifest import DataError, read_manifest, read_mask
from .pipeline import Pipeline

METRICS = ("pointing_game", "energy_inside", "iou", "pixel_ap", "boundary_distance_mm", "passes", "region_forwards",
           "seconds", "score_after_deletion")
# Localisation metrics (higher is better) compared image by image between methods.
PAIRED_METRICS = ("pointing_game", "energy_inside", "iou", "pixel_ap")
THUMB_HEIGHT = 300  # px: a figure row's height


def evaluate(pipeline: Pipeline, folder: Path, methods: list[str], limit: int | None = None,
             threshold: float = 0.5, tolerance_mm: float = 2.0, progress=None,
             figure_cases: int = 4, checkpoint=None, alter=None) -> tuple[dict, list[np.ndarray]]:
    """Returns the report and, for the first `figure_cases` cases, a row of overlays per case.

    checkpoint(report) is called after every case, so a long run that is stopped
    keeps what it measured (the report says how many cases it holds).
    alter(pixels, rng) -> pixels changes each image's display values (dense tissue bright,
    whatever the file's photometric interpretation and intent: cfia.bench.robustness.altered)
    before anything sees them (an acquisition from elsewhere, cfia.bench.robustness.ALTERATIONS);
    the lesion masks stay."""
    rows = [r for r in require_masks(read_manifest(folder)) if r.label == 1]
    cases, figure_rows, scanned = [], [], 0
    if checkpoint:  # an earlier run's report must not stand for this one's if it is stopped early
        checkpoint(_report(cases, methods, rows, complete=False, threshold=threshold, scanned=scanned))
    for index, row in enumerate(rows):
        if limit is not None and len(cases) >= limit:
            break
        scanned += 1
        src = read_file(row.path)
        if alter is not None:  # seeded per image, so a run's images do not depend on the limit
            from .bench.robustness import altered

            src = altered(src, alter, np.random.default_rng([0, index]))
        pre = src.to_input(pipeline.cfg.models.classifier.input_size)
        x = pre.image[None].to(pipeline.device)
        p = pipeline.probability(x)
        if progress:
            progress(row.path.name, p)
        if p < threshold:
            continue
        lesion = read_mask(row.mask)
        spacing_mm = float(src.spacing[0]) if src.spacing else None
        # Rows, columns; no spacing: the distances in pixels (the case's spacing_mm is null).
        sampling = tuple(float(v) for v in src.spacing) if src.spacing else (1.0, 1.0)
        # The pointing tolerance and the smoothing, recorded: without a spacing they are pixels.
        tol = tolerance_px(tolerance_mm, src.spacing)
        case = {"file": _name(row.path, folder), "kind": row.kind, "score": p, "spacing_mm": spacing_mm,
                "tolerance_px": list(tol),
                "score_lesion_inpainted": lesion_inpainted_score(pipeline, x, lesion_on_input(pre, lesion)),
                "methods": {}}
        thumbs = []
        for m in methods:
            try:
                res = _explain(pipeline, src, m)
            except NoGradient as exc:  # the cases done so far are in the checkpointed report
                raise DataError(f"{case['file']}: {m}: {exc}; the cases done before it are in the report "
                                "(\"complete\": false)") from None
            scores = metrics.all_metrics(res.saliency, lesion, res.region, tolerance_px=tol, spacing=sampling,
                                         smooth_px=tol)
            scores.update(boundary_distance(scores.pop("boundary_distance"), src.spacing))
            scores.update(passes=res.passes, region_forwards=res.region_forwards, seconds=res.seconds,
                          score_after_deletion=res.score_after_deletion)
            case["methods"][m] = scores
            if len(figure_rows) < figure_cases:  # the row's first cell names the case
                label = m if thumbs else f"{Path(case['file']).name}  p {p:.2f}\n{m}"
                thumbs.append(thumbnail(res.display, res.saliency, res.region, lesion, src.pixel_aspect,
                                        label))
        if thumbs:
            figure_rows.append(np.concatenate(thumbs, axis=1))
        cases.append(case)
        if checkpoint:
            checkpoint(_report(cases, methods, rows, complete=False, threshold=threshold, scanned=scanned))
    return _report(cases, methods, rows, complete=True, threshold=threshold, scanned=scanned), figure_rows


def tolerance_px(tolerance_mm: float, spacing) -> tuple[int, int]:
    """The tolerance in whole pixels along rows and along columns, at least 1; spacing: (row,
    column) mm, or None when the image has none: then `tolerance_mm` is read as pixels (2 mm:
    2 px), a fallback each case records, since a pixel's size is unknown."""
    sampling = spacing if spacing else (1.0, 1.0)
    return tuple(max(1, int(round(tolerance_mm / float(s)))) for s in sampling)


def boundary_distance(distance: float, spacing) -> dict:
    """The case's boundary distance under the unit it is in: with a spacing in mm; without one
    in pixels, and null in mm, so that no median mixes the two."""
    if spacing:
        return {"boundary_distance_mm": distance}
    return {"boundary_distance_mm": float("nan"), "boundary_distance_px": distance}


def require_masks(records: list) -> list:
    """The records, once every lesion image among them decodes and has a mask that marks
    something on its grid; else DataError naming each unreadable image and unusable mask
    (before any image is explained: each positive is decoded here once more)."""
    unmasked = [str(r.path) for r in records if r.label == 1 and r.mask is None]
    if unmasked:
        raise DataError(f"{len(unmasked)} lesion image(s) without a mask in the manifest (evaluation needs "
                        f"one): {', '.join(unmasked[:5])}")
    bad_images, bad_masks = [], []
    for r in (r for r in records if r.label == 1):
        try:
            shape = read_file(r.path).pixels.shape
        except ImageReadError as exc:  # the message names the file
            bad_images.append(str(exc))
            continue
        problem = _mask_problem(r.mask, shape)
        if problem:
            bad_masks.append(f"{r.mask} ({problem})")
    found = [f"{len(bad)} {what}: {'; '.join(bad[:5])}" for what, bad in
             (("lesion image(s) unreadable", bad_images), ("lesion mask(s) unusable", bad_masks)) if bad]
    if found:
        raise DataError("; ".join(found))
    return records


def _mask_problem(path: Path, shape) -> str | None:
    """Why a positive's mask cannot be scored against, or None."""
    try:
        mask = read_mask(path, shape)
    except Exception as exc:  # noqa: BLE001 - each unusable mask is listed, not the first one only
        return f"{type(exc).__name__}: {exc}"
    return None if mask.any() else "marks nothing"


def _name(path: Path, folder: Path) -> str:
    """The case's file as the manifest gives it below the folder (an absolute path as it is)."""
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)


def lesion_on_input(pre, lesion: np.ndarray, grow: int = 2) -> torch.Tensor:
    """The source-grid lesion mask on the classifier's input grid, (1,1,H,W) {0,1}, dilated
    by `grow` input pixels (a square structuring element)."""
    hole = torch.from_numpy(pre.geometry.to_input(lesion.astype(np.float32)) > 0.5)[None, None].float()
    return F.max_pool2d(hole, 2 * grow + 1, stride=1, padding=grow) if grow else hole


def lesion_inpainted_score(pipeline: Pipeline, x: torch.Tensor, hole: torch.Tensor) -> float:
    """The probability once `hole` (the true lesion, lesion_on_input) is inpainted as one hole."""
    with torch.no_grad():
        return pipeline.probability(pipeline.inpainter(x, hole.to(x.device)))


def not_on_lesion(cases: list[dict], threshold: float) -> list[str]:
    """Cases still called positive once their true lesion is inpainted (older reports: none)."""
    return [c["file"] for c in cases if c.get("score_lesion_inpainted", 0.0) >= threshold]


def _report(cases, methods, rows, complete: bool, threshold: float, scanned: int) -> dict:
    report = {"cases": cases, "summary": summarise(cases, methods), "n_positive_called": len(cases),
              "n_positive": len(rows), "n_scanned": scanned, "methods": methods, "complete": complete,
              "called_without_lesion": not_on_lesion(cases, threshold)}
    if "cf" in methods and len(methods) > 1 and cases:
        report["paired"] = paired(cases, methods)
    kinds = sorted({c["kind"] for c in cases if c["kind"]})
    if kinds:  # the manifest names lesion kinds: the same summary for each
        report["summary_by_kind"] = {k: dict(summarise([c for c in cases if c["kind"] == k], methods),
                                             n=sum(c["kind"] == k for c in cases)) for k in kinds}
    return report


def _explain(pipeline: Pipeline, src, method: str):
    """`cf@300`: the method with another pass budget (the same loaded models)."""
    name, _, passes = method.partition("@")
    return (with_passes(pipeline, int(passes)) if passes else pipeline).explain(src, name)


def summarise(cases: list[dict], methods: list[str]) -> dict:
    """Per method, each metric's mean (median for seconds, passes and boundary distance) over
    the cases where it is a finite number; the boundary distance's counts: the cases it is over
    (with a region and a spacing) and those left out for want of a pixel spacing."""
    out = {}
    for m in methods:
        out[m] = {}
        for k in METRICS:
            vals = [_number(c["methods"][m][k]) for c in cases]
            finite = [v for v in vals if math.isfinite(v)]
            if k in ("seconds", "passes", "boundary_distance_mm"):
                out[m][k] = float(np.median(finite)) if finite else float("nan")
            else:
                out[m][k] = float(np.mean(finite)) if finite else float("nan")
        out[m]["boundary_distance_mm_n"] = sum(math.isfinite(_number(c["methods"][m]["boundary_distance_mm"]))
                                               for c in cases)
        out[m]["boundary_distance_mm_no_spacing"] = sum("boundary_distance_px" in c["methods"][m] for c in cases)
    return out


def paired(cases: list[dict], methods: list[str], reference: str = "cf", resamples: int = 2000,
           seed: int = 0) -> dict:
    """`reference` against every other method on the same images.

    Per metric: the mean of (reference - other), its standard error, a bootstrap 95 %
    interval (cases resampled), and on how many images the reference is ahead, level
    or behind. Differences between averages of 100 images are noisy; this says which
    ones the data can tell apart."""
    out = {}
    for other in (m for m in methods if m != reference):
        out[other] = {}
        for k in PAIRED_METRICS:
            d = np.array([_number(c["methods"][reference][k]) - _number(c["methods"][other][k]) for c in cases])
            d = d[np.isfinite(d)]
            if not d.size:
                continue
            # The same draws for every metric and method with all their cases (paired), and
            # a resample of their own size for those with fewer (a metric undefined on some).
            boot = d[np.random.default_rng(seed).integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
            out[other][k] = {"mean": float(d.mean()),
                             "se": float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else float("nan"),
                             "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
                             "ahead": int((d > 1e-9).sum()), "level": int((abs(d) <= 1e-9).sum()),
                             "behind": int((d < -1e-9).sum()), "n": int(d.size)}
    return out


def table_paired(pairs: dict, reference: str = "cf") -> str:
    """One row per baseline and metric: the mean difference, its interval, the image counts."""
    lines = [f"| {reference} minus | metric | mean | 95 % interval | {reference} ahead / level / behind |",
             "|---|---|---|---|---|"]
    for other, per_metric in pairs.items():
        for k, d in per_metric.items():
            lines.append(f"| {other} | {k} | {d['mean']:+.3f} | {d['ci95'][0]:+.3f} .. {d['ci95'][1]:+.3f} | "
                         f"{d['ahead']} / {d['level']} / {d['behind']} |")
    return "\n".join(lines)


def table(summary: dict) -> str:
    """The summary as a markdown table; bdist is millimetres only (a dash where no case has it), and
    a line below says how many cases it leaves out for want of a pixel spacing."""
    head = ["method", "pointing", "energy", "IoU", "pixel AP", "bdist mm (med)", "passes (med)",
            "region forwards (mean)", "s (med)", "p after"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, s in summary.items():
        lines.append(f"| {m} | {s['pointing_game']:.3f} | {s['energy_inside']:.3f} | {s['iou']:.3f} | "
                     f"{s['pixel_ap']:.3f} | {_mm(s['boundary_distance_mm'])} | {s['passes']:.0f} | "
                     f"{s['region_forwards']:.1f} | "
                     f"{s['seconds']:.2f} | {s['score_after_deletion']:.3f} |")
    left_out = max((s.get("boundary_distance_mm_no_spacing", 0) for s in summary.values()), default=0)
    if left_out:
        lines.append(f"bdist mm: {left_out} case(s) without a pixel spacing left out (their boundary distance "
                     "is in pixels: boundary_distance_px in the report's cases)")
    return "\n".join(lines)


def _mm(value) -> str:
    """A median in mm to one decimal, a dash where there is none (null or NaN)."""
    value = _number(value)
    return f"{value:.1f}" if math.isfinite(value) else "-"


def table_by_kind(by_kind: dict) -> str:
    """Pointing, energy and IoU per lesion kind and method (the manifest's `kind`)."""
    lines = ["| lesion kind | n | method | pointing | energy | IoU |", "|---|---|---|---|---|---|"]
    for kind, summary in by_kind.items():
        for m, s in summary.items():
            if m != "n":
                lines.append(f"| {kind} | {summary['n']} | {m} | {s['pointing_game']:.3f} | "
                             f"{s['energy_inside']:.3f} | {s['iou']:.3f} |")
    return "\n".join(lines)


def save_figure(rows: list[np.ndarray], path: Path) -> bool:
    """One row per case, one column per method (in the order of --methods), rows of other
    widths padded with black; no case: no figure, and none left from an earlier run."""
    if not rows:
        path.unlink(missing_ok=True)
        return False
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    Image.fromarray(np.concatenate(padded, axis=0)).save(path)
    return True


def thumbnail(display: np.ndarray, saliency: np.ndarray, region: np.ndarray, lesion: np.ndarray, aspect: float,
              label: str, height: int = THUMB_HEIGHT) -> np.ndarray:
    """One figure cell: shrunk to `height` rows (square pixels in mm) and then drawn, so its outlines
    are whole 1-px lines (drawn at a 4096-row source's size and then shrunk, they faded to half a
    pixel, and took 650 MB and 3.6 s more), labelled."""
    image, saliency, region, lesion = overlay.shrink(display, saliency, region, lesion, overlay.MAX_SIDE, aspect,
                                                     height=height)
    return _label(overlay.render(image, saliency, region, lesion=lesion), label)


def _label(rgb: np.ndarray, text: str) -> np.ndarray:
    """`text` (the method, and in a row's first cell the case) in the thumbnail's top-left corner,
    white on a black box."""
    pic = Image.fromarray(rgb)
    draw = ImageDraw.Draw(pic)
    box = draw.multiline_textbbox((4, 4), text)
    draw.rectangle((box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3), fill=(0, 0, 0))
    draw.multiline_text((4, 4), text, fill=(255, 255, 255))
    return np.asarray(pic)


def machine() -> str:
    import os

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
            f"{torch.__version__}, {torch.get_num_threads()} threads, Python {sys.version.split()[0]}")


def figure_path(out: Path) -> Path:
    """The report's figure beside it: a `.json` suffix replaced by `.png`, any other name with
    `.png` appended (with_suffix made eval-2026.12.07 and eval-2026.12.08 share eval-2026.12.png)."""
    if out.suffix.lower() == ".json":
        return out.with_suffix(".png")
    return out.with_name(out.name + ".png")


def write_report(report: dict, out: Path, command: str) -> None:
    """Written whole, then renamed (a stop mid-write keeps the last one); NaN and infinity,
    which JSON has not, as null."""
    report = dict(report, command=command, machine=machine())
    text = json.dumps(_finite(report), indent=1, default=float, allow_nan=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A short name of its own, not out.name + ".tmp": --out may already be as long as a name can be.
    tmp = out.with_name(f".cfia-report-{secrets.token_hex(8)}.tmp")
    try:
        with open(tmp, "x") as fh:
            fh.write(text)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _number(value) -> float:
    """A metric as a report holds it: null (written for NaN or infinity) reads as NaN."""
    return float("nan") if value is None else float(value)


def _finite(value):
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def with_passes(pipeline: Pipeline, passes: int) -> Pipeline:
    """The same loaded models with another pass budget (for the 300-pass comparison)."""
    cfg = replace(pipeline.cfg, explainer=replace(pipeline.cfg.explainer, max_passes=passes))
    clone = object.__new__(Pipeline)
    clone.__dict__.update(pipeline.__dict__, cfg=cfg)
    return clone
