"""The baselines honour their options: integrated gradients integrates from the configured
baseline value (a pixel at the baseline gets no attribution); occlusion's flat-map cut-off is
relative to a score of at least 1, so float rounding on a small score is drawn as nothing; the
configured occlusion mode is the one MONAI applies, without the warning MONAI's indexing raises."""
from __future__ import annotations

import torch

from explain.baselines import IntegratedGradientsExplainer, OcclusionExplainer

W = torch.linspace(1.0, 2.0, 64).view(1, 1, 8, 8)


def test_integrated_gradients_start_at_the_configured_baseline():
    x = torch.full((1, 1, 8, 8), 0.8)
    x[..., :4, :] = 0.5  # at the baseline: nothing to attribute
    result = IntegratedGradientsExplainer(lambda v: (v * W).sum(dim=(1, 2, 3)), steps=4, baseline=0.5)(x)
    assert float(result.mask[:4].abs().max()) == 0.0 and float(result.mask[4:].min()) > 0.0


def test_occlusion_that_moves_a_small_score_only_by_rounding_draws_nothing():
    score = lambda v: 0.001 + 1e-5 * (v * W).mean(dim=(1, 2, 3))  # noqa: E731
    x = torch.full((1, 1, 8, 8), 0.5)
    result = OcclusionExplainer(score, mask_size=4, mode="gaussian")(x)
    assert float(result.mask.abs().max()) == 0.0


def test_occlusion_uses_the_configured_mode():
    score = lambda v: (v ** 2).mean(dim=(1, 2, 3))  # noqa: E731
    x = torch.full((1, 1, 16, 16), 0.5)
    # The image's mean is each pixel's value: mean_img occlusion changes nothing; gaussian darkens.
    assert float(OcclusionExplainer(score, mask_size=4, mode="mean_img")(x).mask.abs().max()) == 0.0
    assert float(OcclusionExplainer(score, mask_size=4, mode="gaussian")(x).mask.max()) > 0.0


def test_occlusion_says_nothing_of_monais_indexing():
    """MONAI 1.6.1 indexes with lists, which torch warns of, four times an image: hidden in one place."""
    import warnings

    score = lambda v: (v * W).mean(dim=(1, 2, 3))  # noqa: E731
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        OcclusionExplainer(score, mask_size=4)(torch.rand(1, 1, 8, 8))
    assert not [w for w in said if "non-tuple sequence" in str(w.message)]
