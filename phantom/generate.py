"""A folder of synthetic MG DICOM files with lesion masks and a manifest.csv.

Each image gets its own random stream from SeedSequence([seed, k]), so image k is
the same whatever `count` is, and the same seed writes byte-identical files.
"""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pydicom

from . import compartments, mammogram, trabecular
from .dicom import MAX_PATIENT_INDEX, to_dataset
from .lesions import ALL_KINDS, LESION_KINDS
from .mammogram import Mammogram

# name -> (synthesize, its own lesion kinds); each can draw any of ALL_KINDS on request.
# "compartments" is the second generator, held out from the shipped models' training;
# "trabecular" the third, held out from all training (docs/models.md).
GENERATORS = {"standard": (mammogram.synthesize, LESION_KINDS), "compartments": (compartments.synthesize, compartments.KINDS),
              "trabecular": (trabecular.synthesize, ALL_KINDS)}

# contrast: the most conspicuous lesion's peak contrast in units of the tissue s.d.
MANIFEST_COLUMNS = ("file", "label", "mask", "laterality", "view", "kind", "contrast")
FIELD_OF_VIEW_MM = 240.0   # the image's height in the breast plane; pixel spacing there = FOV / rows
MAX_SIZE = (4096, 3328)
# Columns / rows, what every generator draws at every size (tried: positive images, all seven
# lesion kinds or only the largest). Lesions and breasts have sizes in mm and the field of
# view is fixed in height, so a narrow image leaves no room for a lesion: at 0.125-0.25 some
# positive images could not be drawn ("could not place a lesion"), at 0.4 and 0.5 none of
# 4500 failed. A wide one overflows trabecular's polar texture grid (OpenCV's SHRT_MAX in
# cv2.remap) from about 6.5 on, and makes it slow well before (64x384: 0.7 s an image).
ASPECT = (0.5, 2.0)
# Image i of seed s is patient s * IMAGES_PER_SEED + i (names, PatientID, AccessionNumber),
# so a count above IMAGES_PER_SEED would reuse the next seed's patients.
IMAGES_PER_SEED = 100000
MAX_SEED = 2 ** 32 - 1  # keeps the patient index, hence AccessionNumber, within 16 characters
assert MAX_SEED * IMAGES_PER_SEED + IMAGES_PER_SEED - 1 <= MAX_PATIENT_INDEX


@dataclass(frozen=True)
class PhantomOptions:
    size: tuple[int, int] = (1024, 832)
    positive_fraction: float = 0.5
    bits_stored: int = 12
    for_processing: bool = False
    photometric: str = "MONOCHROME2"
    frame_of_reference: bool = False
    pixel_spacing: bool = False
    lesion_kinds: tuple[str, ...] | None = None   # None: all of the generator's
    generator: str = "standard"

    def kinds(self) -> tuple[str, ...]:
        return self.lesion_kinds or GENERATORS[self.generator][1]

    def check(self) -> None:
        rows, cols = self.size
        if not (64 <= rows <= MAX_SIZE[0] and 64 <= cols <= MAX_SIZE[1] and ASPECT[0] <= cols / rows <= ASPECT[1]):
            raise ValueError(f"size {rows}x{cols} is out of range; allowed: 64x64 to {MAX_SIZE[0]}x{MAX_SIZE[1]} "
                             f"with columns/rows from {ASPECT[0]:g} to {ASPECT[1]:g}")
        if not 12 <= self.bits_stored <= 16:
            raise ValueError(f"bits_stored {self.bits_stored} is out of range; allowed: 12 to 16")
        if not 0.0 <= self.positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction {self.positive_fraction} is out of range; allowed: 0 to 1")
        if self.generator not in GENERATORS:
            raise ValueError(f"generator {self.generator!r} unknown; known: {', '.join(GENERATORS)}")
        bad = set(self.kinds()) - set(ALL_KINDS)
        if bad or self.lesion_kinds == ():
            raise ValueError(f"lesion kinds {sorted(bad) or '[]'} not allowed; allowed: {', '.join(ALL_KINDS)}")

    def variant(self) -> str:
        """The options that differ from their defaults, as text: '' for a default run. Each
        option changes the pixels or the header, so it goes into the UIDs (uid_key). The
        generator is left out: uid_key names it already."""
        default = PhantomOptions(generator=self.generator)
        parts = []
        for f in fields(self):
            if f.name == "generator":
                continue
            mine, theirs = getattr(self, f.name), getattr(default, f.name)
            if f.name == "lesion_kinds":  # None and the generator's own kinds draw the same images
                mine, theirs = tuple(self.kinds()), tuple(default.kinds())
            elif f.name == "size":
                mine = tuple(int(v) for v in mine)
            elif isinstance(theirs, float):
                mine = float(mine)
            if mine != theirs:
                text = {"size": lambda v: "x".join(map(str, v)), "lesion_kinds": "+".join}.get(f.name, str)(mine)
                parts.append(f"{f.name}={text}")
        return ",".join(parts)


def check_run(count: int, seed: int) -> None:
    """ValueError quoting a count or seed that write_dataset cannot honour."""
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 1 <= count <= IMAGES_PER_SEED:
        raise ValueError(f"count {count!r} is out of range; allowed: 1 to {IMAGES_PER_SEED}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed {seed!r} is out of range; allowed: a whole number from 0 to {MAX_SEED}")


def uid_key(seed: int, index: int, opts: PhantomOptions) -> str:
    """What image `index` of `seed`'s UIDs derive from: seed, index, generator and every option
    that differs from its default (a default run keeps the key it always had)."""
    prefix = "cfia-phantom" if opts.generator == "standard" else f"cfia-phantom-{opts.generator}"
    key = f"{prefix}:{seed}:{index}"
    variant = opts.variant()
    return f"{key}:{variant}" if variant else key


def patient_id(seed: int, index: int, opts: PhantomOptions) -> str | None:
    """PatientID of image `index`: None (phantom.dicom's PH + patient index) for default options,
    else that with a digest of the generator and options, so that images of other options or
    generators are not filed under one patient."""
    variant = opts.variant()
    if opts.generator == "standard" and not variant:
        return None
    digest = hashlib.sha256(f"{opts.generator}:{variant}".encode()).hexdigest()[:8].upper()
    return f"PH{seed * IMAGES_PER_SEED + index:06d}-{digest}"


def make_one(seed: int, index: int, opts: PhantomOptions, lesion_gain: float = 1.0) -> Mammogram:
    """Image `index` of the series for `seed` (lesion_gain 0: the same image without its lesions)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    label = rng.random() < opts.positive_fraction
    laterality = "L" if rng.random() < 0.5 else "R"
    view = "CC" if rng.random() < 0.5 else "MLO"
    n_lesions = (2 if rng.random() < 0.15 else 1) if label else 0
    spacing = FIELD_OF_VIEW_MM / opts.size[0]
    synthesize = GENERATORS[opts.generator][0]
    for _ in range(5):  # a lesion that found no room is redrawn, so label 1 always has a mask
        mg = synthesize(opts.size, rng, laterality, view, n_lesions, spacing, opts.bits_stored,
                        opts.for_processing, opts.kinds(), lesion_gain)
        if not label or mg.mask.any():
            return mg
    raise RuntimeError(f"could not place a lesion in image {index} (seed {seed})")


def write_dataset(out: Path, count: int, seed: int, opts: PhantomOptions, progress=None) -> Path:
    """Write `count` images and masks plus manifest.csv into `out`; returns the manifest path.
    ValueError, before anything is written, for options, count or seed out of range."""
    opts.check()
    check_run(count, seed)
    out.mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    rows = []
    for i in range(count):
        mg = make_one(seed, i, opts)
        name = f"img{i:05d}.dcm"
        ds = to_dataset(mg, uid_key(seed, i, opts), seed * IMAGES_PER_SEED + i, opts.bits_stored,
                        opts.for_processing, opts.photometric, opts.frame_of_reference, opts.pixel_spacing,
                        patient_id=patient_id(seed, i, opts))
        pydicom.dcmwrite(out / name, ds, enforce_file_format=True)
        mask_rel = ""
        if mg.mask.any():
            mask_rel = f"masks/img{i:05d}.npy"
            np.save(out / mask_rel, mg.mask)
        kinds = "+".join(sorted({lesion[0] for lesion in mg.lesions}))
        contrast = f"{max(lesion[4] for lesion in mg.lesions):.2f}" if mg.lesions else ""
        rows.append((name, int(mg.mask.any()), mask_rel, mg.laterality, mg.view, kinds, contrast))
        if progress:
            progress(i + 1)
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(MANIFEST_COLUMNS)
        writer.writerows(rows)
    return manifest
