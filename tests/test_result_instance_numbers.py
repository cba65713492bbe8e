"""Each result object takes the source's Instance Number, so results of several views sort like
the views; a source numbered 0 or below (IS allows it; highdicom refuses such a number) still
gives every object, numbered 1, rather than no results at all."""
from __future__ import annotations

import numpy as np
import pytest

from dicom_out import OBJECT_TYPES, AlgorithmInfo, Explanation, build_results
from phantom.dicom import to_dataset
from phantom.generate import PhantomOptions, make_one

SIZE = (256, 208)
ALGORITHM = AlgorithmInfo(model_name="toy-cnn", model_version="sha256:0123abcd", method="cf")


def _explanation() -> Explanation:
    rows, cols = np.mgrid[: SIZE[0], : SIZE[1]]
    saliency = np.exp(-((rows - 120) ** 2 + (cols - 90) ** 2) / (2 * 15.0**2)).astype(np.float32)
    return Explanation(saliency=saliency, region=saliency > 0.5, score=0.87, score_after_deletion=0.21)


@pytest.mark.parametrize("number, expected", [("7", 7), ("0", 1), ("-3", 1), ("", 1)])
def test_every_object_is_numbered_from_the_source_and_at_least_1(number, expected):
    source = to_dataset(make_one(11, 0, PhantomOptions(size=SIZE, positive_fraction=1.0)), "inst", 42)
    source.InstanceNumber = number
    results = build_results(source, _explanation(), ALGORITHM)
    assert sorted(results) == sorted(OBJECT_TYPES)
    assert {t: int(ds.InstanceNumber) for t, ds in results.items()} == {t: expected for t in OBJECT_TYPES}
