"""Explanation cost: median seconds per mammogram (models loaded) and peak memory.

    python -m cfia.bench.explain --size 2294x1914 --count 5 [--method cf] [--config PATH]
    python -m cfia.bench.explain --size 4096x3328 --count 1 --memory
    python -m cfia.bench.explain --size 2294x1914 --count 5 --variants cuda,cuda,cuda:bf16,cpu

Each run generates its own phantoms (positive, seeded), loads the configured models
once, explains every image and reports per-image seconds and passes. --memory runs
one explanation in a fresh child process and reports its own peak resident set size
(VmHWM), which includes Python, torch and the loaded models; without --memory the
figure is the whole run's, drawing the phantoms included. --variants explains
the same images once per DEVICE[:PRECISION] (explainer.device, explainer.precision)
and reports, for each variant after the first, how far its maps are from the first's:
the largest absolute saliency difference and the IoU of the salient regions (a variant
repeated shows whether that device is deterministic).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cfia.bench import refuse
from cfia.cli import _positive, _size


def write_phantoms(folder: Path, size, count, seed=123) -> list[Path]:
    """Positive phantoms written as files, so the measured process only reads them."""
    from phantom.generate import PhantomOptions, write_dataset

    write_dataset(folder, count, seed, PhantomOptions(size=size, positive_fraction=1.0))
    return sorted(folder.glob("img*.dcm"))


def allowed(key: str) -> tuple:
    """The values a config file may give explainer.`key`."""
    from cfia.config import ExplainerConfig

    return next(f.metadata["choices"] for f in dataclasses.fields(ExplainerConfig) if f.name == key)


def load(config, device=None, precision=None):
    """The config file (default: the shipped one), explainer device/precision overridden
    (ConfigError for a value the config file could not give)."""
    from cfia.cli import load_config
    from cfia.config import ConfigError

    cfg = load_config(config)
    changes = {k: v for k, v in (("device", device), ("precision", precision)) if v}
    for key, value in changes.items():
        if value not in allowed(key):
            raise ConfigError(f"explainer.{key}: {value!r} is not allowed; expected one of {', '.join(allowed(key))}")
    return dataclasses.replace(cfg, explainer=dataclasses.replace(cfg.explainer, **changes)) if changes else cfg


def run(files, method, cfg, results=None) -> dict:
    from cfia.dicom_io import read_file
    from cfia.pipeline import Pipeline

    t0 = time.perf_counter()
    pipeline = Pipeline(cfg)
    load_s = time.perf_counter() - t0
    seconds, passes, forwards = [], [], []
    for path in files:
        src = read_file(path)
        start = time.perf_counter()
        res = pipeline.explain(src, method)
        seconds.append(time.perf_counter() - start)
        passes.append(res.passes)
        forwards.append(res.region_forwards)
        if results is not None:
            results.append(res)
    return {"size": list(src.pixels.shape), "method": method, "count": len(files), "model_load_s": round(load_s, 2),
            "seconds": [round(s, 2) for s in seconds], "median_s": round(float(np.median(seconds)), 2),
            "passes": passes, "region_forwards": forwards,
            "peak_rss_mb": round(peak_rss_kb() / 1024, 1)}


def peak_rss_kb() -> int:
    """This process's own peak resident set size. Not ru_maxrss: Linux carries the high-water mark
    of the process that started this one across the exec (subprocess starts it by vfork), so the
    --memory child reported its parent's peak, drawing a 4096x3328 phantom (1057 MB), not its own
    explanation's (918 MB). VmHWM belongs to the memory map the exec made."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # no /proc: the high-water mark as the kernel keeps it


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def variants(files, method, config, names) -> list[dict]:
    """Each DEVICE[:PRECISION] on the same images; maps compared with the first's."""
    reports, first = [], None
    for name in names:
        device, _, precision = name.partition(":")
        results = []
        rep = {"variant": name, **run(files, method, load(config, device, precision or "float32"), results)}
        rep["scores"] = [round(r.score, 4) for r in results]
        rep["scores_after"] = [round(r.score_after_deletion, 4) for r in results]
        if first is None:
            first = results
        else:
            rep["vs_first"] = {
                "max_abs_saliency_diff": [round(float(np.abs(r.saliency - f.saliency).max()), 5)
                                          for r, f in zip(results, first)],
                "region_iou": [round(iou(r.region, f.region), 4) for r, f in zip(results, first)]}
        reports.append(rep)
    return reports


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=_size, default="2294x1914", help="ROWSxCOLS of the phantoms (default 2294x1914)")
    p.add_argument("--count", type=_positive, default=5, help="images, at least 1 (default 5)")
    p.add_argument("--method", default="cf", choices=allowed("method"))
    p.add_argument("--config", default=None, help="config file (default: the shipped config.yaml)")
    p.add_argument("--memory", action="store_true", help="one image in a fresh process; report its peak RSS")
    p.add_argument("--variants", help="comma-separated DEVICE[:PRECISION] (e.g. cuda,cuda:bf16,cpu): "
                                      "explain the same images with each; compare maps with the first's")
    p.add_argument("--files", nargs="+", help=argparse.SUPPRESS)  # the child process of --memory
    args = p.parse_args(argv)
    if args.files:
        print(json.dumps(run([Path(f) for f in args.files], args.method, load(args.config))))
        return 0
    from cfia.pipeline import resolve_device
    from phantom.generate import PhantomOptions

    try:  # bad input stops the command before the phantoms are made or a model is loaded
        PhantomOptions(size=args.size).check()
        for name in (args.variants.split(",") if args.variants else []):
            resolve_device(load(args.config, *name.partition(":")[::2]).explainer.device)  # cuda without a GPU
        if not args.variants:  # each variant names its own device
            resolve_device(load(args.config).explainer.device)
    except ValueError as exc:  # ConfigError, a --size the phantom cannot draw, a device not here
        return refuse(exc)
    with tempfile.TemporaryDirectory() as tmp:
        files = write_phantoms(Path(tmp), args.size, 1 if args.memory else args.count)
        if args.memory:
            cmd = [sys.executable, "-m", "cfia.bench.explain", "--method", args.method, "--files", *map(str, files)]
            cmd += ["--config", args.config] if args.config else []
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            print(out.stdout.strip().splitlines()[-1])
        elif args.variants:
            for rep in variants(files, args.method, args.config, args.variants.split(",")):
                print(json.dumps(rep))
        else:
            print(json.dumps(run(files, args.method, load(args.config))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
