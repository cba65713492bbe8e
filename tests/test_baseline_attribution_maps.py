"""What the baselines' maps hold: integrated gradients samples the path's gradient at k/steps of
the way, k = 1..steps (the image's own gradient counts, the baseline's does not: one step is
gradient x input), and every baseline's map is zero outside the breast it is given."""
from __future__ import annotations

import pytest
import torch

from explain.baselines import GradCAMExplainer, IntegratedGradientsExplainer, OcclusionExplainer

W = torch.linspace(1.0, 2.0, 64).view(1, 1, 8, 8)
X = torch.linspace(0.05, 1.0, 64).flip(0).view(1, 1, 8, 8)  # brightest first, each pixel its own value


def test_integrated_gradients_with_one_step_is_gradient_times_input():
    score = lambda v: (W * v ** 2).sum(dim=(1, 2, 3))  # noqa: E731  gradient 2 W v: zero at the black baseline
    mask = IntegratedGradientsExplainer(score, steps=1)(X).mask
    expected = W[0, 0] * X[0, 0] ** 2
    assert torch.allclose(mask, expected / expected.max(), atol=1e-6)


def test_integrated_gradients_sum_the_gradient_at_the_end_of_each_step():
    steps, knee = 4, 0.25
    score = lambda v: (W * torch.relu(v - knee)).sum(dim=(1, 2, 3))  # noqa: E731
    mask = IntegratedGradientsExplainer(score, steps=steps)(X).mask
    reached = sum(((k / steps) * X[0, 0] > knee).float() for k in range(1, steps + 1))
    expected = X[0, 0] * W[0, 0] * reached / steps
    assert torch.allclose(mask, expected / expected.max(), atol=1e-6)


def _breast():
    breast = torch.zeros(1, 1, 16, 16)
    breast[..., :, :9] = 1.0  # the left 9 columns
    return breast


class _Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU())

    def forward(self, x):
        return self.features(x).mean(dim=(1, 2, 3))


@pytest.mark.parametrize("method", ["ig", "occlusion", "gradcam"])
def test_every_baseline_map_is_zero_outside_the_breast(method):
    torch.manual_seed(0)
    x = 0.2 + 0.6 * torch.rand(1, 1, 16, 16)
    score = lambda v: (v ** 2).sum(dim=(1, 2, 3))  # noqa: E731  evidence everywhere, outside the breast too
    if method == "ig":
        explainer = IntegratedGradientsExplainer(score, steps=4)
    elif method == "occlusion":
        explainer = OcclusionExplainer(score, mask_size=4, mode="mean_img")
    else:
        net = _Net()
        with torch.no_grad():
            net.features[0].weight.fill_(0.1)
            net.features[0].bias.fill_(0.1)
        explainer = GradCAMExplainer(net, "features.1", net, net)
    free = explainer(x).mask
    assert float(free[:, 9:].max()) > 0.05  # without a breast the map reaches the right side
    mask = explainer(x, _breast()).mask
    assert float(mask[:, 9:].abs().max()) == 0.0
    assert float(mask[:, :9].max()) == pytest.approx(1.0)
