"""Fake processors for tests and benchmarks: NOT explanations, never for clinical use.

Each builds the enabled result objects (real, valid DICOM from dicom_out) from a
fixed Gaussian blob "saliency" in the image centre, without any model, so the
transport, queue and restart paths can be exercised in seconds. Select one with
`workers.processor: "cfia.bench.processors:blob"` (or `slow_blob`, `busy_blob`).
CFIA_FAKE_SECONDS sets how long slow_blob sleeps and busy_blob burns CPU (default 2).
"""
from __future__ import annotations

import os
import time

import numpy as np
from pydicom.dataset import Dataset

from dicom_out import AlgorithmInfo, Explanation, build_results

ALGORITHM = AlgorithmInfo(model_name="fake-blob", model_version="fake1", method="cf")


def _enabled(cfg) -> list[str]:
    return [name for name, on in vars(cfg.outputs).items() if on]


def blob_explanation(rows: int, columns: int) -> Explanation:
    y, x = np.mgrid[:rows, :columns]
    sigma = max(rows, columns) / 12
    saliency = np.exp(-((y - rows / 2) ** 2 + (x - columns / 2) ** 2) / (2 * sigma**2)).astype(np.float32)
    return Explanation(saliency=saliency, region=saliency > 0.5, score=0.9, score_after_deletion=0.1)


def blob(cfg):
    enabled = _enabled(cfg)

    def process(ds: Dataset) -> dict[str, Dataset]:
        return build_results(ds, blob_explanation(int(ds.Rows), int(ds.Columns)), ALGORITHM, enabled)

    return process


def _seconds() -> float:
    return float(os.environ.get("CFIA_FAKE_SECONDS", "2"))


def slow_blob(cfg):
    """blob after sleeping: slow enough to kill a worker mid-job."""
    fast = blob(cfg)

    def process(ds: Dataset) -> dict[str, Dataset]:
        time.sleep(_seconds())
        return fast(ds)

    return process


def busy_blob(cfg):
    """blob after burning one core, like the explainer on CPU: keeps workers busy."""
    fast = blob(cfg)

    def process(ds: Dataset) -> dict[str, Dataset]:
        end = time.perf_counter() + _seconds()
        while time.perf_counter() < end:
            pass
        return fast(ds)

    return process
