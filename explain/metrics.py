"""Localisation metrics of a saliency map against a ground-truth lesion mask.

All functions take numpy arrays on the same grid: saliency (float), lesion (bool),
region (bool, the thresholded salient region).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def pointing_game(saliency: np.ndarray, lesion: np.ndarray, tolerance_px=3, smooth_px=0.0) -> bool:
    """Hit if the saliency maximum lies inside the lesion grown by `tolerance_px` (steps along
    rows and columns: a diamond, so a diagonal tolerance is shorter). A map without a
    maximum (constant, all zeros) points nowhere: a miss.

    tolerance_px, smooth_px: one number, or (rows, columns) for pixels that are not square.
    smooth_px: Gaussian smoothing before taking the peak, so that a map that is flat
    at its maximum (a saturated mask) points at the middle of its largest plateau
    instead of its first pixel in raster order.
    """
    if saliency.max() <= saliency.min():
        return False
    rows, cols = np.broadcast_to(np.asarray(tolerance_px, int), (2,))
    grown = ndimage.binary_dilation(lesion, structure=_diamond(rows, cols)) if rows or cols else lesion
    if np.any(np.asarray(smooth_px) > 0):
        saliency = ndimage.gaussian_filter(saliency.astype(np.float32), smooth_px)
    peak = np.unravel_index(np.argmax(saliency), saliency.shape)
    return bool(grown[peak])


def _diamond(rows: int, cols: int) -> np.ndarray:
    """Offsets within `rows` steps along rows and `cols` along columns, on the line between
    them diagonally: |r| / rows + |c| / cols <= 1 (the cross dilation repeated, when equal)."""
    r, c = np.ogrid[-rows:rows + 1, -cols:cols + 1]
    return np.abs(r) * max(cols, 1) + np.abs(c) * max(rows, 1) <= max(rows, 1) * max(cols, 1)


def energy_inside(saliency: np.ndarray, lesion: np.ndarray) -> float:
    """Fraction of the saliency's sum (its positive part; not squared) that falls inside the lesion."""
    total = float(np.clip(saliency, 0, None).sum())
    return float(np.clip(saliency, 0, None)[lesion].sum()) / total if total > 0 else 0.0


def iou(region: np.ndarray, lesion: np.ndarray) -> float:
    union = np.logical_or(region, lesion).sum()
    return float(np.logical_and(region, lesion).sum()) / union if union else 0.0


def pixel_average_precision(saliency: np.ndarray, lesion: np.ndarray) -> float:
    """Area under the pixel-wise precision-recall curve (average precision)."""
    positives = int(lesion.sum())
    if positives == 0:
        return float("nan")
    scores = saliency.ravel()
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(lesion.ravel()[order])
    # Pixels of equal saliency are one threshold: precision is taken at the end of each
    # run of ties (as sklearn's average_precision_score does), never in raster order.
    ends = np.flatnonzero(np.diff(scores[order], append=-np.inf) != 0)
    tp = tp[ends]
    precision = tp / (ends + 1)
    return float((np.diff(tp, prepend=0) * precision).sum() / positives)


def mean_boundary_distance(region: np.ndarray, lesion: np.ndarray, spacing=1.0) -> float:
    """Symmetric mean distance between the boundaries of region and lesion (inf if region is
    empty); spacing: one number, or (row, column) for pixels that are not square."""
    if not region.any() or not lesion.any():
        return float("inf")
    edge_r = region & ~ndimage.binary_erosion(region)
    edge_l = lesion & ~ndimage.binary_erosion(lesion)
    to_l = ndimage.distance_transform_edt(~edge_l, sampling=spacing)
    to_r = ndimage.distance_transform_edt(~edge_r, sampling=spacing)
    return float((to_l[edge_r].mean() + to_r[edge_l].mean()) / 2)


def salient_region(saliency: np.ndarray, threshold: float, min_pixels: int) -> np.ndarray:
    """Saliency above threshold, without connected components smaller than min_pixels."""
    region = saliency > threshold
    labels, n = ndimage.label(region)
    if n == 0:
        return region
    sizes = ndimage.sum(region, labels, index=np.arange(1, n + 1))
    keep = np.zeros(n + 1, bool)
    keep[1:] = sizes >= min_pixels
    return keep[labels]


def all_metrics(saliency, lesion, region, tolerance_px=3, spacing=1.0, smooth_px=0.0) -> dict:
    # Masks as researchers save them (uint8 0/1 or 0/255, float): used as an index they
    # would pick rows, not pixels.
    lesion, region = np.asarray(lesion) != 0, np.asarray(region) != 0
    if not np.isfinite(saliency).all():  # a NaN would silently miss the peak and zero the energy
        raise ValueError("saliency contains NaN or infinite values")
    return {
        "pointing_game": pointing_game(saliency, lesion, tolerance_px, smooth_px),
        "energy_inside": energy_inside(saliency, lesion),
        "iou": iou(region, lesion),
        "pixel_ap": pixel_average_precision(saliency, lesion),
        "boundary_distance": mean_boundary_distance(region, lesion, spacing),
    }
