"""Two classifiers on the same images: each one's AUC and the paired difference.

    python -m cfia.bench.classifiers --models A.ts B.ts --data FOLDER [FOLDER ...] [--json OUT]

Per folder (each a `manifest.csv` folder, scored through the run-time path as
`cfia train classifier --eval-only` scores it): each model's AUC, sensitivity and
specificity at p = 0.5, and B's AUC minus A's with a paired bootstrap 95 % interval
(the same positives and negatives resampled for both models, so the shared images'
difficulty cancels). Two models' separate intervals on a few hundred images overlap
even when one is better on nearly every image; the paired interval says whether it is.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from ..config import DEFAULT_CLASSIFIER_INPUT
from ..training.classifier import report, roc_auc, score, stratified_resamples
from . import check_output
from ..cli import _size


def paired_auc_difference(a, b, labels, resamples: int = 2000, seed: int = 0) -> dict:
    """AUC(b) - AUC(a) on the same images, with its percentile bootstrap 95 % interval;
    positives and negatives are resampled apart (their counts fixed), each draw shared by
    both models."""
    a, b, y = np.asarray(a, float), np.asarray(b, float), np.asarray(labels, int)
    diffs = [roc_auc(b[idx], y[idx]) - roc_auc(a[idx], y[idx]) for idx in stratified_resamples(y, resamples, seed)]
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"difference": round(roc_auc(b, y) - roc_auc(a, y), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)]}


def compare(model_a: str, model_b: str, folder: str, input_size) -> dict:
    pa, labels, _ = score(model_a, [folder], input_size, progress=False)
    pb, _, _ = score(model_b, [folder], input_size, progress=False)  # same folder, same image order
    y = labels.numpy().astype(int)
    if y.all() or not y.any():
        raise ValueError("an AUC needs positives and negatives; the folder has one kind only")
    return {"data": folder, "n": len(y), "positives": int(y.sum()), "a": report(pa, y), "b": report(pb, y),
            "b_minus_a": paired_auc_difference(pa, pb, y)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cfia.bench.classifiers", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs=2, required=True, metavar=("A", "B"),
                    help="two classifier files: TorchScript (.ts) or the default network's state dict")
    ap.add_argument("--data", nargs="+", required=True, help="manifest.csv folders")
    ap.add_argument("--input-size", type=_size, default=DEFAULT_CLASSIFIER_INPUT, help="ROWSxCOLS (default 512x352)")
    ap.add_argument("--json", help="write the rows here as JSON")
    args = ap.parse_args(argv)
    check_output(args.json, "--json")
    rows = []
    print("folder | n | AUC A | AUC B | B - A (paired 95 % interval) | spec. A / B | sens. A / B")
    for folder in args.data:
        try:
            r = compare(*args.models, folder, args.input_size)
        except (OSError, ValueError) as exc:
            print(f"error: {folder}: {exc}", file=sys.stderr)
            return 2
        rows.append(r)
        d = r["b_minus_a"]
        print(f"{folder} | {r['n']} | {r['a']['auc']:.3f} | {r['b']['auc']:.3f} | {d['difference']:+.3f} "
              f"({d['ci95'][0]:+.3f} .. {d['ci95'][1]:+.3f}) | {r['a']['specificity']:.3f} / "
              f"{r['b']['specificity']:.3f} | {r['a']['sensitivity']:.3f} / {r['b']['sensitivity']:.3f}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"models": args.models, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
