"""Read a phantom/PACS-style folder (manifest.csv + MG DICOM) into normalised arrays.

This is the composition root's side of the data: pydicom lives here, never in explain/.
Intensities are normalised by explain/preprocess.py's functions, the same as when
explaining (`normalise_mammogram`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..manifest import Record, read_manifest, read_mask

log = logging.getLogger(__name__)


@dataclass
class Mammo:
    image: np.ndarray            # float32 [0, 1], chest wall at column 0
    breast: np.ndarray           # bool
    lesion: np.ndarray | None    # bool lesion mask in the same orientation, or None
    source: str


def normalise_mammogram(pixels: np.ndarray, photometric: str, for_processing: bool) -> tuple[np.ndarray, np.ndarray]:
    """Stored pixels -> (image in [0, 1] with tissue bright, breast mask), at full resolution.

    Part of the node's normalisation (explain.preprocess: polarity, -log for For Processing,
    breast mask, breast percentiles to [0, 1]), so the breast's intensities match what the
    inpainter is given when explaining. Not the rest: the air beyond the skin line is not
    zeroed (labels and collimated strips stay bright), and there is no crop or resize, so
    the pixel scale is the stored one (docs/models.md, "Training your own").
    """
    from explain.preprocess import breast_mask, display_values, normalise_intensity

    values = display_values(pixels, photometric, for_processing)
    breast = breast_mask(values)
    return normalise_intensity(values, breast), breast


class UnreadableMask(ValueError):
    """A lesion mask that cannot be read, has another shape than its image, or marks
    nothing though its image is labelled 1 (its lesion would be taken for healthy tissue)."""


def load_record(rec: Record, input_size: tuple[int, int] | None = None) -> Mammo:
    """One normalised image in canonical orientation, chest wall on the left, decided as
    the node decides it (from the image; the header's, else the manifest's, laterality
    when the image does not say). With `input_size`, the image as the node gives it to
    the inpainter: the classifier's input of that size (breast crop, resize, air zeroed)."""
    from dataclasses import replace

    from explain.preprocess import _chest_wall_on_right

    from ..dicom_io import read_file

    src = read_file(rec.path)
    lesion = _lesion(rec, src.pixels.shape)
    if input_size is not None:
        return _as_node_input(replace(src, laterality=src.laterality or rec.laterality), lesion, input_size,
                              str(rec.path))
    img, breast = normalise_mammogram(src.pixels, src.photometric, src.for_processing)
    if _chest_wall_on_right(breast, src.laterality or rec.laterality):
        img, breast = img[:, ::-1].copy(), breast[:, ::-1].copy()
        lesion = lesion[:, ::-1].copy() if lesion is not None else None
    return Mammo(img, breast, lesion, str(rec.path))


def _as_node_input(src, lesion: np.ndarray | None, input_size: tuple[int, int], source: str) -> Mammo:
    pre = src.to_input(tuple(input_size))
    mapped = None if lesion is None else pre.geometry.to_input(lesion.astype(np.float32), mode="area") > 0
    return Mammo(pre.image[0].numpy().astype(np.float32), pre.breast[0].numpy() > 0.5, mapped, source)


def _lesion(rec: Record, shape) -> np.ndarray | None:
    """The record's lesion mask checked against its label: UnreadableMask when it cannot be
    read or a positive's marks nothing; a lesion-free image's mask is ignored, with a warning."""
    if rec.mask is None:
        return None
    try:
        lesion = read_mask(rec.mask, shape)
    except (OSError, ValueError) as exc:
        raise UnreadableMask(f"{rec.mask}: unreadable lesion mask ({type(exc).__name__}: {exc}); "
                             f"{rec.path} skipped") from None
    if rec.label and not lesion.any():
        raise UnreadableMask(f"{rec.mask}: marks no lesion, but its image is labelled 1; {rec.path} skipped")
    if not rec.label and lesion.any():
        log.warning("%s: marks a lesion, but %s is labelled 0: its mask is ignored", rec.mask, rec.path)
        return None
    return lesion


def load_folder(folder: str | Path, lesion_free_only: bool = False, progress=None,
                input_size: tuple[int, int] | None = None) -> tuple[list[Mammo], list[str]]:
    """All readable images of a folder; unreadable files are logged by path and skipped.

    Returns (images, skipped paths). lesion_free_only drops label-1 rows; input_size: see
    load_record."""
    images, skipped = [], []
    for rec in read_manifest(folder):
        if lesion_free_only and rec.label:
            continue
        _load_into(rec, input_size, images, skipped)
        if progress:
            progress()
    return images, skipped


def _load_into(rec: Record, input_size, images: list, skipped: list) -> None:
    """The record's image appended to `images`, or the reason it is skipped to `skipped`."""
    if rec.label and rec.mask is None:  # its lesion would be learnt as healthy tissue
        log.warning("skipping %s: a positive without a lesion mask", rec.path)
        skipped.append(f"{rec.path} (a positive without a lesion mask)")
        return
    try:
        images.append(load_record(rec, input_size))
    except UnreadableMask as exc:  # named by the mask, as the classifier's loader does
        log.warning("skipped: %s", exc)
        skipped.append(str(exc))
    except Exception as exc:  # noqa: BLE001 - a bad file must not stop the run
        log.warning("skipping unreadable image %s: %s", rec.path, exc)
        skipped.append(str(rec.path))
