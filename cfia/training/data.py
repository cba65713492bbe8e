"""Manifest-described image folders -> cached, preprocessed classifier inputs.

A manifest (manifest.csv: file,label[,mask,laterality,view]) that names missing
files stops with the list of them. An unreadable DICOM, or an unreadable lesion mask,
is reported by path and its image skipped. A positive without a mask has an unknown
lesion map (UNKNOWN_MASK): trained on its label only. Preprocessed images
(explain.preprocess, the same path the node uses at run time) are cached as float16 in
a cache folder outside git, keyed by the manifest contents, each image's and mask's
size and modification time, the input size and the preprocessing version.
"""
from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..manifest import DataError, Record, read_manifest, read_mask

log = logging.getLogger("cfia.training")

# Bump when explain.preprocess or cfia.dicom_io changes what it returns, or the cache's layout
# changes (7: kept manifest rows and unknown masks; 8: the crop keeps the whole breast; 9: non-square
# pixels resized to their physical aspect).
PREPROCESS_VERSION = "10"


MASK_STRIDE = 8  # lesion masks are cached at 1/8 of the input size (coverage fraction)
UNKNOWN_MASK = -1.0  # a positive's coverage when the manifest gives no mask: no lesion-map target


def _load_one(args):
    path, mask_path, label, input_size = args

    from ..dicom_io import ImageReadError, read_file

    try:
        src = read_file(path)
        pre = src.to_input(input_size)
    except ImageReadError as exc:
        return None, str(exc)
    except Exception as exc:  # a file that decodes but cannot be preprocessed
        return None, f"{path}: cannot preprocess ({type(exc).__name__}: {exc})"
    rows, cols = input_size
    small = (max(1, rows // MASK_STRIDE), max(1, cols // MASK_STRIDE))
    cover = torch.full((1, *small), UNKNOWN_MASK if label == 1 else 0.0)
    if mask_path is not None:
        try:
            lesion = read_mask(mask_path, src.pixels.shape)
        except (OSError, ValueError) as exc:
            return None, f"{mask_path}: unreadable lesion mask ({type(exc).__name__}: {exc}); {path} skipped"
        m = pre.geometry.to_input(lesion.astype(np.float32), mode="area")
        cover = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(m)[None, None], small)[0]
    return (pre.image.to(torch.float16), cover.to(torch.float16)), None


def check_held_apart(data: list, val_data: list, val_lesion_free: bool = False) -> None:
    """Validation images that are also training images would make the selection and the
    held-out report training figures: stop. A file listed twice only weighs double: warn.
    Checked on the manifests, before the images are read. val_lesion_free: only the
    held-out folders' lesion-free rows are used (the inpainter's report)."""
    train = [str(r.path.resolve()) for folder in data for r in read_manifest(folder)]
    val = {str(r.path.resolve()) for folder in val_data for r in read_manifest(folder)
           if not (val_lesion_free and r.label)}
    shared = sorted(set(train) & val)
    if shared:
        raise DataError(f"--val-data shares {len(shared)} image(s) with --data (e.g. {shared[0]}): "
                        "validation must be held apart")
    twice = len(train) - len(set(train))
    if twice:
        log.warning("%d training image(s) are listed more than once: they weigh more", twice)


def _stamp(path) -> str:
    """What tells a changed file: size and modification time (a replaced image of the same size)."""
    if path is None:
        return "-"
    st = Path(path).stat()
    return f"{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _cache_key(items: list[Record], input_size) -> str:
    h = hashlib.sha1(f"v{PREPROCESS_VERSION}:{tuple(input_size)}".encode())
    for it in items:
        h.update(f"{_stamp(it.path)}:{it.label}:{_stamp(it.mask)}\n".encode())
    return h.hexdigest()[:16]


def folder_fingerprint(folder: str | Path) -> dict:
    """What a resumed run checks its data against: the folder, its manifest's bytes and
    each listed image's and mask's size and modification time (as the cache key does)."""
    from ..files import sha256

    folder = Path(folder)
    h = hashlib.sha1()
    for it in read_manifest(folder):
        h.update(f"{_stamp(it.path)}:{_stamp(it.mask)}\n".encode())
    return {"folder": str(folder.resolve()), "manifest": sha256(folder / "manifest.csv")[:16],
            "files": h.hexdigest()[:16]}


def data_changes(flag: str, saved: list, now: list) -> list[str]:
    """How the folders of `flag` (fingerprints) differ from a checkpoint's, one phrase each.
    Checkpoints before the thirty-sixth session hold the folders' paths only: those are compared."""
    saved = [s if isinstance(s, dict) else {"folder": s} for s in saved]
    if [s["folder"] for s in saved] != [n["folder"] for n in now]:
        return [f"{flag} {[s['folder'] for s in saved]} (now {[n['folder'] for n in now]})"]
    return [f"{flag} {n['folder']}: its manifest.csv changed" if s["manifest"] != n["manifest"] else
            f"{flag} {n['folder']}: its images or masks changed (size or modification time)"
            for s, n in zip(saved, now) if "manifest" in s and s != n]


def load_images(folder: str | Path, input_size, cache_dir: str | Path | None = None, workers: int = 2,
                progress: bool = True, training: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """(images (N,1,H,W) float16, lesion coverage (N,1,H/8,W/8) float16, labels (N,) long,
    files) for one data folder; cached. training: the folder is trained on (says so of
    positives without a mask)."""
    folder = Path(folder)
    items = read_manifest(folder)
    cache_dir = Path(cache_dir) if cache_dir else folder / ".cfia-cache"
    key = _cache_key(items, input_size)
    cache = cache_dir / f"classifier-{input_size[0]}x{input_size[1]}-{key}.pt"
    if cache.exists():
        data = torch.load(cache, weights_only=True)
        for msg in data["skipped"]:
            log.warning("skipped: %s", msg)
    else:
        data = _preprocess(folder, items, input_size, workers, progress)
        _save_cache(cache, data)
    unknown = int((data["masks"].flatten(1).amin(1) < 0).sum())
    if unknown and training:  # validation and evaluation do not use the masks
        log.warning("%s: %d positive(s) without a lesion mask: trained on their label only", folder, unknown)
    # The manifest's own paths, as given this time (the cache may have been written
    # from another working directory): reports look records up by them.
    return data["images"], data["masks"], data["labels"], [str(items[i].path) for i in data["kept"]]


def _preprocess(folder: Path, items: list[Record], input_size, workers: int, progress: bool) -> dict:
    from tqdm import tqdm

    jobs = [(it.path, it.mask, it.label, tuple(input_size)) for it in items]
    images, masks, labels, kept, skipped = [], [], [], [], []
    bar = tqdm(total=len(jobs), desc=f"preprocess {folder.name}", unit="img", disable=not progress)
    if workers > 1:
        with ProcessPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            for i, (img, err) in enumerate(pool.map(_load_one, jobs, chunksize=8)):
                _collect(i, items[i], img, err, images, masks, labels, kept, skipped)
                bar.update(1)
    else:
        for i, job in enumerate(jobs):
            _collect(i, items[i], *_load_one(job), images, masks, labels, kept, skipped)
            bar.update(1)
    bar.close()
    if not images:
        raise DataError(f"{folder}: none of the {len(items)} images could be read")
    return {"images": torch.stack(images), "masks": torch.stack(masks), "labels": torch.tensor(labels, dtype=torch.long),
            "kept": kept, "skipped": skipped}


def _save_cache(cache: Path, data: dict) -> None:
    """Written whole, then renamed; a folder that cannot be written (a read-only share)
    only costs the preprocessing again next time."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        torch.save(data, tmp)
        tmp.replace(cache)
    except OSError as exc:
        log.warning("cannot write the preprocessing cache %s (%s); continuing without it", cache, exc.strerror)


def _collect(index, item, img, err, images, masks, labels, kept, skipped):
    if img is None:
        log.warning("skipped: %s", err)
        skipped.append(err)
        return
    images.append(img[0])
    masks.append(img[1])
    labels.append(item.label)
    kept.append(index)


def load_many(folders, input_size, cache_dir=None, workers=2, progress=True, training=False):
    parts = [load_images(f, input_size, cache_dir, workers, progress, training) for f in folders]
    images = torch.cat([p[0] for p in parts])
    masks = torch.cat([p[1] for p in parts])
    labels = torch.cat([p[2] for p in parts])
    files = [f for p in parts for f in p[3]]
    return images, masks, labels, files
