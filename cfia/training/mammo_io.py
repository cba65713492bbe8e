"""Read a phantom/PACS-style folder (manifest.csv + MG DICOM) into normalised arrays.

This is the composition root's side of the data: pydicom lives here, never in explain/.
`normalise_mammogram` is the stand-in for explain/preprocess.py's canonical
normalisation and is kept in one function so it can be swapped for it.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

log = logging.getLogger(__name__)
REQUIRED_COLUMNS = ("file", "label", "mask", "laterality")


class DataError(ValueError):
    """The data folder is unusable (no manifest, missing files); the message names them."""


@dataclass
class Record:
    path: Path
    label: int
    mask: Path | None
    laterality: str


@dataclass
class Mammo:
    image: np.ndarray            # float32 [0, 1], chest wall at column 0
    breast: np.ndarray           # bool
    lesion: np.ndarray | None    # bool lesion mask in the same orientation, or None
    source: str


def read_manifest(folder: str | Path) -> list[Record]:
    """Rows of folder/manifest.csv; raises DataError listing every file that is missing."""
    folder = Path(folder)
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        raise DataError(f"no manifest.csv in {str(folder)!r}")
    with manifest.open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing_cols = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing_cols:
            raise DataError(f"{manifest}: missing column(s) {', '.join(missing_cols)}")
        rows = list(reader)
    records, missing = [], []
    for row in rows:
        path = folder / row["file"]
        mask = folder / row["mask"] if row.get("mask") else None
        for p in (path, mask):
            if p is not None and not p.is_file():
                missing.append(str(p))
        records.append(Record(path, int(row["label"]), mask, (row.get("laterality") or "L").upper()))
    if missing:
        raise DataError(f"{manifest} names {len(missing)} missing file(s): {', '.join(missing)}")
    return records


def normalise_mammogram(pixels: np.ndarray, monochrome1: bool, low_pct: float = 0.5,
                        high_pct: float = 99.5) -> tuple[np.ndarray, np.ndarray]:
    """Stored pixels -> (image in [0, 1] with tissue bright, breast mask).

    Inverts MONOCHROME1; the breast is the largest bright component above an Otsu
    threshold, holes filled; intensities are scaled so the breast's low_pct / high_pct
    percentiles map to 0 / 1, then clipped (air ends at 0).
    """
    from skimage.filters import threshold_otsu

    x = pixels.astype(np.float32)
    if monochrome1:
        x = x.max() - x
    breast = x > threshold_otsu(x)
    labels, n = ndimage.label(breast)
    if n > 1:
        sizes = ndimage.sum(breast, labels, range(1, n + 1))
        breast = labels == (1 + int(np.argmax(sizes)))
    breast = ndimage.binary_fill_holes(breast)
    lo, hi = np.percentile(x[breast], [low_pct, high_pct]) if breast.any() else (x.min(), x.max())
    img = np.clip((x - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)
    return img, breast


def load_record(rec: Record) -> Mammo:
    """One normalised image in canonical orientation (right breasts mirrored)."""
    import pydicom

    ds = pydicom.dcmread(rec.path)
    img, breast = normalise_mammogram(ds.pixel_array, ds.get("PhotometricInterpretation") == "MONOCHROME1")
    lesion = np.load(rec.mask).astype(bool) if rec.mask is not None else None
    laterality = str(ds.get("ImageLaterality") or ds.get("Laterality") or rec.laterality).upper()
    if laterality == "R":
        img, breast = img[:, ::-1].copy(), breast[:, ::-1].copy()
        lesion = lesion[:, ::-1].copy() if lesion is not None else None
    return Mammo(img, breast, lesion, str(rec.path))


def load_folder(folder: str | Path, lesion_free_only: bool = False, progress=None) -> tuple[list[Mammo], list[str]]:
    """All readable images of a folder; unreadable files are logged by path and skipped.

    Returns (images, skipped paths). lesion_free_only drops label-1 rows."""
    images, skipped = [], []
    for rec in read_manifest(folder):
        if lesion_free_only and rec.label:
            continue
        try:
            images.append(load_record(rec))
        except Exception as exc:  # noqa: BLE001 - a bad file must not stop the run
            log.warning("skipping unreadable image %s: %s", rec.path, exc)
            skipped.append(str(rec.path))
        if progress:
            progress()
    return images, skipped
