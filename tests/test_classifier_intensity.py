"""Users' classifiers trained on other inputs than cfia's one-channel [0, 1] image:
channels, intensity range and normalisation adapted before the network, and the
start-up error that names the cause when they do not fit."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from explain.classifier import load_classifier

SIZE = (64, 48)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Recorder(nn.Module):
    """A 3-channel 'network' whose logits are its input's per-channel means, so the test
    sees exactly what it was given."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))  # a parameter, for the device and the frozen check

    def forward(self, x):
        if x.shape[1] != 3:
            raise RuntimeError(f"expected input{list(x.shape)} to have 3 channels, but got {x.shape[1]} channels")
        return x.mean(dim=(2, 3)) * self.w  # three logits, one per channel


def save(tmp_path, module) -> str:
    path = str(tmp_path / "net.ts")
    torch.jit.script(module).save(path)
    return path


def test_an_rgb_imagenet_network_gets_the_image_as_it_was_trained_on(tmp_path):
    path = save(tmp_path, Recorder())
    clf = load_classifier("torchscript", path, input_size=SIZE, in_channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    x = torch.rand(2, 1, *SIZE)
    expected = ((x.mean(dim=(2, 3)) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD))
    torch.testing.assert_close(clf(x), expected)
    grad, = torch.autograd.grad(clf.score(x.requires_grad_()).sum(), x)  # the explainers' backward
    assert grad.shape == x.shape and grad.abs().sum() > 0


def test_an_input_range_maps_the_image_linearly(tmp_path):
    path = save(tmp_path, Recorder())
    clf = load_classifier("torchscript", path, input_size=SIZE, in_channels=3, input_range=(0, 255))
    x = torch.rand(2, 1, *SIZE)
    torch.testing.assert_close(clf(x), 255 * x.mean(dim=(2, 3)).expand(2, 3))


def test_the_default_leaves_the_image_as_it_is(tmp_path):
    class Mean(nn.Module):
        def forward(self, x):
            return torch.cat([x.mean(dim=(1, 2, 3))[:, None], x.amax(dim=(1, 2, 3))[:, None]], 1)

    path = str(tmp_path / "mean.ts")
    torch.jit.script(Mean()).save(path)
    clf = load_classifier("torchscript", path, input_size=SIZE)
    x = torch.rand(2, 1, *SIZE)
    assert torch.equal(clf(x), Mean()(x))


def test_a_missing_adaptation_names_the_networks_own_complaint(tmp_path):
    """TorchScript's first error line is always "The following operation failed in the
    TorchScript interpreter"; the cause is on its last."""
    path = save(tmp_path, Recorder())
    with pytest.raises(ValueError, match=r"net\.ts.*\(B, 1, 64, 48\); the dummy forward failed: RuntimeError: "
                                         r"expected input\[2, 1, 64, 48\] to have 3 channels, but got 1 channels$"):
        load_classifier("torchscript", path, input_size=SIZE)


@pytest.mark.parametrize("settings", [dict(input_range=(1, 0)), dict(in_channels=3, mean=(0.1, 0.2)),
                                      dict(std=(0.0,)), dict(input_size=(-5, 100))])
def test_intensity_settings_that_cannot_fit_are_refused_at_load(tmp_path, settings):
    path = save(tmp_path, Recorder())
    kw = {**dict(input_size=SIZE, in_channels=3), **settings}
    with pytest.raises(ValueError, match=r"net\.ts"):
        load_classifier("torchscript", path, **kw)
