"""Explanation cost: median seconds per mammogram (models loaded) and peak memory.

    python -m cfia.bench.explain --size 2294x1914 --count 5 [--method cf] [--config PATH]
    python -m cfia.bench.explain --size 4096x3328 --count 1 --memory

Each run generates its own phantoms (positive, seeded), loads the configured models
once, explains every image and reports per-image seconds and passes. --memory runs
one explanation in a fresh child process and reports its peak resident set size
(ru_maxrss), which includes Python, torch and the loaded models.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_phantoms(folder: Path, size, count, seed=123) -> list[Path]:
    """Positive phantoms written as files, so the measured process only reads them."""
    from phantom.generate import PhantomOptions, write_dataset

    write_dataset(folder, count, seed, PhantomOptions(size=size, positive_fraction=1.0))
    return sorted(folder.glob("img*.dcm"))


def run(files, method, config) -> dict:
    from cfia.cli import load_config
    from cfia.dicom_io import read_file
    from cfia.pipeline import Pipeline

    t0 = time.perf_counter()
    pipeline = Pipeline(load_config(config))
    load_s = time.perf_counter() - t0
    seconds, passes = [], []
    for path in files:
        src = read_file(path)
        start = time.perf_counter()
        res = pipeline.explain(src, method)
        seconds.append(time.perf_counter() - start)
        passes.append(res.passes)
    return {"size": list(src.pixels.shape), "method": method, "count": len(files), "model_load_s": round(load_s, 2),
            "seconds": [round(s, 2) for s in seconds], "median_s": round(float(np.median(seconds)), 2),
            "passes": passes, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="2294x1914", help="ROWSxCOLS of the phantoms (default 2294x1914)")
    p.add_argument("--count", type=int, default=5, help="images (default 5)")
    p.add_argument("--method", default="cf")
    p.add_argument("--config", default=None, help="config file (default: the shipped config.yaml)")
    p.add_argument("--memory", action="store_true", help="one image in a fresh process; report its peak RSS")
    p.add_argument("--files", nargs="+", help=argparse.SUPPRESS)  # the child process of --memory
    args = p.parse_args(argv)
    if args.files:
        print(json.dumps(run([Path(f) for f in args.files], args.method, args.config)))
        return 0
    size = tuple(int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        files = write_phantoms(Path(tmp), size, 1 if args.memory else args.count)
        if args.memory:
            cmd = [sys.executable, "-m", "cfia.bench.explain", "--method", args.method, "--files", *map(str, files)]
            cmd += ["--config", args.config] if args.config else []
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            print(out.stdout.strip().splitlines()[-1])
        else:
            print(json.dumps(run(files, args.method, args.config)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
