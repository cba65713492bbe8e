"""Classifier adapters, the training command and the shipped default model."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from explain.classifier import Classifier, load_classifier
from explain.networks import MammoNet

ROOT = Path(__file__).resolve().parent.parent
SIZE = (96, 64)
ARGS = {"channels": [4, 8, 8], "subunits": 1}


def small_net(seed=0, **kw):
    torch.manual_seed(seed)
    return MammoNet(**{**ARGS, **kw}).eval()


def test_monai_network_state_dict_and_torchscript_agree(tmp_path):
    net = small_net()
    torch.save(net.state_dict(), tmp_path / "w.pt")
    torch.jit.trace(net, torch.zeros(1, 1, *SIZE)).save(str(tmp_path / "w.ts"))
    a = load_classifier("monai_network", tmp_path / "w.pt", network="MammoNet", network_args=ARGS, input_size=SIZE)
    b = load_classifier("torchscript", tmp_path / "w.ts", input_size=SIZE)
    x = torch.rand(3, 1, *SIZE)
    assert a(x).shape == (3, 2) and a.num_classes == 2
    torch.testing.assert_close(a(x), b(x))
    p = a.probability(x)
    torch.testing.assert_close(p, torch.softmax(net(x), 1)[:, 1])
    # Differentiable w.r.t. the input, parameters frozen.
    xg = x.clone().requires_grad_(True)
    a.probability(xg).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    assert not any(q.requires_grad for q in a.parameters())


def test_monai_library_network(tmp_path):
    from monai.networks.nets import ResNet

    args = dict(block="basic", layers=[1, 1, 1, 1], block_inplanes=[4, 8, 8, 8], spatial_dims=2,
                n_input_channels=1, num_classes=2)
    torch.save(ResNet(**args).state_dict(), tmp_path / "r.pt")
    clf = load_classifier("monai_network", tmp_path / "r.pt", network="ResNet", network_args=args, input_size=SIZE)
    assert clf.probability(torch.rand(2, 1, *SIZE)).shape == (2,)


def test_monai_bundle(tmp_path):
    net = small_net()
    (tmp_path / "configs").mkdir()
    (tmp_path / "models").mkdir()
    cfg = {"network_def": {"_target_": "explain.networks.MammoNet", **ARGS}}
    (tmp_path / "configs" / "inference.json").write_text(json.dumps(cfg))
    torch.save(net.state_dict(), tmp_path / "models" / "model.pt")
    clf = load_classifier("monai_bundle", tmp_path, input_size=SIZE)
    x = torch.rand(2, 1, *SIZE)
    torch.testing.assert_close(clf(x), net(x))


def test_single_logit_and_probability_outputs():
    class One(nn.Module):
        def forward(self, x):
            return x.mean(dim=(1, 2, 3))[:, None] * 4 - 2

    class Probs(nn.Module):
        def forward(self, x):
            m = x.mean(dim=(1, 2, 3))[:, None]
            return torch.cat([1 - m, m], 1)

    x = torch.rand(2, 1, *SIZE)
    one = Classifier(One(), input_size=SIZE).validate()
    torch.testing.assert_close(one.probability(x), torch.sigmoid(One()(x)[:, 0]))
    assert torch.allclose(Classifier(One(), class_index=0, input_size=SIZE).validate().probability(x),
                          1 - one.probability(x))
    probs = Classifier(Probs(), output="probabilities", input_size=SIZE).validate()
    torch.testing.assert_close(probs.probability(x), x.mean(dim=(1, 2, 3)))
    with pytest.raises(ValueError, match="outside"):
        Classifier(One(), output="probabilities", input_size=SIZE).validate()


def test_wrong_channels_shape_and_files_give_clear_errors(tmp_path):
    net3 = small_net(in_channels=3)
    torch.save(net3.state_dict(), tmp_path / "rgb.pt")
    torch.jit.trace(net3, torch.zeros(1, 3, *SIZE)).save(str(tmp_path / "rgb.ts"))
    with pytest.raises(ValueError, match=r"rgb\.ts.*\(B, 1, 96, 64\)"):
        load_classifier("torchscript", tmp_path / "rgb.ts", input_size=SIZE)
    with pytest.raises(ValueError, match=r"rgb\.pt.*does not fit"):
        load_classifier("monai_network", tmp_path / "rgb.pt", network="MammoNet", network_args=ARGS, input_size=SIZE)

    class Flat(nn.Module):
        def forward(self, x):
            return x.flatten()

    torch.jit.script(Flat()).save(str(tmp_path / "flat.ts"))
    with pytest.raises(ValueError, match=r"flat\.ts.*got output shape"):
        load_classifier("torchscript", tmp_path / "flat.ts", input_size=SIZE)
    torch.save(small_net(num_classes=2).state_dict(), tmp_path / "two.pt")
    with pytest.raises(ValueError, match="class_index 5"):
        load_classifier("monai_network", tmp_path / "two.pt", network="MammoNet", network_args=ARGS,
                        input_size=SIZE, class_index=5)
    with pytest.raises(ValueError, match="not found"):
        load_classifier("torchscript", tmp_path / "missing.ts", input_size=SIZE)
    (tmp_path / "junk.ts").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"junk\.ts.*TorchScript"):
        load_classifier("torchscript", tmp_path / "junk.ts", input_size=SIZE)
    with pytest.raises(ValueError, match="NoSuchNet"):
        load_classifier("monai_network", tmp_path / "two.pt", network="NoSuchNet", input_size=SIZE)
