"""A data folder's manifest.csv (as `cfia phantom` writes it, or a site's own): the one reader.

Columns: file, label (0 or 1) required; mask (a lesion mask: .npy, PNG/TIFF or DICOM, read_mask),
laterality, kind (the lesion kind(s), free text, e.g. `mass` or `calcifications+spiculated`), contrast (the
lesion's contrast in units of the tissue's s.d., as `cfia phantom` draws it) optional.
Training, evaluation and the benchmarks all read folders through `read_manifest`, which
checks the whole file first and stops with every missing file listed.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Optional


class DataError(ValueError):
    """The data folder is unusable (no or malformed manifest, missing files); the message says which."""


@dataclass(frozen=True)
class Record:
    path: Path
    label: int
    mask: Optional[Path] = None
    laterality: str = ""        # "L" / "R" / "" when the manifest does not say
    kind: str = ""              # lesion kind(s) for per-kind reports; "" when not given
    contrast: Optional[float] = None  # lesion contrast / tissue s.d. for per-contrast reports


def read_manifest(folder: str | Path) -> list[Record]:
    folder = Path(folder)
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        raise DataError(f"{manifest}: no manifest.csv in the data folder")
    # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark; headers are
    # matched without case or surrounding spaces ("File, Label" is file,label).
    try:
        with manifest.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [name.strip().lower() for name in next(reader, [])]
            if not {"file", "label"} <= set(header):
                raise DataError(f"{manifest}: expected columns file,label; got {header}")
            rows, start = [], reader.line_num + 1  # (line, values): the line a row starts on, blank lines counted
            for values in reader:
                if any(v.strip() for v in values):
                    rows.append((start, values))
                start = reader.line_num + 1
    except UnicodeDecodeError:
        raise DataError(f"{manifest}: not UTF-8 text; save it as UTF-8 (a spreadsheet's \"CSV UTF-8\")") from None
    except csv.Error as exc:  # e.g. a NUL byte
        raise DataError(f"{manifest} line {reader.line_num}: not CSV ({exc})") from None
    records, missing = [], []
    for n, values in rows:
        where = f"{manifest} line {n}"
        records.append(_record(folder, _row(header, values, where), where))
        missing += [str(p) for p in (records[-1].path, records[-1].mask) if p is not None and not p.is_file()]
    if missing:  # every one, one a line: a site fixes (or scripts against) the whole list at once
        shown = "\n  ".join(missing)
        raise DataError(f"{manifest} names {len(missing)} missing file(s):\n  {shown}\n"
                        f"{manifest}: {len(missing)} missing file(s), listed above")  # the count stays in view
    if not records:
        raise DataError(f"{manifest}: no images listed")
    check_listed_alike([(rec, f"{manifest} line {n}") for rec, (n, _) in zip(records, rows)])
    return records


def check_listed_alike(listed: list[tuple[Record, str]]) -> None:
    """(record, where it is listed) pairs, from one manifest or several folders': an image listed
    twice with another label or mask stops, naming both places. One row a finding (as some
    datasets export them) would train each row's mask with the image's other lesions as healthy
    tissue, and score each against part of its lesions. Listed twice alike, it only weighs double
    (`cfia train classifier` warns)."""
    first: dict[Path, tuple[Record, str]] = {}
    for rec, where in listed:
        seen, seen_where = first.setdefault(rec.path.resolve(), (rec, where))
        if (seen.label, _resolved(seen.mask)) != (rec.label, _resolved(rec.mask)):
            raise DataError(f"{seen_where} and {where}: {rec.path} is listed twice with another label or mask; "
                            "list each image once, its mask marking all its lesions (any nonzero pixel, or every "
                            "segment of a Segmentation, is lesion)")


def _resolved(path: Optional[Path]) -> Optional[Path]:
    return None if path is None else path.resolve()


IMAGE_MASKS = (".png", ".tif", ".tiff", ".bmp", ".gif")  # lossless image files; JPEG's artefacts are refused
NOT_A_MASK = f"not a .npy array, an image file ({', '.join(IMAGE_MASKS)}) or DICOM with pixels"


def read_mask(path: Path, shape: Optional[tuple[int, int]] = None):
    """A lesion mask as bool, any nonzero value the lesion: a .npy array (bool, 0/1 or 0/255
    integers, float), a lossless image file (IMAGE_MASKS: grey, colour or with an alpha channel,
    any colour but black and not transparent, every page), or a DICOM file (a Segmentation of its image, any segment, or an
    image whose nonzero pixels mark the lesion, as some datasets ship their masks). ValueError
    when it is not its image's `shape` or of none of these kinds; OSError when unreadable."""
    mask = _mask_array(Path(path))
    if shape is not None and mask.shape != tuple(shape):
        raise ValueError(f"shape {mask.shape}, its image {tuple(shape)}")
    return mask


def _mask_array(path: Path):
    import numpy as np

    from .dicom_io import has_file_header

    suffix = path.suffix.lower()
    if suffix in IMAGE_MASKS:
        return _image_mask(path)
    if suffix in (".jpg", ".jpeg"):
        raise ValueError("a JPEG mask: its compression blurs the lesion's edge with faint nonzero pixels; "
                         "save it as PNG")
    if suffix == ".dcm" or has_file_header(path):
        return _dicom_mask(path)
    try:
        loaded = np.load(path)
    except (ValueError, EOFError) as exc:  # e.g. an image file without its suffix
        raise ValueError(f"{NOT_A_MASK} ({exc})") from None
    if not isinstance(loaded, np.ndarray):  # np.savez's archive: `!= 0` would give one bool
        getattr(loaded, "close", lambda: None)()
        raise ValueError(f"np.load gave {type(loaded).__name__}, not a .npy array (an .npz archive?)")
    return loaded != 0  # any nonzero value (README): a 0/255 mask saved as int8 holds -1


def _image_mask(path: Path):
    """Any pixel not black and not transparent, on any page (a TIFF's or GIF's): a palette image
    through its colours; an opaque black background (alpha 255) and a transparent one of any
    colour (alpha 0, as editors keep it) are both background."""
    import numpy as np
    from PIL import Image, ImageSequence

    with Image.open(path) as image:
        pages = [_page_mask(page.convert("RGBA") if page.mode in ("P", "PA") else page)
                 for page in ImageSequence.Iterator(image)]
    if len({page.shape for page in pages}) > 1:
        raise ValueError("its pages are of different sizes; a mask is one image's")
    return np.logical_or.reduce(pages)


def _page_mask(page):
    import numpy as np

    pixels = np.asarray(page)
    alpha = page.mode in ("RGBA", "LA", "La", "RGBa")
    colour = pixels[..., :-1] if alpha else pixels
    marked = colour != 0 if colour.ndim == 2 else (colour != 0).any(axis=-1)
    return marked & (pixels[..., -1] != 0) if alpha else marked


def _dicom_mask(path: Path):
    """Its pixels nonzero, over every frame: a Segmentation's frames are its segments (BINARY's
    bits or FRACTIONAL's fractions), which must all be of its one image."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    from .dicom_io import lossy

    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array
    except (InvalidDicomError, AttributeError, RuntimeError, NotImplementedError) as exc:  # no pixels, no decoder
        raise ValueError(f"{NOT_A_MASK} ({exc})") from None
    if lossy(ds, maybe=False):  # a JPEG 2000 mask may be lossless: refused only when said or sure
        raise ValueError("a lossy compressed DICOM mask: its compression blurs the lesion's edge with faint "
                         "nonzero pixels; save it uncompressed or losslessly compressed")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    images = _segmented_images(ds) if frames > 1 else set()  # one frame is one image's, whatever it lists
    if len(images) > 1:  # the union of its frames would lay one view's lesion over another's
        raise ValueError(f"a Segmentation of {len(images)} images (SOP Instance UIDs {', '.join(sorted(images))}); "
                         "a mask is one image's: give each image its own Segmentation")
    marked = pixels != 0
    if int(ds.get("SamplesPerPixel", 1) or 1) > 1:  # colour: any channel
        marked = marked.any(axis=-1)
    return marked.any(axis=0) if frames > 1 else marked


def _segmented_images(ds) -> set[str]:
    """The images a Segmentation's frames may be of: each frame's source image and, where a frame
    names none, the series' list of referenced instances too; empty for any other DICOM object."""
    per_frame = [_frame_sources(group) for group in ds.get("PerFrameFunctionalGroupsSequence", [])]
    sources = set().union(*per_frame)
    if per_frame and all(per_frame):
        return sources
    return sources | {str(inst.ReferencedSOPInstanceUID) for series in ds.get("ReferencedSeriesSequence", [])
                      for inst in getattr(series, "ReferencedInstanceSequence", []) if "ReferencedSOPInstanceUID" in inst}


def _frame_sources(group) -> set[str]:
    return {str(src.ReferencedSOPInstanceUID) for item in getattr(group, "DerivationImageSequence", [])
            for src in getattr(item, "SourceImageSequence", []) if "ReferencedSOPInstanceUID" in src}


def _row(header: list, values: list, where: str) -> dict:
    """One row as {column: value}; a row without a file name and label stops, naming its line."""
    if any("\n" in v or "\r" in v for v in values):  # csv reads an unclosed quote to the end of the file
        raise DataError(f"{where}: a quoted value runs over the end of the line (a quote not closed?)")
    row = dict(zip(header, (v.strip() for v in values)))
    if "file" not in row or "label" not in row:
        raise DataError(f"{where}: {len(values)} value(s) for the columns {','.join(header)}; "
                        "file and label are needed")
    if not row["file"]:
        raise DataError(f"{where}: no file name")
    return row


def _record(folder: Path, row: dict, where: str) -> Record:
    try:
        label = int(row["label"])
    except (TypeError, ValueError):
        raise DataError(f"{where}: label must be 0 or 1, got {row['label']!r}") from None
    if label not in (0, 1):
        raise DataError(f"{where}: label must be 0 or 1, got {label}")
    mask = folder / row["mask"] if row.get("mask") else None
    return Record(folder / row["file"], label, mask, (row.get("laterality") or "").upper(),
                  (row.get("kind") or "").strip(), _contrast(row.get("contrast"), where))


def _contrast(value: Optional[str], where: str) -> Optional[float]:
    if not (value or "").strip():
        return None
    try:
        return float(value)
    except ValueError:
        raise DataError(f"{where}: contrast must be a number, got {value!r}") from None
