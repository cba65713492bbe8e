"""overlay.png: the mammogram with the saliency as a colour overlay and the region outlined."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

MAX_SIDE = 1600  # overlays are for looking at: keep them a few hundred kB


def _colormap(v: np.ndarray) -> np.ndarray:
    """A compact 'hot' colour map: black-red-yellow-white for v in [0,1]."""
    r = np.clip(3 * v, 0, 1)
    g = np.clip(3 * v - 1, 0, 1)
    b = np.clip(3 * v - 2, 0, 1)
    return np.stack([r, g, b], -1)


def render(image: np.ndarray, saliency: np.ndarray, region: np.ndarray, alpha: float = 0.55,
           lesion: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8: image (float [0,1], display polarity) blended with the saliency; region edge
    in cyan, and a known lesion's edge (evaluation only) in green."""
    if image.shape != saliency.shape or image.shape != region.shape:
        raise ValueError(f"image {image.shape}, saliency {saliency.shape} and region {region.shape} differ in shape")
    grey = np.repeat(np.clip(image, 0, 1)[..., None], 3, -1)
    weight = alpha * np.clip(saliency, 0, 1)[..., None]
    rgb = (1 - weight) * grey + weight * _colormap(np.clip(saliency, 0, 1))
    width = max(1, int(round(max(image.shape) / 600)))
    edge = region & ~ndimage.binary_erosion(region, iterations=width)
    rgb[edge] = (0.0, 1.0, 1.0)
    if lesion is not None:
        rgb[lesion & ~ndimage.binary_erosion(lesion, iterations=width)] = (0.0, 1.0, 0.0)
    return (rgb * 255).round().astype(np.uint8)


def save(path: Path, image: np.ndarray, saliency: np.ndarray, region: np.ndarray,
         lesion: np.ndarray | None = None) -> Path:
    pic = Image.fromarray(render(image, saliency, region, lesion=lesion))
    scale = MAX_SIDE / max(pic.size)
    if scale < 1:
        pic = pic.resize((round(pic.size[0] * scale), round(pic.size[1] * scale)), Image.LANCZOS)
    pic.save(path, optimize=True)
    return path
