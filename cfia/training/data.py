"""Manifest-described image folders -> cached, preprocessed classifier inputs.

A manifest (manifest.csv: file,label[,mask,laterality,view]) that names missing
files stops with the list of them. An unreadable DICOM is reported by path and its image
skipped; so, for training only, is an image whose lesion mask cannot be read (named by
the mask; validation and evaluation do not use masks). A positive without a mask, or whose
mask marks nothing inside the breast's crop, has an unknown lesion map (UNKNOWN_MASK):
trained on its label only. A label-0 image's mask that marks a lesion is ignored, with a
warning. Preprocessed images (explain.preprocess, the same path the node uses at run time)
are cached as float16 in a cache folder outside git, keyed by the manifest contents, each
image's and mask's size and modification time, the input size and the preprocessing version.
"""
from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from ..manifest import DataError, Record, check_listed_alike, read_manifest, read_mask

log = logging.getLogger("cfia.training")

# Bump when explain.preprocess or cfia.dicom_io changes what it returns, or the cache's layout
# changes (7: kept manifest rows and unknown masks; 8: the crop keeps the whole breast; 9: non-square
# pixels resized to their physical aspect; 11: masks that contradict their label, mask_issues).
PREPROCESS_VERSION = "11"


MASK_STRIDE = 8  # lesion masks are cached at 1/8 of the input size (coverage fraction)
UNKNOWN_MASK = -1.0  # a positive's coverage without a usable mask: no lesion-map target


def _load_one(args):
    """(image, coverage) or None, the error that skipped the image, and its mask's issue:
    None or (skip, message), skip when training must leave the image out (an unreadable mask)."""
    path, mask_path, label, input_size = args

    from ..dicom_io import ImageReadError, read_file

    try:
        src = read_file(path)
        pre = src.to_input(input_size)
    except ImageReadError as exc:
        return None, str(exc), None
    except Exception as exc:  # a file that decodes but cannot be preprocessed
        return None, f"{path}: cannot preprocess ({type(exc).__name__}: {exc})", None
    rows, cols = input_size
    small = (max(1, rows // MASK_STRIDE), max(1, cols // MASK_STRIDE))
    image = pre.image.to(torch.float16)
    by_label = torch.full((1, *small), UNKNOWN_MASK if label == 1 else 0.0).to(torch.float16)
    if mask_path is None:
        return (image, by_label), None, None
    try:
        lesion = read_mask(mask_path, src.pixels.shape)
    except (OSError, ValueError) as exc:
        return (image, by_label), None, (True, f"{mask_path}: unreadable lesion mask "
                                               f"({type(exc).__name__}: {exc}); {path} skipped")
    cover, issue = _label_cover(pre, lesion, label, small, mask_path, path)
    return (image, by_label if cover is None else cover.to(torch.float16)), None, issue


def _label_cover(pre, lesion: np.ndarray, label: int, small, mask_path, path):
    """(coverage or None for unknown, issue) of a readable mask, checked against its label:
    a positive's lesion target that marks nothing would teach 'no lesion anywhere'."""
    if label == 0:
        if lesion.any():
            return torch.zeros((1, *small)), (False, f"{mask_path}: marks a lesion, but {path} is labelled 0: "
                                                     "its mask is ignored")
        return torch.zeros((1, *small)), None
    m = pre.geometry.to_input(lesion.astype(np.float32), mode="area")
    cover = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(m)[None, None], small)[0]
    if float(cover.max()) > 0:  # a lesion wholly outside the breast's crop leaves nothing
        return cover, None
    where = ("on its image" if not lesion.any() else
             f"on the {pre.image.shape[-2]}x{pre.image.shape[-1]} input (all outside the breast crop)")
    return None, (False, f"{mask_path}: marks no lesion {where}, but {path} is labelled 1: "
                         "trained on its label only")


def check_held_apart(data: list, val_data: list, val_lesion_free: bool = False) -> None:
    """Validation images that are also training images would make the selection and the
    held-out report training figures: stop, naming both files. The same image is the same
    path or the same SOPInstanceUID (a copy under another name). A file listed twice alike only
    weighs double: warn; with another label or mask, in any two --data folders, it stops.
    Checked on the manifests and headers, before the pixels are read.
    val_lesion_free: only the held-out folders' lesion-free rows are used (the inpainter's report)."""
    records = [(r, f"{Path(folder) / 'manifest.csv'}") for folder in data for r in read_manifest(folder)]
    check_listed_alike(records)  # each manifest checked itself; here across the --data folders
    train = [r.path for r, _ in records]
    val = [r.path for folder in val_data for r in read_manifest(folder) if not (val_lesion_free and r.label)]
    check_apart(train, val, "--data", "--val-data", "validation must be held apart")
    paths = [str(p.resolve()) for p in train]
    twice = len(paths) - len(set(paths))
    if twice:
        log.warning("%d training image(s) are listed more than once: they weigh more", twice)


def check_apart(kept: list[Path], held: list[Path], kept_flag: str, held_flag: str, why: str) -> None:
    """DataError naming an example when an image of `held` is among `kept` (the same path or
    the same SOPInstanceUID)."""
    shared = _same_images(kept, held) if held else []
    if shared:
        a, b = shared[0]
        example = str(a.resolve()) if a.resolve() == b.resolve() else f"{a} and {b}, the same SOPInstanceUID"
        raise DataError(f"{held_flag} shares {len(shared)} image(s) with {kept_flag} (e.g. {example}): {why}")


def _same_images(train: list[Path], val: list[Path]) -> list[tuple[Path, Path]]:
    """(training file, validation file) for each validation image found among the training
    images, by resolved path, else by SOPInstanceUID."""
    by_path = {str(p.resolve()): p for p in train}
    by_uid = {}
    for p in train:
        by_uid.setdefault(_instance_uid(p), p)
    by_uid.pop(None, None)
    pairs = []
    for v in val:
        match = by_path.get(str(v.resolve())) or by_uid.get(_instance_uid(v))
        if match is not None:
            pairs.append((match, v))
    return pairs


def _instance_uid(path: Path):
    """The file's SOPInstanceUID from its header; None when it has none or is not DICOM
    (an unreadable file is reported when the images are read)."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        return str(ds.SOPInstanceUID) or None
    except Exception:  # noqa: BLE001 - whatever a non-DICOM file raises
        return None


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
    files) for one data folder; cached. training: the folder is trained on (its masks are
    used: an unreadable one skips its image, and what else is wrong with them is said)."""
    folder = Path(folder)
    items = read_manifest(folder)
    cache_dir = Path(cache_dir) if cache_dir else folder / ".cfia-cache"
    key = _cache_key(items, input_size)  # the cache holds every readable image, whatever `training`
    cache = cache_dir / f"classifier-{input_size[0]}x{input_size[1]}-{key}.pt"
    if cache.exists():
        data = torch.load(cache, weights_only=True)
        for msg in data["skipped"]:
            log.warning("skipped: %s", msg)
    else:
        data = _preprocess(folder, items, input_size, workers, progress)
        _save_cache(cache, data)
    n = len(data["kept"])
    keep = _mask_checked(data["mask_issues"], n) if training else list(range(n))
    if not keep:
        raise DataError(f"{folder}: none of the {len(items)} images could be used for training")
    images, masks, labels = data["images"], data["masks"], data["labels"]
    if len(keep) < n:  # a copy, so only when an image is left out
        images, masks, labels = images[keep], masks[keep], labels[keep]
    unknown = int((masks.flatten(1).amin(1) < 0).sum())
    if unknown and training:  # validation and evaluation do not use the masks
        log.warning("%s: %d positive(s) without a lesion mask: trained on their label only", folder, unknown)
    # The manifest's own paths, as given this time (the cache may have been written
    # from another working directory): reports look records up by them.
    return images, masks, labels, [str(items[data["kept"][i]].path) for i in keep]


def _mask_checked(issues: list, n: int) -> list[int]:
    """The cached images training keeps: all but those whose mask is unreadable; every
    issue with a mask is logged, named by the mask."""
    dropped = set()
    for position, skip, msg in issues:
        if skip:
            log.warning("skipped: %s", msg)
            dropped.add(position)
        else:
            log.warning("%s", msg)
    return [i for i in range(n) if i not in dropped]


def _preprocess(folder: Path, items: list[Record], input_size, workers: int, progress: bool) -> dict:
    from tqdm import tqdm

    jobs = [(it.path, it.mask, it.label, tuple(input_size)) for it in items]
    out = {"images": [], "masks": [], "labels": [], "kept": [], "skipped": [], "mask_issues": []}
    bar = tqdm(total=len(jobs), desc=f"preprocess {folder.name}", unit="img", disable=not progress)
    if workers > 1:
        with ProcessPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            for i, result in enumerate(pool.map(_load_one, jobs, chunksize=8)):
                _collect(i, items[i], *result, out)
                bar.update(1)
    else:
        for i, job in enumerate(jobs):
            _collect(i, items[i], *_load_one(job), out)
            bar.update(1)
    bar.close()
    if not out["images"]:
        raise DataError(f"{folder}: none of the {len(items)} images could be read")
    return dict(out, images=torch.stack(out["images"]), masks=torch.stack(out["masks"]),
                labels=torch.tensor(out["labels"], dtype=torch.long))


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


def _collect(index, item, img, err, issue, out: dict) -> None:
    if img is None:
        log.warning("skipped: %s", err)
        out["skipped"].append(err)
        return
    if issue is not None:  # [position among the kept images, skip when training, message]
        out["mask_issues"].append([len(out["kept"]), *issue])
    out["images"].append(img[0])
    out["masks"].append(img[1])
    out["labels"].append(item.label)
    out["kept"].append(index)


def load_many(folders, input_size, cache_dir=None, workers=2, progress=True, training=False):
    parts = [load_images(f, input_size, cache_dir, workers, progress, training) for f in folders]
    images = torch.cat([p[0] for p in parts])
    masks = torch.cat([p[1] for p in parts])
    labels = torch.cat([p[2] for p in parts])
    files = [f for p in parts for f in p[3]]
    return images, masks, labels, files
