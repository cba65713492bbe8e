"""Numbers behind the docs' tables: the ideal observer's AUC counts a tie as half, and scans only
places where the template lies wholly inside the breast; the phantom manifest's contrast is its
most conspicuous lesion's."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from cfia.bench.observer import Correlator, auc_against
from phantom.generate import PhantomOptions, make_one, write_dataset


def test_a_tie_counts_half():
    assert auc_against(1.0, np.array([0.0, 1.0, 1.0, 2.0])) == pytest.approx(0.25 + 0.5 * 0.5)


def test_only_places_wholly_inside_the_breast_are_scanned():
    image = np.ones((20, 20))
    breast = np.zeros((20, 20), bool)
    breast[:, :10] = True
    kernel = np.ones((3, 3))
    pad = 3
    c = Correlator(image, breast, pad)
    kernel_f = np.fft.rfft2(kernel, c.shape)
    responses = c.responses(kernel_f, kernel_f, kernel.shape, 9.0)
    assert responses.size == 18 * 8   # valid 3x3 positions: 18 rows, columns 0..7
    assert np.allclose(responses, 9.0)


def test_the_manifest_contrast_is_the_most_conspicuous_lesions(tmp_path):
    opts = PhantomOptions(size=(128, 104), positive_fraction=1.0)
    write_dataset(tmp_path, 3, 0, opts)
    two = make_one(0, 2, opts)
    assert len(two.lesions) == 2
    rows = list(csv.DictReader((tmp_path / "manifest.csv").open()))
    assert float(rows[2]["contrast"]) == pytest.approx(max(lesion[4] for lesion in two.lesions), abs=0.006)
