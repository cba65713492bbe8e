"""Manifest-described image folders -> cached, preprocessed classifier inputs.

A manifest (manifest.csv: file,label[,mask,laterality,view]) that names missing
files stops with the list of them. An unreadable DICOM is reported by path and
skipped. Preprocessed images (explain.preprocess, the same path the node uses at
run time) are cached as float16 in a cache folder outside git, keyed by the
manifest contents, file sizes, input size and the preprocessing version.
"""
from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..manifest import DataError, Record, read_manifest

log = logging.getLogger("cfia.training")

PREPROCESS_VERSION = "6"  # bump when explain.preprocess or cfia.dicom_io changes what it returns


MASK_STRIDE = 8  # lesion masks are cached at 1/8 of the input size (coverage fraction)


def _load_one(args):
    path, mask_path, input_size = args
    from explain.preprocess import preprocess

    from ..dicom_io import ImageReadError, read_file

    try:
        src = read_file(path)
        pre = preprocess(src.pixels, input_size, src.photometric, src.laterality, src.for_processing)
    except ImageReadError as exc:
        return None, str(exc)
    except Exception as exc:  # a file that decodes but cannot be preprocessed
        return None, f"{path}: cannot preprocess ({type(exc).__name__}: {exc})"
    rows, cols = input_size
    small = (max(1, rows // MASK_STRIDE), max(1, cols // MASK_STRIDE))
    cover = torch.zeros(1, *small)
    if mask_path is not None:
        m = pre.geometry.to_input(np.load(mask_path).astype(np.float32), mode="area")
        cover = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(m)[None, None], small)[0]
    return (pre.image.to(torch.float16), cover.to(torch.float16)), None


def _cache_key(items: list[Record], input_size) -> str:
    h = hashlib.sha1(f"v{PREPROCESS_VERSION}:{tuple(input_size)}".encode())
    for it in items:
        h.update(f"{it.path.resolve()}:{it.label}:{it.path.stat().st_size}\n".encode())
    return h.hexdigest()[:16]


def load_images(folder: str | Path, input_size, cache_dir: str | Path | None = None, workers: int = 2,
                progress: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """(images (N,1,H,W) float16, lesion coverage (N,1,H/8,W/8) float16, labels (N,) long,
    files) for one data folder; cached."""
    from tqdm import tqdm

    folder = Path(folder)
    items = read_manifest(folder)
    cache_dir = Path(cache_dir) if cache_dir else folder / ".cfia-cache"
    key = _cache_key(items, input_size)
    cache = cache_dir / f"classifier-{input_size[0]}x{input_size[1]}-{key}.pt"
    if cache.exists():
        data = torch.load(cache, weights_only=True)
        for msg in data["skipped"]:
            log.warning("skipped: %s", msg)
        return data["images"], data["masks"], data["labels"], data["files"]
    jobs = [(it.path, it.mask, tuple(input_size)) for it in items]
    images, masks, labels, files, skipped = [], [], [], [], []
    bar = tqdm(total=len(jobs), desc=f"preprocess {folder.name}", unit="img", disable=not progress)
    if workers > 1:
        with ProcessPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            results = pool.map(_load_one, jobs, chunksize=8)
            for it, (img, err) in zip(items, results):
                _collect(it, img, err, images, masks, labels, files, skipped)
                bar.update(1)
    else:
        for it, job in zip(items, jobs):
            _collect(it, *_load_one(job), images, masks, labels, files, skipped)
            bar.update(1)
    bar.close()
    if not images:
        raise DataError(f"{folder}: none of the {len(items)} images could be read")
    data = {"images": torch.stack(images), "masks": torch.stack(masks), "labels": torch.tensor(labels, dtype=torch.long),
            "files": files, "skipped": skipped}
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}")
    torch.save(data, tmp)
    tmp.replace(cache)
    return data["images"], data["masks"], data["labels"], data["files"]


def _collect(item, img, err, images, masks, labels, files, skipped):
    if img is None:
        log.warning("skipped: %s", err)
        skipped.append(err)
        return
    images.append(img[0])
    masks.append(img[1])
    labels.append(item.label)
    files.append(str(item.path))


def load_many(folders, input_size, cache_dir=None, workers=2, progress=True):
    parts = [load_images(f, input_size, cache_dir, workers, progress) for f in folders]
    images = torch.cat([p[0] for p in parts])
    masks = torch.cat([p[1] for p in parts])
    labels = torch.cat([p[2] for p in parts])
    files = [f for p in parts for f in p[3]]
    return images, masks, labels, files
