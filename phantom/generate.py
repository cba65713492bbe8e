"""A folder of synthetic MG DICOM files with lesion masks and a manifest.csv.

Each image gets its own random stream from SeedSequence([seed, k]), so image k is
the same whatever `count` is, and the same seed writes byte-identical files.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from . import compartments, mammogram, trabecular
from .dicom import to_dataset
from .lesions import ALL_KINDS, LESION_KINDS
from .mammogram import Mammogram

# name -> (synthesize, its own lesion kinds); each can draw any of ALL_KINDS on request.
# "compartments" is the second generator, held out from the shipped models' training;
# "trabecular" the third, held out from all training (docs/models.md).
GENERATORS = {"standard": (mammogram.synthesize, LESION_KINDS), "compartments": (compartments.synthesize, compartments.KINDS),
              "trabecular": (trabecular.synthesize, ALL_KINDS)}

# contrast: the most conspicuous lesion's peak contrast in units of the tissue s.d.
MANIFEST_COLUMNS = ("file", "label", "mask", "laterality", "view", "kind", "contrast")
FIELD_OF_VIEW_MM = 240.0   # detector height; pixel spacing = FOV / rows
MAX_SIZE = (4096, 3328)


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
        if not (64 <= rows <= MAX_SIZE[0] and 64 <= cols <= MAX_SIZE[1]):
            raise ValueError(f"size {rows}x{cols} is out of range; allowed: 64x64 to {MAX_SIZE[0]}x{MAX_SIZE[1]}")
        if not 12 <= self.bits_stored <= 16:
            raise ValueError(f"bits_stored {self.bits_stored} is out of range; allowed: 12 to 16")
        if not 0.0 <= self.positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction {self.positive_fraction} is out of range; allowed: 0 to 1")
        if self.generator not in GENERATORS:
            raise ValueError(f"generator {self.generator!r} unknown; known: {', '.join(GENERATORS)}")
        bad = set(self.kinds()) - set(ALL_KINDS)
        if bad or self.lesion_kinds == ():
            raise ValueError(f"lesion kinds {sorted(bad) or '[]'} not allowed; allowed: {', '.join(ALL_KINDS)}")


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
    """Write `count` images and masks plus manifest.csv into `out`; returns the manifest path."""
    opts.check()
    out.mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    rows = []
    for i in range(count):
        mg = make_one(seed, i, opts)
        name = f"img{i:05d}.dcm"
        key = f"cfia-phantom:{seed}:{i}" if opts.generator == "standard" else f"cfia-phantom-{opts.generator}:{seed}:{i}"
        ds = to_dataset(mg, key, seed * 100000 + i, opts.bits_stored,
                        opts.for_processing, opts.photometric, opts.frame_of_reference, opts.pixel_spacing)
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
