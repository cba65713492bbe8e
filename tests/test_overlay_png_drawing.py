"""overlay.png: the region's edge only (not its inside) in cyan, the saliency's tint growing with
its value (none where it is 0), and a region of a few pixels still outlined once shrunk."""
from __future__ import annotations

import numpy as np

from cfia import overlay


def _inputs(shape=(64, 64)):
    image = np.full(shape, 0.5, np.float32)
    saliency = np.zeros(shape, np.float32)
    region = np.zeros(shape, bool)
    return image, saliency, region


def test_the_region_edge_is_cyan_and_its_inside_is_not_painted():
    image, saliency, region = _inputs()
    region[20:40, 20:40] = True
    rgb = overlay.render(image, saliency, region)
    assert tuple(rgb[20, 30]) == (0, 255, 255)
    assert tuple(rgb[30, 30]) == (128, 128, 128)   # no saliency there: the mammogram as it is


def test_the_tint_follows_the_saliency():
    image, saliency, region = _inputs()
    saliency[10, 10], saliency[10, 20] = 1.0, 0.5
    rgb = overlay.render(image, saliency, region).astype(int)
    assert tuple(rgb[50, 50]) == (128, 128, 128)
    grey = 0.5 * 255
    red_full, red_half = rgb[10, 10, 0] - grey, rgb[10, 20, 0] - grey
    assert red_full > red_half > 0


def test_a_small_region_survives_shrinking():
    image, saliency, region = _inputs((4000, 3000))
    region[1001, 1001] = True   # one pixel: a sixth of a shrunk pixel
    _, _, small, _ = overlay.shrink(image, saliency, region, None, 1600)
    assert small.shape == (1600, 1200) and small.sum() >= 1
