"""explain.inpaint's documented contract, out = (1 - b) * image + b * fill with b = hole > threshold:
a hole value exactly at the threshold (0.5 by default) is a known pixel and comes back unchanged."""
from __future__ import annotations

import torch

from explain.inpaint import make_inpainter


def test_a_hole_value_at_the_threshold_is_kept_and_one_above_it_is_filled():
    torch.manual_seed(0)
    image = 0.3 + 0.4 * torch.rand(1, 1, 32, 32)
    hole = torch.zeros_like(image)
    hole[..., 8:24, 8:24] = 0.5      # at the threshold: known
    hole[..., 12:20, 12:20] = 0.51   # above it: filled
    out = make_inpainter("blur")(image, hole)
    at = hole == 0.5
    assert torch.equal(out[at], image[at]) and torch.equal(out[hole == 0], image[hole == 0])
    assert not torch.equal(out[hole > 0.5], image[hole > 0.5])
