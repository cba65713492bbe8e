"""Is an overlay on screen where it should be, and nowhere else? (analysis of the rendered viewport)

A mammogram is rendered in grey (R = G = B), so overlay-coloured pixels are those with
chroma; where the overlay's colour is known (a SEG segment's), their hue must match it.
The pixels analysed are the viewport's canvas (what Cornerstone rendered: image and
overlays), so OHIF's HTML annotations, toasts and borders do not count; only canvas
pixels that show the source image do.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from .ohif_page import Geometry

CHROMA = 40          # max(R,G,B) - min(R,G,B) of an overlay-coloured pixel (0-255)
HUE_COSINE = 0.8     # alignment of a pixel's chroma with the expected colour's
FAR_PX = 8           # "far outside": canvas pixels away from where the overlay may be


@dataclass
class OverlayStats:
    inside_pixels: int        # canvas pixels of the region the overlay must cover
    inside_coloured: float    # fraction of them that are overlay-coloured
    far_pixels: int           # canvas pixels of the image far from anything the overlay may cover
    far_coloured: int         # overlay-coloured pixels among them
    scale: float              # canvas pixels per image pixel

    def as_dict(self) -> dict:
        return asdict(self)


def overlay_coloured(rgb: np.ndarray, colour: tuple[int, int, int] | None = None) -> np.ndarray:
    rgb = rgb[..., :3].astype(np.float32)
    coloured = rgb.max(-1) - rgb.min(-1) > CHROMA
    if colour is not None:
        c = np.asarray(colour[:3], np.float32)
        c = c - c.mean()
        v = rgb - rgb.mean(-1, keepdims=True)
        cosine = (v @ c) / (np.linalg.norm(v, axis=-1) * np.linalg.norm(c) + 1e-6)
        coloured &= cosine > HUE_COSINE
    return coloured


def analyse(view: np.ndarray, geometry: Geometry, inside: np.ndarray, support: np.ndarray,
            colour: tuple[int, int, int] | None = None) -> OverlayStats:
    """`view`: the viewport canvas (OhifPage.viewport_pixels());
    `inside`: source-grid mask the overlay must cover (e.g. the salient region);
    `support`: source-grid mask of everywhere it may show (e.g. saliency > 0)."""
    image_area = geometry.project(np.ones((geometry.rows, geometry.columns), bool))
    coloured = overlay_coloured(view, colour) & image_area
    inside_s = geometry.project(inside)
    core = ndimage.binary_erosion(inside_s)         # the outline's anti-aliased edge aside
    if not core.any():
        core = inside_s
    far = (ndimage.distance_transform_edt(~geometry.project(support)) > FAR_PX) & image_area
    return OverlayStats(
        inside_pixels=int(core.sum()),
        inside_coloured=float(coloured[core].mean()) if core.any() else 0.0,
        far_pixels=int(far.sum()),
        far_coloured=int((coloured & far).sum()),
        scale=geometry.scale,
    )


def fraction_near(view: np.ndarray, geometry: Geometry, mask: np.ndarray,
                  colour: tuple[int, int, int] | None = None) -> float:
    """Of the overlay-coloured canvas pixels on the image, the fraction within FAR_PX of
    `mask` (source grid): whether the overlay marks that place of the source image (the
    phantom's true lesion), not merely where its own object says (0 with none coloured)."""
    coloured = overlay_coloured(view, colour) & geometry.project(np.ones((geometry.rows, geometry.columns), bool))
    near = ndimage.distance_transform_edt(~geometry.project(mask)) <= FAR_PX
    return float((coloured & near).sum() / coloured.sum()) if coloured.any() else 0.0
