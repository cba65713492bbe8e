"""bench inpainter metrics on one image (docs' tables): MAE inside the hole only, texture as the
fill's high-pass energy over the original's (a smooth fill scores below 1), SSIM over the hole's
box grown by 3 px, and a summary that is the mean over images."""
from __future__ import annotations

import numpy as np
import pytest

from cfia.bench.inpaint_metrics import hole_metrics, summarise


def _case():
    rng = np.random.default_rng(0)
    orig = np.clip(0.5 + 0.1 * rng.standard_normal((64, 64)), 0, 1)
    hole = np.zeros((64, 64), bool)
    hole[24:40, 24:40] = True
    return orig, hole


def test_mae_counts_the_hole_only():
    orig, hole = _case()
    out = orig.copy()
    out[hole] += 0.2
    out[0:8, 0:8] += 0.3      # outside the hole: not the inpainter's
    assert hole_metrics(out, orig, hole)["mae"] == pytest.approx(0.2)


def test_a_smooth_fill_has_texture_below_one():
    orig, hole = _case()
    out = orig.copy()
    out[hole] = 0.5
    texture = hole_metrics(out, orig, hole)["texture"]
    assert 0 <= texture < 0.5
    assert hole_metrics(orig, orig, hole)["texture"] == pytest.approx(1.0)


def test_ssim_box_includes_a_three_pixel_margin():
    from skimage.metrics import structural_similarity

    orig, hole = _case()
    out = orig.copy()
    out[hole] = 0.5
    expected = structural_similarity(out[21:43, 21:43], orig[21:43, 21:43], data_range=1.0, win_size=7)
    assert hole_metrics(out, orig, hole)["ssim"] == pytest.approx(expected)


def test_summary_is_the_mean():
    rows = [{"mae": 0.0, "ssim": 1.0, "texture": 1.0}, {"mae": 0.0, "ssim": 1.0, "texture": 1.0},
            {"mae": 0.9, "ssim": 0.1, "texture": 0.1}]
    assert summarise(rows)["mae"] == pytest.approx(0.3)
