"""Random training holes: free-form strokes and blobs covering a target fraction of a crop."""
from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage


def _strokes(rng: np.random.Generator, h: int, w: int, canvas: np.ndarray) -> None:
    """One brush stroke: a random walk of 2-6 segments with a thickness of 3-12% of the crop."""
    size = min(h, w)
    y, x = rng.uniform(0, h), rng.uniform(0, w)
    thick = max(2, int(rng.uniform(0.03, 0.12) * size))
    angle = rng.uniform(0, 2 * np.pi)
    for _ in range(int(rng.integers(2, 7))):
        angle += rng.normal(0, 0.8)
        length = rng.uniform(0.1, 0.4) * size
        y2, x2 = np.clip(y + length * np.sin(angle), 0, h - 1), np.clip(x + length * np.cos(angle), 0, w - 1)
        cv2.line(canvas, (int(x), int(y)), (int(x2), int(y2)), 1, thick)
        cv2.circle(canvas, (int(x2), int(y2)), thick // 2, 1, -1)
        y, x = y2, x2


def _blob(rng: np.random.Generator, h: int, w: int, canvas: np.ndarray) -> None:
    """One blob: thresholded smooth noise, or an ellipse (the explainer's masks are smooth blobs)."""
    size = min(h, w)
    if rng.random() < 0.5:
        axes = (int(rng.uniform(0.05, 0.25) * size), int(rng.uniform(0.05, 0.25) * size))
        centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        cv2.ellipse(canvas, centre, axes, rng.uniform(0, 180), 0, 360, 1, -1)
    else:
        field = ndimage.gaussian_filter(rng.standard_normal((h, w)), rng.uniform(0.06, 0.15) * size)
        field = (field - field.mean()) / (field.std() + 1e-9)
        canvas[field > rng.uniform(1.0, 2.0)] = 1


def random_hole(rng: np.random.Generator, h: int, w: int, coverage: tuple[float, float] = (0.05, 0.4),
                stroke_prob: float = 0.5, tries: int = 20) -> np.ndarray:
    """A float32 (h, w) hole (1 = fill) covering a fraction drawn uniformly from `coverage`.

    Shapes are added one at a time (stroke with probability stroke_prob, else blob)
    until the target is reached; a draw that overshoots coverage[1] is redrawn."""
    lo, hi = coverage
    hole = np.zeros((h, w), np.uint8)
    for _ in range(tries):
        target = rng.uniform(lo, hi)
        hole = np.zeros((h, w), np.uint8)
        for _ in range(64):
            (_strokes if rng.random() < stroke_prob else _blob)(rng, h, w, hole)
            if hole.mean() >= target:
                break
        if lo <= hole.mean() <= hi:
            break
    return hole.astype(np.float32)
