"""The classical and learned fills do what their names say (Telea is OpenCV's Telea, the seed
picks the noise, the noise fill sees the ring only), and a user's classifier is scored for the
configured class (a single logit's class 0, a multi-class network's log-odds)."""
from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn

from explain.classifier import Classifier
from explain.inpaint import LearnedInpainter, NavierStokesInpainter, NoiseFill, TeleaInpainter
from explain.inpaint_net import GatedUNet


def _image_and_hole():
    g = torch.Generator().manual_seed(3)
    image = (0.3 + 0.4 * torch.rand((1, 1, 64, 48), generator=g)).clamp(0, 1)
    hole = torch.zeros_like(image)
    hole[..., 20:36, 14:30] = 1
    return image, hole


def test_telea_is_opencvs_telea_and_not_navier_stokes():
    image, hole = _image_and_hole()
    telea = TeleaInpainter()(image, hole)
    img = np.round(image[0, 0].numpy() * 65535).astype(np.uint16)
    expected = cv2.inpaint(img, hole[0, 0].numpy().astype(np.uint8), 5, cv2.INPAINT_TELEA) / 65535.0
    inside = hole[0, 0].numpy() > 0
    assert np.allclose(telea[0, 0].numpy()[inside], expected[inside], atol=1e-5)
    assert not torch.equal(telea, NavierStokesInpainter()(image, hole))


def test_the_learned_inpainters_seed_picks_its_noise():
    torch.manual_seed(0)
    net = GatedUNet()
    image, hole = _image_and_hole()
    a = LearnedInpainter.from_network(net, seed=0)(image, hole)
    b = LearnedInpainter.from_network(net, seed=1)(image, hole)
    assert not torch.allclose(a, b)


def test_noise_fill_takes_its_statistics_from_the_ring_only():
    image = torch.full((1, 1, 64, 48), 0.2)
    hole = torch.zeros_like(image)
    hole[..., 20:36, 14:30] = 1
    image[hole > 0] = 1.0                      # hidden pixels: must not leak into the fill
    out = NoiseFill()(image, hole)
    assert torch.allclose(out[hole > 0], torch.tensor(0.2))


class _OneLogit(nn.Module):
    def forward(self, x):
        return x.mean(dim=(1, 2, 3)).unsqueeze(1) * 4.0 - 1.0


def test_class_index_0_of_a_single_logit_is_its_negation():
    clf = Classifier(_OneLogit(), class_index=0, input_size=(32, 32))
    x = torch.full((1, 1, 32, 32), 0.75)
    logit = 0.75 * 4.0 - 1.0
    assert clf.score(x).item() == -logit
    assert abs(clf.probability(x).item() - (1 - torch.sigmoid(torch.tensor(logit)).item())) < 1e-6


class _ThreeLogits(nn.Module):
    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([m, 2 * m + 1.0, -m], dim=1)


def test_log_odds_of_a_multiclass_network_are_against_the_other_classes():
    clf = Classifier(_ThreeLogits(), class_index=1, input_size=(32, 32))
    out = clf(torch.full((1, 1, 32, 32), 0.5))
    p = torch.softmax(out.double(), dim=1)[0, 1]
    assert abs(clf.log_odds_of(out).item() - torch.log(p / (1 - p)).item()) < 1e-4
    probs = Classifier(_ThreeLogits(), class_index=1, input_size=(32, 32), output="probabilities")
    soft = torch.tensor([[0.2, 0.5, 0.1]])  # a network whose probabilities do not sum to 1 (e.g. sigmoids)
    assert abs(probs.log_odds_of(soft).item() - float(np.log(0.5 / 0.3))) < 1e-5
