"""overlay.png: the region's edge only (not its inside) in cyan, drawn over a lesion's green edge;
the saliency's tint growing with its value (none where it is 0) up to saturated yellow, not white;
a region of a few pixels still outlined once shrunk; square pixels in mm whatever the source's;
`cfia evaluate`'s thumbnails shrunk before they are drawn, so their outlines stay whole."""
from __future__ import annotations

import numpy as np

from cfia import evaluate, overlay


def _inputs(shape=(64, 64)):
    image = np.full(shape, 0.5, np.float32)
    saliency = np.zeros(shape, np.float32)
    region = np.zeros(shape, bool)
    return image, saliency, region


def _cyan(rgb):
    return (rgb[..., 0] == 0) & (rgb[..., 1] == 255) & (rgb[..., 2] == 255)


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
    assert rgb[10, 10, 1] > rgb[10, 20, 1]   # yellower as it grows


def test_the_strongest_saliency_is_saturated_yellow_not_white():
    """A scale ending in white blended the peak into bright tissue: (255, 255, 251) on dense breast."""
    assert overlay._colormap(np.float32(1.0)).tolist() == [1.0, 1.0, 0.0]
    image, saliency, region = _inputs()
    saliency[10, 10] = 1.0
    image[20, 20], saliency[20, 20] = 1.0, 1.0     # on the brightest tissue
    rgb = overlay.render(image, saliency, region)
    assert tuple(rgb[10, 10]) == (198, 198, 57)    # 45 % grey 128 + 55 % yellow
    r, g, b = rgb[20, 20].astype(int)
    assert r == g == 255 and b <= 115               # white tissue turns visibly yellow


def test_a_region_on_the_lesion_is_drawn_over_its_outline():
    image, saliency, region = _inputs()
    region[20:40, 20:40] = True
    rgb = overlay.render(image, saliency, region, lesion=region.copy())
    assert tuple(rgb[20, 30]) == (0, 255, 255)


def test_a_small_region_survives_shrinking():
    image, saliency, region = _inputs((4000, 3000))
    region[1001, 1001] = True   # one pixel: a sixth of a shrunk pixel
    _, _, small, _ = overlay.shrink(image, saliency, region, None, 1600)
    assert small.shape == (1600, 1200) and small.sum() >= 1


def test_non_square_pixels_come_out_square():
    """ImagerPixelSpacing 0.483 x 0.967 mm (rows, columns): each column twice as wide as a row is
    tall; the picture keeps the finer sampling and the breast's shape."""
    image, saliency, region = _inputs((100, 50))
    out = overlay.shrink(image, saliency, region, region.copy(), 1600, aspect=0.967 / 0.483)
    assert all(a.shape == (100, 100) for a in out)
    out = overlay.shrink(*_inputs((4000, 1664)), None, 1600, aspect=2.0)    # 4000 x 3328 in row pixels
    assert out[0].shape == (1600, 1331)
    out = overlay.shrink(*_inputs((50, 100)), None, 1600, aspect=0.5)       # rows the coarser ones
    assert out[0].shape == (100, 100)


def test_the_overlay_file_has_square_pixels(tmp_path):
    from PIL import Image

    image, saliency, region = _inputs((300, 120))
    path = overlay.save(tmp_path / "overlay.png", image, saliency, region, aspect=2.0)
    with Image.open(path) as png:
        assert png.size == (240, 300)


def test_a_thumbnail_is_shrunk_before_it_is_drawn():
    """A 4096x3328 mammogram's 60-px region on its lesion: drawn at the source size and then shrunk
    to 300 rows, its outline faded (no pure cyan pixel left) and the green one drew over it."""
    image, saliency, region = _inputs((4096, 3328))
    region[2000:2060, 1500:1560] = True
    saliency[1990:2070, 1490:1570] = 1.0
    cell = evaluate.thumbnail(image, saliency, region, region.copy(), 1.0, "cf")
    assert cell.shape == (300, 244, 3)
    ys, xs = np.nonzero(_cyan(cell))
    assert ys.size >= 8 and abs(ys.mean() - 2030 * 300 / 4096) < 2 and abs(xs.mean() - 1530 * 300 / 4096) < 2


def test_a_thumbnail_of_non_square_pixels_is_square():
    image, saliency, region = _inputs((600, 250))
    cell = evaluate.thumbnail(image, saliency, region, region.copy(), 2.0, "cf")
    assert cell.shape == (300, 250, 3)
