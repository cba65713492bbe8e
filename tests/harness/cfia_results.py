"""A synthetic mammogram and cfia's result objects for it, as files, for viewer tests.

>>> THE ONE PLACE WHERE THE SOURCE OF RESULT OBJECTS IS CHOSEN: `OBJECT_SOURCE` below
>>> (or the environment variable CFIA_VIEWER_OBJECTS).
    "build_results": dicom_out.build_results (the real builders) on a plausible saliency,
                     a smooth blob over the phantom's lesion mask. Needs no models.
    "explain":       the real `cfia explain FILE --out DIR` (needs trained models, see
                     config.yaml `models:`); switch to it once the models are merged.

Whatever the source, the expected overlay region is read back from the objects
themselves (BINARY SEG = salient region, FRACTIONAL SEG = where the saliency is
non-zero), so the checks do not depend on how the objects were made.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

OBJECT_SOURCE = os.environ.get("CFIA_VIEWER_OBJECTS", "explain")  # or "build_results"
OBJECT_FILES = ("fractional_seg", "binary_seg", "parametric_map", "sr", "gsps")


@dataclass
class Study:
    source: Path                       # the MG file
    objects: dict[str, Path]           # object type -> file, for each object made
    study_uid: str
    source_series_uid: str
    rows: int
    columns: int
    lesion: np.ndarray = field(repr=False)   # the phantom's ground-truth mask

    def dataset(self, object_type: str) -> pydicom.Dataset:
        return pydicom.dcmread(self.objects[object_type])

    def seg_mask(self, object_type: str) -> np.ndarray:
        """The SEG's segment 1 in the source grid: non-zero pixels (BINARY: the region;
        FRACTIONAL: everywhere the stored saliency is above 0)."""
        ds = self.dataset(object_type)
        frame = np.asarray(ds.pixel_array)
        if frame.ndim == 3:          # several frames: one per segment here
            frame = frame[0]
        if frame.shape != (self.rows, self.columns):
            raise AssertionError(f"{object_type} frame shape {frame.shape} is not the source's")
        return frame > 0


def make_source(out: Path, size: tuple[int, int], seed: int, voi_lut_function: bool = False) -> tuple[Path, np.ndarray]:
    """A positive phantom mammogram (with a lesion) written to out/source.dcm.

    VOILUTFunction (LINEAR, the default when absent, so the display is the same) is
    left out unless asked for: OHIF 3.13.2 truncates it to its first letter and then
    cannot display the image at all ("Invalid VOI LUT function"; OHIF/Viewers#6239,
    cornerstonejs/cornerstone3D#2844). That is a bug with the source image, not with
    cfia's objects; tests/test_viewer_ohif.py records it as an expected failure."""
    from phantom.dicom import to_dataset
    from phantom.generate import PhantomOptions, make_one

    mg = make_one(seed, 0, PhantomOptions(size=size, positive_fraction=1.0))
    ds = to_dataset(mg, f"cfia-viewer-test:{seed}:{size[0]}x{size[1]}", 900 + seed)
    if not voi_lut_function:
        del ds.VOILUTFunction
    out.mkdir(parents=True, exist_ok=True)
    path = out / "source.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path, mg.mask


def blob_explanation(lesion: np.ndarray, score: float = 0.91, score_after: float = 0.18):
    """A plausible saliency: the lesion mask smoothed into a blob (peak 1, tails cut at
    0.02 so its support is compact), region = saliency >= 0.5."""
    from scipy import ndimage

    from dicom_out import Explanation

    rows, cols = np.nonzero(lesion)
    extent = max(np.ptp(rows), np.ptp(cols)) + 1
    sigma = max(2.0, extent / 6)
    pad = int(4 * sigma) + 2
    r0, r1 = max(rows.min() - pad, 0), min(rows.max() + pad + 1, lesion.shape[0])
    c0, c1 = max(cols.min() - pad, 0), min(cols.max() + pad + 1, lesion.shape[1])
    saliency = np.zeros(lesion.shape, np.float32)
    blob = ndimage.gaussian_filter(lesion[r0:r1, c0:c1].astype(np.float32), sigma)
    blob /= blob.max()
    blob[blob < 0.02] = 0.0
    saliency[r0:r1, c0:c1] = blob
    return Explanation(saliency=saliency, region=saliency >= 0.5, score=score, score_after_deletion=score_after)


def result_objects(source: Path, lesion: np.ndarray, out: Path) -> dict[str, Path]:
    """cfia's result objects for `source`, written to out/<type>.dcm. See OBJECT_SOURCE."""
    out.mkdir(parents=True, exist_ok=True)
    if OBJECT_SOURCE == "explain":
        run = subprocess.run([sys.executable, "-m", "cfia.cli", "explain", str(source), "--out", str(out)],
                             capture_output=True, text=True, timeout=600)
        if run.returncode != 0:
            raise RuntimeError(f"cfia explain failed ({run.returncode}): {run.stderr[-2000:]}")
        json.loads(run.stdout.strip().splitlines()[-1])
    elif OBJECT_SOURCE == "build_results":
        from dicom_out import OBJECT_TYPES, AlgorithmInfo, build_results

        algorithm = AlgorithmInfo(model_name="viewer-test", model_version="sha256:viewer0", method="cf")
        built = build_results(pydicom.dcmread(source), blob_explanation(lesion), algorithm, OBJECT_TYPES)
        for object_type, ds in built.items():
            ds.save_as(out / f"{object_type}.dcm", enforce_file_format=True)
    else:
        raise ValueError(f"CFIA_VIEWER_OBJECTS {OBJECT_SOURCE!r} is not known; allowed: build_results, explain")
    return {t: out / f"{t}.dcm" for t in OBJECT_FILES if (out / f"{t}.dcm").exists()}


def make_study(out: Path, size: tuple[int, int], seed: int, voi_lut_function: bool = False) -> Study:
    source, lesion = make_source(out, size, seed, voi_lut_function)
    objects = result_objects(source, lesion, out / "results")
    ds = pydicom.dcmread(source, stop_before_pixels=True)
    return Study(source=source, objects=objects, study_uid=ds.StudyInstanceUID,
                 source_series_uid=ds.SeriesInstanceUID, rows=int(ds.Rows), columns=int(ds.Columns), lesion=lesion)
