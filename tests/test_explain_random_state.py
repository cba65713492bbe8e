"""The explainer seeds torch for a deterministic map and puts the caller's random state back:
a notebook's own draws after an explanation are those it would have made without one."""
from __future__ import annotations

import torch

from explain.counterfactual import CounterfactualExplainer
from explain.perturbation import InpaintPerturbation
from tests.test_explain import BlobDetector, mean_fill, score_fn


def test_an_explanation_leaves_the_callers_draws_and_is_the_same_each_time():
    x = torch.rand(1, 1, 64, 48, generator=torch.Generator().manual_seed(1))
    explainer = CounterfactualExplainer(score_fn(BlobDetector()), InpaintPerturbation(mean_fill, tile=16),
                                        mask_scale=4, max_passes=6, seed=3)
    torch.manual_seed(123)
    first = explainer(x)
    after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), after)
    torch.manual_seed(456)
    assert torch.equal(explainer(x).mask, first.mask)
