"""explain.metrics against values worked out by hand on tiny masks, so that a changed
denominator, tolerance or spacing shows as a wrong number, not only as a wrong ranking."""
from __future__ import annotations

import math

import numpy as np
import pytest

from explain.metrics import (all_metrics, energy_inside, iou, mean_boundary_distance, pixel_average_precision,
                             pointing_game, salient_region)

SHAPE = (20, 20)


def _box(r0, r1, c0, c1, shape=SHAPE) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[r0:r1, c0:c1] = True
    return mask


LESION = _box(5, 10, 5, 10)  # 5 x 5 = 25 pixels


def test_iou_divides_by_the_union_not_by_the_lesion():
    """The whole lesion plus as many pixels outside it: 25 / 50, not 25 / 25."""
    region = LESION | _box(12, 17, 12, 17)
    assert iou(region, LESION) == 0.5
    assert iou(_box(5, 10, 0, 5), LESION) == 0.0  # beside it, touching
    assert iou(np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)) == 0.0  # no union: no overlap


def test_iou_of_half_the_lesion_is_one_half():
    lesion = _box(4, 8, 4, 8)  # 16 pixels: a 5 x 5 lesion has no half
    assert iou(_box(4, 6, 4, 8), lesion) == 0.5


def test_energy_inside_is_the_share_of_the_positive_saliency():
    """1 on the 25 lesion pixels, 0.5 on 50 outside: 25 / (25 + 25). Negative values count as 0."""
    saliency = np.zeros(SHAPE, np.float32)
    saliency[LESION] = 1.0
    saliency[12:17, 0:10] = 0.5
    saliency[18:20, :] = -3.0
    assert energy_inside(saliency, LESION) == pytest.approx(0.5)
    assert energy_inside(np.zeros(SHAPE), LESION) == 0.0


def _peak_at(row: int, col: int) -> np.ndarray:
    saliency = np.zeros(SHAPE, np.float32)
    saliency[row, col] = 1.0
    return saliency


@pytest.mark.parametrize("peak, tolerance, hit", [
    ((7, 7), 0, True),            # inside
    ((7, 12), 3, True),           # 3 columns right of column 9
    ((7, 12), 2, False),
    ((11, 11), 4, True),          # 2 rows + 2 columns diagonally: |r| + |c| = 4
    ((11, 11), 3, False),         # within 3 along each axis, not along the diamond
    ((7, 13), (1, 4), True),      # (rows, columns) tolerance: 4 columns
    ((11, 7), (1, 4), False),     # 2 rows
])
def test_pointing_game_tolerance_is_a_diamond_of_rows_and_columns(peak, tolerance, hit):
    assert pointing_game(_peak_at(*peak), LESION, tolerance_px=tolerance) is hit


def test_pointing_smooths_before_taking_the_peak_and_all_metrics_passes_the_smoothing_on():
    """A saturated mask over the lesion and one saturated pixel before it in raster order: the
    raw argmax is the speck (a miss); smoothed (as cfia evaluate does, 2 mm) the plateau wins."""
    saliency = np.zeros((60, 60))
    saliency[30:40, 30:40] = 1.0
    saliency[5, 5] = 1.0
    lesion = np.zeros((60, 60), bool)
    lesion[30:40, 30:40] = True
    assert not pointing_game(saliency, lesion, tolerance_px=2)
    assert pointing_game(saliency, lesion, tolerance_px=2, smooth_px=2)
    region = saliency > 0.5
    assert not all_metrics(saliency, lesion, region, tolerance_px=2)["pointing_game"]
    assert all_metrics(saliency, lesion, region, tolerance_px=2, smooth_px=2)["pointing_game"]


def test_pointing_game_of_a_flat_map_is_a_miss():
    assert pointing_game(np.ones(SHAPE), LESION) is False


def test_boundary_distance_of_two_pixels_is_their_distance_in_spacing_units():
    """6 rows and 2 columns apart, rows 0.5 and columns 2.0 apart: sqrt(3^2 + 4^2) = 5."""
    lesion, region = _box(4, 5, 4, 5), _box(10, 11, 6, 7)
    assert mean_boundary_distance(region, lesion, spacing=(0.5, 2.0)) == pytest.approx(5.0)
    assert mean_boundary_distance(region, lesion) == pytest.approx(math.hypot(6, 2))
    assert mean_boundary_distance(LESION, LESION, spacing=(0.5, 2.0)) == 0.0
    assert mean_boundary_distance(np.zeros(SHAPE, bool), LESION) == math.inf


def test_boundary_distance_is_symmetric_mean_of_both_directions():
    """A 3 x 3 square against its centre pixel: the centre is 1 from the ring's nearest pixel;
    the ring's 4 edge pixels are 1 and its 4 corners sqrt(2) from the centre: (1 + (4 + 4 sqrt 2) / 8) / 2."""
    square, centre = _box(4, 7, 4, 7), _box(5, 6, 5, 6)
    expected = (1.0 + (4 + 4 * math.sqrt(2)) / 8) / 2
    assert mean_boundary_distance(square, centre) == pytest.approx(expected)
    assert mean_boundary_distance(centre, square) == pytest.approx(expected)


def test_pixel_average_precision_of_a_known_ranking():
    """Lesion pixels ranked 1st and 3rd: precision 1 at recall 1/2, 2/3 at recall 1."""
    lesion = np.zeros((1, 5), bool)
    lesion[0, [0, 2]] = True
    saliency = np.array([[0.9, 0.8, 0.7, 0.0, 0.0]])
    assert pixel_average_precision(saliency, lesion) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # One run of ties is one threshold: its precision is the lesion's prevalence.
    assert pixel_average_precision(np.ones((1, 5)), lesion) == pytest.approx(2 / 5)
    assert math.isnan(pixel_average_precision(saliency, np.zeros((1, 5), bool)))


def test_salient_region_drops_components_below_min_pixels():
    saliency = np.zeros(SHAPE, np.float32)
    saliency[2:4, 2:4] = 0.9     # 4 pixels
    saliency[10:13, 10:13] = 0.9  # 9 pixels
    saliency[15:18, 2:5] = 0.3   # below the threshold
    assert np.array_equal(salient_region(saliency, 0.5, 5), _box(10, 13, 10, 13))
    assert salient_region(saliency, 0.5, 4).sum() == 13


def test_all_metrics_reads_masks_saved_as_0_255():
    saliency = np.zeros(SHAPE, np.float32)
    saliency[LESION] = 1.0
    lesion = LESION.astype(np.uint8) * 255
    region = (LESION | _box(12, 17, 12, 17)).astype(np.uint8) * 255
    m = all_metrics(saliency, lesion, region, tolerance_px=0)
    assert m["pointing_game"] is True and m["energy_inside"] == 1.0 and m["iou"] == 0.5 and m["pixel_ap"] == 1.0
