"""Classifier adapters, the training command and the shipped default model."""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from explain.classifier import Classifier, load_classifier
from explain.networks import MammoNet

from cfia.manifest import read_manifest
from cfia.training.classifier import auc_interval, report_by_contrast, report_by_kind, roc_auc

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


def test_a_bundle_run_at_another_size_than_its_metadata_says_is_warned_of(tmp_path, caplog):
    """A fully convolutional bundle runs at any size: its metadata's spatial_shape is the one it
    was trained at; a rule ("16*n") or no metadata says nothing."""
    (tmp_path / "configs").mkdir()
    (tmp_path / "models").mkdir()
    cfg = {"network_def": {"_target_": "explain.networks.MammoNet", **ARGS}}
    (tmp_path / "configs" / "inference.json").write_text(json.dumps(cfg))
    torch.save(small_net().state_dict(), tmp_path / "models" / "model.pt")
    caplog.set_level("WARNING", logger="cfia.explain")
    rows_only, columns_only = [SIZE[0] + 32, SIZE[1]], [SIZE[0], SIZE[1] + 16]
    for shape, warned in (([128, 96], True), (rows_only, True), (columns_only, True), (list(SIZE), False),
                          (["16*n", "16*n"], False)):
        meta = {"network_data_format": {"inputs": {"image": {"num_channels": 1, "spatial_shape": shape}}}}
        (tmp_path / "configs" / "metadata.json").write_text(json.dumps(meta))
        caplog.clear()
        load_classifier("monai_bundle", tmp_path, input_size=SIZE)
        said = f"was trained at input size {shape[0]}x{shape[1]} (its bundle's metadata says so); it is run at 96x64"
        assert (said in caplog.text) is warned, shape


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
    # A single logit stands for class 0 or 1: beyond them, the error does not offer it.
    with pytest.raises(ValueError) as err:
        Classifier(One(), class_index=2, input_size=SIZE).validate()
    assert "class_index 2 does not fit 1 output class(es); expected a (B, C) output with C > 2 for input" in str(err.value)


def test_a_softmax_read_as_logits_is_warned_of(caplog):
    """A model ending in a softmax, configured as logits (the default), would be explained with
    scores near 1/C: warned of at load, naming the setting; logits and a softmax so configured are not."""
    class Softmax(nn.Module):
        def forward(self, x):
            m = x.mean(dim=(1, 2, 3))[:, None]
            return torch.cat([-m, m], 1).softmax(1)

    caplog.set_level("WARNING", logger="cfia.explain")
    Classifier(Softmax(), input_size=SIZE).validate()
    assert "sum to 1 over the classes, as a softmax's do, but it is configured as logits" in caplog.text
    caplog.clear()
    Classifier(Softmax(), output="probabilities", input_size=SIZE).validate()
    Classifier(small_net(), input_size=SIZE).validate()
    assert "softmax" not in caplog.text


def test_precision_runs_the_network_under_autocast_and_returns_float32():
    clf = Classifier(small_net(), input_size=SIZE).validate()
    x = torch.rand(2, 1, *SIZE, requires_grad=True)
    full = clf.probability(x)
    clf.set_precision("bf16")
    half = clf.probability(x)
    assert half.dtype == torch.float32 and not torch.equal(half, full)  # bf16 rounding shows
    torch.testing.assert_close(half, full, atol=0.05, rtol=0)
    grad, = torch.autograd.grad(clf.score(x).sum(), x)  # the optimiser's backward works under it
    assert grad.dtype == torch.float32 and grad.abs().sum() > 0
    assert torch.equal(clf.set_precision("float32").probability(x), full)
    with pytest.raises(ValueError, match="precision"):
        clf.set_precision("int8")


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


def test_a_model_file_of_the_other_kind_names_the_kind_to_set(tmp_path, recwarn):
    """A TorchScript file under the default kind (monai_network) got torch's advice to load it
    unsafely, and a state dict under kind torchscript "your checkpoint file is corrupted": each
    now names the kind that reads it, without torch's warning."""
    net = small_net()
    torch.save(net.state_dict(), tmp_path / "w.pt")
    torch.jit.trace(net, torch.zeros(1, 1, *SIZE)).save(str(tmp_path / "w.ts"))
    with pytest.raises(ValueError, match=r"w\.ts: a TorchScript file, not a state dict.*kind: torchscript"):
        load_classifier("monai_network", tmp_path / "w.ts", network="MammoNet", network_args=ARGS, input_size=SIZE)
    with pytest.raises(ValueError, match=r"w\.pt: saved by torch\.save.*kind: monai_network"):
        load_classifier("torchscript", tmp_path / "w.pt", input_size=SIZE)
    assert not [w for w in recwarn if "weights_only" in str(w.message)]


class _Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = small_net()

    def forward(self, x):
        out = self.net(x)
        return out, out.softmax(1)


def test_a_model_returning_a_tuple_is_told_to_return_its_scores_alone(tmp_path):
    torch.jit.script(_Pair().eval()).save(str(tmp_path / "pair.ts"))
    with pytest.raises(ValueError, match=r"pair\.ts: expected a tensor output, got tuple; export a wrapper"):
        load_classifier("torchscript", tmp_path / "pair.ts", input_size=SIZE)


def test_weight_files_as_other_tools_save_them(tmp_path):
    """A tutorial checkpoint ({'epoch', 'model_state_dict'}) and a DataParallel state dict
    ('module.' keys) load; a whole pickled model, a dict without weights, weights of another
    network and a bundle whose network cannot be built each stop in one short line saying why."""
    net = small_net()
    x = torch.rand(2, 1, *SIZE)
    load = lambda path: load_classifier("monai_network", path, network="MammoNet", network_args=ARGS,  # noqa: E731
                                        input_size=SIZE)
    torch.save({"epoch": 3, "model_state_dict": net.state_dict()}, tmp_path / "tutorial.pt")
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "ddp.pt")
    for name in ("tutorial.pt", "ddp.pt"):
        torch.testing.assert_close(load(tmp_path / name)(x), net(x))

    class Wrapper(nn.Module):  # a network whose own keys start with "module." keeps them
        def __init__(self):
            super().__init__()
            self.module = small_net()

        def forward(self, x):
            return self.module(x)

    from explain.classifier import _load_weights

    wrapped = Wrapper()
    torch.save(wrapped.state_dict(), tmp_path / "wrapper.pt")
    fresh = Wrapper()
    _load_weights(fresh, tmp_path / "wrapper.pt", "cpu")
    torch.testing.assert_close(fresh(x), wrapped(x))
    torch.save(net, tmp_path / "whole.pt")
    torch.save({"epoch": 3, "weights": [1, 2]}, tmp_path / "nothing.pt")
    torch.save(small_net(channels=[4, 8, 16]).state_dict(), tmp_path / "wider.pt")
    np_scalar = {"epoch": 3, "model_state_dict": net.state_dict(), "best_metric": np.float64(0.9)}
    torch.save(np_scalar, tmp_path / "np.pt")
    for name, says in (("whole.pt", r"holds a pickled explain\.networks\.MammoNet, not tensors alone.*state_dict\(\)"),
                       ("np.pt", r"holds a pickled numpy\.[\w.]+scalar, not tensors alone"),
                       ("nothing.pt", r"model_state_dict; got a dict with the entries epoch, weights"),
                       ("wider.pt", r"does not fit the network: \d+ of another shape \(e\.g\. ")):
        with pytest.raises(ValueError, match=says) as got:
            load(tmp_path / name)
        assert "\n" not in str(got.value) and len(str(got.value)) < 400, str(got.value)
    bundle = tmp_path / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    (bundle / "configs" / "inference.json").write_text(json.dumps(
        {"network_def": {"_target_": "explain.networks.MammoNet", "chanels": [4, 8, 8]}}))
    torch.save(net.state_dict(), bundle / "models" / "model.pt")
    with pytest.raises(ValueError, match=r"cannot build network_def from inference\.json: TypeError: .*chanels"):
        load_classifier("monai_bundle", bundle, input_size=SIZE)


def test_models_that_would_fail_mid_study_are_refused_at_load(tmp_path):
    """The dummy forward also differentiates the score: a model that detaches its output
    or answers class indices cannot be explained; Grad-CAM needs a layer it can hook."""
    from cfia.config import from_dict
    from cfia.pipeline import Pipeline

    class Detached(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = small_net()

        def forward(self, x):
            return self.net(x).detach()

    class Indices(Detached):
        def forward(self, x):
            return self.net(x).argmax(1, keepdim=True)

    for name, model, says in (("detached", Detached(), "cannot be differentiated"),
                              ("indices", Indices(), "floating-point scores")):
        torch.jit.script(model.eval()).save(str(tmp_path / f"{name}.ts"))
        with pytest.raises(ValueError, match=says):
            load_classifier("torchscript", tmp_path / f"{name}.ts", input_size=SIZE)
    torch.jit.trace(small_net(), torch.zeros(1, 1, *SIZE)).save(str(tmp_path / "good.ts"))
    torch.save(small_net().state_dict(), tmp_path / "good.pt")
    base = {"models": {"inpainter": {"kind": "telea"}}, "explainer": {"method": "gradcam"}}
    for classifier, says in (({"kind": "torchscript", "path": str(tmp_path / "good.ts")}, "takes no hooks"),
                             ({"kind": "monai_network", "path": str(tmp_path / "good.pt"), "network": "MammoNet",
                               "network_args": ARGS}, "'features.9' is not a layer")):
        cfg = {**base, "models": {**base["models"], "classifier": {**classifier, "input_size": list(SIZE)}},
               "explainer": {"method": "gradcam", "gradcam_layer": "features.9"}}
        with pytest.raises(ValueError, match=says):
            Pipeline(from_dict(cfg))


def test_a_gradcam_layer_it_cannot_run_on_is_refused_at_start_naming_ones_it_can(tmp_path):
    """A layer that exists but gives no feature map (a ResNet's fc) or whose output a later
    layer changes in place (a DenseNet's norm5, then an in-place ReLU) crashed on every image;
    each stops at start-up in one line naming the layers that give a feature map, last first;
    a layer that does not exist names the network's last layers, not its first."""
    from monai.networks.nets import DenseNet121, ResNet

    from cfia.config import from_dict
    from cfia.pipeline import Pipeline

    resnet = dict(block="basic", layers=[1, 1, 1, 1], block_inplanes=[4, 8, 8, 8], spatial_dims=2,
                  n_input_channels=1, num_classes=2)
    densenet = dict(spatial_dims=2, in_channels=1, out_channels=2, init_features=4, growth_rate=4)
    torch.save(ResNet(**resnet).state_dict(), tmp_path / "r.pt")
    torch.save(DenseNet121(**densenet).state_dict(), tmp_path / "d.pt")
    base = {"models": {"inpainter": {"kind": "telea"}}}
    cases = (("ResNet", resnet, "r.pt", "fc", r"'fc' gives no feature map.*runs on, last first: layer4"),
             ("DenseNet121", densenet, "d.pt", "features.norm5",
              r"'features\.norm5': Grad-CAM cannot run on it.*last first: class_layers\.relu, features\.denseblock4"),
             ("ResNet", resnet, "r.pt", "avgpool", r"'avgpool' gives no feature map.*last first: layer4"),
             ("ResNet", resnet, "r.pt", "features.3", r"not a layer.*its last layers: .*fc"))
    for network, args, weights, layer, says in cases:
        cfg = {**base, "models": {**base["models"], "classifier": {
            "kind": "monai_network", "path": str(tmp_path / weights), "network": network, "network_args": args,
            "input_size": [64, 64]}}, "explainer": {"method": "gradcam", "gradcam_layer": layer}}
        with pytest.raises(ValueError, match=says) as got:
            Pipeline(from_dict(cfg))
        assert "\n" not in str(got.value)
    cfg["explainer"]["gradcam_layer"] = "class_layers.relu"  # the DenseNet's last feature map: it runs
    Pipeline(from_dict({**cfg, "models": {**cfg["models"], "classifier": {
        **cfg["models"]["classifier"], "path": str(tmp_path / "d.pt"), "network": "DenseNet121",
        "network_args": densenet}}}))


def test_manifest_from_a_spreadsheet_is_read_like_the_phantoms(tmp_path):
    """Excel's "CSV UTF-8" starts with a byte-order mark; headers may differ in case and spaces."""
    (tmp_path / "a.dcm").write_bytes(b"")
    (tmp_path / "manifest.csv").write_bytes("\ufeffFile , Label\r\na.dcm , 1\r\n\r\n".encode("utf-8"))
    (record,) = read_manifest(tmp_path)
    assert (record.path.name, record.label) == ("a.dcm", 1)


def test_manifest_rows_that_cannot_be_read_stop_naming_the_line(tmp_path):
    """A short row, an unclosed quote, an empty file name or a file that is not UTF-8 stop
    with a DataError naming the manifest and the line (blank lines counted), not a traceback."""
    from cfia.manifest import DataError

    (tmp_path / "a.dcm").write_bytes(b"")
    manifest = tmp_path / "manifest.csv"
    for text, says in (("file,label\nimg00000.dcm\n", "line 2: 1 value(s) for the columns file,label"),
                       ('file,label\na.dcm,0\n"b.dcm,1\na.dcm,0\n', "line 3: a quoted value runs over the end"),
                       ("file,label\n,1\n", "line 2: no file name"),
                       ("file,label\n\na.dcm,0\n\na.dcm,x\n", "line 5: label must be 0 or 1, got 'x'")):
        manifest.write_text(text)
        with pytest.raises(DataError, match=re.escape(f"{manifest} {says}")):
            read_manifest(tmp_path)
    manifest.write_bytes("file,label,kind\na.dcm,1,l\u00e9sion\n".encode("latin-1"))
    with pytest.raises(DataError, match=re.escape(f"{manifest}: not UTF-8 text; save it as UTF-8")):
        read_manifest(tmp_path)


# -- training ---------------------------------------------------------------------

TINY = ["--input-size", "64x48", "--network-args", json.dumps({"channels": [4, 8, 8], "subunits": 1}),
        "--batch-size", "4", "--workers", "1", "--threads", "1", "--quiet"]


def _train(data, out, *extra):
    from cfia.cli import main

    return main(["train", "classifier", "--data", str(data), "--out", str(out), "--cache-dir",
                 str(Path(out).parent / "cache"), *TINY, *extra])


def _weights(folder):
    return torch.load(Path(folder) / "classifier.pt", weights_only=True)


def test_tiny_training_checkpoints_resumes_and_is_deterministic(phantom_dir, tmp_path, capsys):
    assert _train(phantom_dir, tmp_path / "a", "--epochs", "2", "--seed", "3") == 0
    for name in ("classifier.pt", "classifier.ts", "classifier.json", "classifier.ckpt"):
        assert (tmp_path / "a" / name).exists()
    meta = json.loads((tmp_path / "a" / "classifier.json").read_text())
    assert meta["network"] == "MammoNet" and meta["input_size"] == [64, 48] and len(meta["history"]) == 2
    # Same seed, same weights.
    assert _train(phantom_dir, tmp_path / "b", "--epochs", "2", "--seed", "3") == 0
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # One epoch of two (interrupted), then --resume, gives the same weights as two straight.
    assert _train(phantom_dir, tmp_path / "c", "--epochs", "2", "--seed", "3", "--stop-after", "1") == 0
    assert json.loads((tmp_path / "c" / "classifier.json").read_text())["history"][-1]["epoch"] == 1
    assert _train(phantom_dir, tmp_path / "c", "--epochs", "2", "--seed", "3", "--resume") == 0
    c = _weights(tmp_path / "c")
    assert all(torch.equal(a[k], c[k]) for k in a)
    # A different seed gives different weights.
    assert _train(phantom_dir, tmp_path / "d", "--epochs", "1", "--seed", "4") == 0
    d = _weights(tmp_path / "d")
    assert not all(torch.equal(a[k], d[k]) for k in a)
    # --eval-only reports AUC and accuracy through the run-time adapter.
    capsys.readouterr()
    from cfia.cli import main

    assert main(["train", "classifier", "--eval-only", "--data", str(phantom_dir), "--model",
                 str(tmp_path / "a" / "classifier.ts"), "--cache-dir", str(tmp_path / "cache"), *TINY]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["n"] == 8 and 0 <= res["auc"] <= 1 and 0 <= res["accuracy"] <= 1
    assert res["auc_ci95"][0] <= res["auc"] <= res["auc_ci95"][1]
    # ... and, from the manifest's `kind` column, each lesion kind against all negatives.
    kinds = [r.kind for r in read_manifest(phantom_dir) if r.label]
    assert kinds and all(kinds)
    assert {k: v["n"] for k, v in res["by_kind"].items()} == dict(Counter(kinds))
    # ... and, from its `contrast` column, the positives binned by lesion contrast.
    assert sum(v["n"] for v in res["by_contrast"].values()) == len(kinds)


def test_init_starts_from_given_weights_and_rejects_ones_that_do_not_fit(phantom_dir, tmp_path, capsys):
    assert _train(phantom_dir, tmp_path / "a", "--epochs", "1", "--seed", "3") == 0
    start = tmp_path / "a" / "classifier.pt"
    # Fine-tuning with --lr 0 must keep the starting weights exactly (BatchNorm running
    # statistics aside, which any forward pass in training mode updates).
    assert _train(phantom_dir, tmp_path / "b", "--epochs", "1", "--seed", "5", "--lr", "0", "--init", str(start)) == 0
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    learned = [k for k in a if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert learned and all(torch.equal(a[k], b[k]) for k in learned)
    assert json.loads((tmp_path / "b" / "classifier.json").read_text())["init"] == str(start)
    # From scratch with the same seed and lr 0 the weights differ: --init was used.
    assert _train(phantom_dir, tmp_path / "c", "--epochs", "1", "--seed", "5", "--lr", "0") == 0
    assert not all(torch.equal(a[k], _weights(tmp_path / "c")[k]) for k in learned)
    # Weights of another network: exit 2, naming the option and what to do.
    capsys.readouterr()
    other = ["--network-args", json.dumps({"channels": [4, 8, 16], "subunits": 1})]
    assert _train(phantom_dir, tmp_path / "d", "--epochs", "1", "--init", str(start), *other) == 2
    err = capsys.readouterr().err
    assert "--init" in err and "do not fit" in err and "--network-args" in err
    assert _train(phantom_dir, tmp_path / "e", "--epochs", "1", "--init", str(tmp_path / "missing.pt")) == 2


def test_aug_noise_changes_training_and_must_not_be_negative(phantom_dir, tmp_path, capsys):
    assert _train(phantom_dir, tmp_path / "a", "--epochs", "1", "--seed", "3") == 0
    assert _train(phantom_dir, tmp_path / "b", "--epochs", "1", "--seed", "3", "--aug-noise", "0.2") == 0
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert not all(torch.equal(a[k], b[k]) for k in a)
    capsys.readouterr()
    assert _train(phantom_dir, tmp_path / "c", "--epochs", "1", "--aug-noise", "-0.1") == 2
    assert "--aug-noise" in capsys.readouterr().err
    assert _train(phantom_dir, tmp_path / "d", "--epochs", "1", "--aug-noise-corr", "1.5") == 2
    assert "--aug-noise-corr" in capsys.readouterr().err
    assert _train(phantom_dir, tmp_path / "e", "--epochs", "1", "--aug-markers", "-0.2") == 2
    assert "--aug-markers" in capsys.readouterr().err
    assert _train(phantom_dir, tmp_path / "f", "--epochs", "1", "--aug-texture", "2") == 2
    assert "--aug-texture" in capsys.readouterr().err


def test_correlated_noise_augmentation():
    """--aug-noise-corr: the added noise is spatially correlated, with the s.d. asked for."""
    from dataclasses import replace

    from cfia.training.augment import AugmentOptions, augment

    # Geometry and intensity changes off, so the output is 0.5 + noise.
    still = AugmentOptions(p_vflip=0, max_rotate_deg=0, scale=(1, 1), max_translate=0, gamma=(1, 1),
                           contrast=(1, 1), brightness=0, p_blur=0, noise_std=(0.1, 0.1))
    x = torch.full((4, 1, 96, 96), 0.5)

    def lag1(n):  # correlation of horizontally adjacent pixels
        a, b = n[..., 1:].flatten(), n[..., :-1].flatten()
        return float(torch.corrcoef(torch.stack([a, b]))[0, 1])

    white = augment(x, torch.Generator().manual_seed(0), still) - 0.5
    corr = augment(x, torch.Generator().manual_seed(0),
                   replace(still, p_noise_corr=1.0, noise_corr_sigma=(2.0, 2.0))) - 0.5
    assert abs(lag1(white)) < 0.05
    assert lag1(corr) > 0.8  # a Gaussian of sigma 2 gives exp(-1/16) = 0.94
    assert abs(float(white.std()) - 0.1) < 0.01 and abs(float(corr.std()) - 0.1) < 0.01


def test_skin_marker_augmentation():
    """--aug-markers: saturated markers on the breast's rim of the chosen samples only;
    off, the augmentation draws exactly what it drew before."""
    from dataclasses import replace

    from scipy import ndimage

    from cfia.training.augment import AugmentOptions, augment

    still = AugmentOptions(p_vflip=0, max_rotate_deg=0, scale=(1, 1), max_translate=0, gamma=(1, 1),
                           contrast=(1, 1), brightness=0, p_blur=0, noise_std=(0.0, 0.0))
    x = torch.zeros(6, 1, 128, 96)
    x[:, :, 16:112, :60] = 0.5  # a "breast" against the left edge
    marked = augment(x, torch.Generator().manual_seed(1), replace(still, p_markers=1.0))
    breast = (x[0, 0] > 0).numpy()
    rim = breast & ~ndimage.binary_erosion(breast, border_value=1)
    near_rim = ndimage.distance_transform_edt(~rim)
    for i in range(6):
        added = (marked[i, 0] != x[i, 0]).numpy()
        assert added.any() and bool((marked[i, 0][torch.from_numpy(added)] == 1.0).all())
        assert near_rim[added].max() <= 10  # markers sit on the skin line (at 128 rows, a few pixels)
    assert torch.equal(augment(x, torch.Generator().manual_seed(1), replace(still, p_markers=0.0)), x)
    base = AugmentOptions()
    assert torch.equal(augment(x + 0.1, torch.Generator().manual_seed(2), base),
                       augment(x + 0.1, torch.Generator().manual_seed(2), replace(base, p_markers=0.0)))


def test_implant_and_clip_augmentation():
    """--aug-implant: a bright shape against the chest wall (left, canonical) and the rest of
    the breast no brighter; --aug-clips: near-saturated metal well inside the breast, off
    its rim; each on the chosen samples only, and off, the augmentation draws exactly what
    it drew before."""
    from dataclasses import replace

    from scipy import ndimage

    from cfia.training.augment import AugmentOptions, augment

    still = AugmentOptions(p_vflip=0, max_rotate_deg=0, scale=(1, 1), max_translate=0, gamma=(1, 1),
                           contrast=(1, 1), brightness=0, p_blur=0, noise_std=(0.0, 0.0))
    x = torch.zeros(6, 1, 128, 96)
    x[:, :, 16:112, :60] = 0.3 + 0.2 * torch.rand(6, 1, 96, 60, generator=torch.Generator().manual_seed(0))
    breast = (x[0, 0] > 0).numpy()
    implanted = augment(x, torch.Generator().manual_seed(1), replace(still, p_implant=1.0))
    for i in range(6):
        bright = (implanted[i, 0] > 0.8).numpy()
        assert bright.sum() > 0.05 * breast.sum() and not bright[~breast].any()
        assert ndimage.center_of_mass(bright)[1] < 20  # against the chest wall, not out in the breast
        near = ndimage.binary_dilation((implanted[i, 0] > 0.6).numpy(), iterations=10)
        assert bool((implanted[i, 0] <= x[i, 0] + 1e-6)[torch.from_numpy(~near)].all())  # the rest darkened
        over = implanted[i, 0][torch.from_numpy(bright)]
        assert 0.0 < float(over.std()) < float(x[i, 0][torch.from_numpy(breast)].std())  # tissue seen through it, fainter
    clipped = augment(x, torch.Generator().manual_seed(1), replace(still, p_clips=1.0))
    rim_or_out = ~ndimage.binary_erosion(breast, border_value=1)  # outside the breast or on its rim
    for i in range(6):
        added = ((clipped[i, 0] - x[i, 0]).abs() > 1e-4).numpy()  # the identity affine rounds the rest
        assert 0 < added.sum() < 0.05 * breast.sum() and not (added & rim_or_out).any()
        assert bool((clipped[i, 0][torch.from_numpy(added)] >= 0.9).all())
    half = augment(x, torch.Generator().manual_seed(3), replace(still, p_implant=0.5, p_clips=0.5))
    assert 0 < sum(float((half[i] - x[i]).abs().max()) > 1e-4 for i in range(6)) < 6
    base = AugmentOptions()
    assert torch.equal(augment(x + 0.1, torch.Generator().manual_seed(2), base),
                       augment(x + 0.1, torch.Generator().manual_seed(2), replace(base, p_implant=0.0, p_clips=0.0)))


def test_tissue_texture_augmentation():
    """--aug-texture: texture added inside the breast only, of the s.d. asked for (relative
    to the breast's), in a varying pattern; off, the augmentation draws what it drew before."""
    from dataclasses import replace

    from cfia.training.augment import AugmentOptions, augment

    still = AugmentOptions(p_vflip=0, max_rotate_deg=0, scale=(1, 1), max_translate=0, gamma=(1, 1),
                           contrast=(1, 1), brightness=0, p_blur=0, noise_std=(0.0, 0.0))
    x = torch.zeros(8, 1, 128, 96)
    x[:, :, 16:112, :60] = torch.linspace(0.3, 0.7, 60)  # a "breast" with a gradient, s.d. 0.116
    breast = x[0, 0] > 0
    out = augment(x, torch.Generator().manual_seed(3), replace(still, p_texture=1.0, texture_amplitude=(0.2, 0.2)))
    added = out - x
    assert torch.equal(added[:, 0][:, ~breast], torch.zeros_like(added[:, 0][:, ~breast]))  # air untouched
    sds = [float(added[i, 0][breast].std()) for i in range(8)]
    assert all(abs(sd - 0.2 * float(x[0, 0][breast].std())) < 0.005 for sd in sds)
    assert float(torch.corrcoef(added[:, 0][:, breast])[0, 1:].abs().max()) < 0.9  # not one fixed pattern
    assert torch.allclose(augment(x, torch.Generator().manual_seed(3), replace(still, p_texture=0.0)), x, atol=1e-6)
    base = AugmentOptions()
    assert torch.equal(augment(x + 0.1, torch.Generator().manual_seed(2), base),
                       augment(x + 0.1, torch.Generator().manual_seed(2), replace(base, p_texture=0.0)))


def test_training_data_errors(phantom_dir, tmp_path, capsys, caplog):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(phantom_dir, data, ignore=shutil.ignore_patterns(".cfia-cache"))
    manifest = (data / "manifest.csv").read_text()
    (data / "manifest.csv").write_text(manifest + "gone1.dcm,0,,L,CC\ngone2.dcm,1,,R,MLO\n")
    assert _train(data, tmp_path / "out", "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert "2 missing file(s)" in err and "gone1.dcm" in err and "gone2.dcm" in err
    # An unreadable DICOM is reported by path and skipped; training goes on.
    (data / "manifest.csv").write_text(manifest + "broken.dcm,0,,L,CC\n")
    (data / "broken.dcm").write_bytes(b"\0" * 200)
    assert _train(data, tmp_path / "out", "--epochs", "1") == 0
    assert any("broken.dcm" in r.getMessage() and "skipped" in r.getMessage() for r in caplog.records)
    # A contrast that is not a number stops the run, naming the line and the value.
    rows = manifest.splitlines()
    rows[1] = ",".join(rows[1].split(",")[:-1] + ["faint"])
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    assert _train(data, tmp_path / "out2", "--epochs", "1") == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "contrast must be a number, got 'faint'" in err


def test_training_data_a_site_may_have(phantom_dir, tmp_path, capsys, caplog, monkeypatch):
    """Positives without masks train on their label only; a bad mask skips its image by
    path; a changed image of the same size is preprocessed again; one class stops the run;
    reports name the files as this run gave the folder."""
    import os
    import shutil

    from cfia.training.classifier import _loss
    from cfia.training.data import load_images

    data = tmp_path / "data"
    shutil.copytree(phantom_dir, data, ignore=shutil.ignore_patterns(".cfia-cache"))
    rows = (data / "manifest.csv").read_text().splitlines()
    header = rows[0].split(",")
    mask_col, label_col = header.index("mask"), header.index("label")
    positives = [i for i, r in enumerate(rows[1:], 1) if r.split(",")[label_col] == "1"]
    no_mask, bad_mask = positives[0], positives[1]
    for i, value in ((no_mask, ""), (bad_mask, "bad.npy")):
        cells = rows[i].split(",")
        cells[mask_col] = value
        rows[i] = ",".join(cells)
    np.save(data / "bad.npy", np.zeros((10, 10), bool))  # not the image's shape
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    images, masks, labels, files = load_images(data, (64, 48), tmp_path / "cache", workers=1, progress=False,
                                               training=True)
    assert len(files) == 7 and not any(rows[bad_mask].split(",")[0] in f for f in files)
    assert any("bad.npy: unreadable lesion mask" in r.getMessage() for r in caplog.records)
    unknown = masks.flatten(1).amin(1) < 0
    assert int(unknown.sum()) == 1 and int(labels[unknown]) == 1
    net = small_net()
    x, y = images[:2].float(), labels[:2]
    only_unknown = torch.full_like(masks[:2].float(), -1.0)
    assert torch.equal(_loss(net, x, y, only_unknown, 1.0), torch.nn.functional.cross_entropy(net(x), y))
    # The same folder given another way: the files as given now.
    monkeypatch.chdir(tmp_path)
    files_rel = load_images(Path("data"), (64, 48), tmp_path / "cache", workers=1, progress=False)[3]
    assert files_rel[0].startswith("data/") and files[0].startswith(str(data))
    # An image replaced by another of the same size is preprocessed again.
    first = data / rows[1].split(",")[0]
    other = data / rows[2].split(",")[0]
    before = images[0].clone()
    shutil.copyfile(other, first)
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10**9))
    again = load_images(data, (64, 48), tmp_path / "cache", workers=1, progress=False)[0]
    assert not torch.equal(again[0], before)
    # One class only: a clear stop.
    (data / "manifest.csv").write_text("\n".join([rows[0]] + [rows[i] for i in positives[2:]]) + "\n")
    assert _train(data, tmp_path / "one", "--epochs", "1") == 2
    assert "a classifier needs positives and negatives" in capsys.readouterr().err


def test_training_options_that_cannot_work_stop_before_any_work(phantom_dir, tmp_path, capsys):
    from cfia.cli import main

    for extra in (["--epochs", "0"], ["--batch-size", "0"]):
        with pytest.raises(SystemExit) as stop:
            _train(phantom_dir, tmp_path / "x", *extra)
        assert stop.value.code == 2 and "must be at least 1" in capsys.readouterr().err
    (tmp_path / "afile").write_text("")
    assert _train(phantom_dir, tmp_path / "afile", "--epochs", "1") == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    # --resume with other options than the checkpoint's run.
    assert _train(phantom_dir, tmp_path / "r", "--epochs", "2", "--stop-after", "1") == 0
    assert _train(phantom_dir, tmp_path / "r", "--epochs", "2", "--resume", "--lr", "0.01") == 2
    err = capsys.readouterr().err
    assert "continues a run with other options: lr 0.002 (now 0.01)" in err
    assert main(["train", "inpainter", "--data", str(phantom_dir), "--out", str(tmp_path / "afile"), "--quiet"]) == 2
    # Validation on training images: stopped.
    assert _train(phantom_dir, tmp_path / "v", "--epochs", "1", "--val-data", str(phantom_dir)) == 2
    assert "--val-data shares 8 image(s) with --data" in capsys.readouterr().err


def test_a_network_that_cannot_train_stops_before_the_preprocessing(phantom_dir, tmp_path, capsys, caplog):
    """One logit, three input channels, a network's arguments not given: one line, exit 2, before
    any image is read (on a site's data the preprocessing takes minutes)."""
    def network(args):
        return ["--network", "DenseNet121", "--network-args", json.dumps({"spatial_dims": 2, **args})]

    caplog.set_level("INFO")
    cases = (({"in_channels": 1, "out_channels": 1}, "gives (2, 1) for a batch of 2; training needs (2, C) with C >= 2"),
             ({"in_channels": 3, "out_channels": 2}, "network DenseNet121 on a 2x1x64x48 batch (one-channel images): "
                                                     "RuntimeError"))
    for args, said in cases:
        assert _train(phantom_dir, tmp_path / "n", "--epochs", "1", *network(args)) == 2
        assert said in capsys.readouterr().err
    from cfia.cli import main

    assert main(["train", "classifier", "--data", str(phantom_dir), "--out", str(tmp_path / "n"), "--quiet",
                 "--cache-dir", str(tmp_path / "cache"), "--network", "DenseNet121"]) == 2
    assert "network DenseNet121 does not accept network_args {}" in capsys.readouterr().err
    assert main(["train", "classifier", "--eval-only", "--data", str(phantom_dir), "--model", str(ROOT / "models" /
                 "classifier.pt"), "--network", "DenseNet121", "--input-size", "64x48", "--quiet"]) == 2
    assert "network DenseNet121 does not accept network_args {}" in capsys.readouterr().err
    assert "training on" not in caplog.text and not (tmp_path / "cache").exists()


def test_training_does_not_replace_a_model_unless_forced(phantom_dir, tmp_path, capsys):
    """--out defaults to models/: a second run into a folder with a model stops, naming the
    file, before any work; --force, or --resume of the run whose checkpoint is there, replace it."""
    out = tmp_path / "m"
    assert _train(phantom_dir, out, "--epochs", "1") == 0
    before = (out / "classifier.pt").read_bytes()
    capsys.readouterr()
    assert _train(phantom_dir, out, "--epochs", "1", "--seed", "9") == 2
    err = capsys.readouterr().err
    # Its checkpoint is there too: named first, with --resume (a run ended by --stop-after continues).
    assert (f"{out / 'classifier.ckpt'} holds an earlier run (epoch 1), and {out / 'classifier.pt'} exists; give "
            "--resume to continue it, --force to start afresh over it") in err and len(err.strip().splitlines()) == 1
    assert (out / "classifier.pt").read_bytes() == before
    assert _train(phantom_dir, out, "--epochs", "1", "--seed", "9", "--force") == 0
    assert (out / "classifier.pt").read_bytes() != before
    assert _train(phantom_dir, out, "--epochs", "1", "--seed", "9", "--resume") == 0
    # --resume without a checkpoint starts afresh: it must not replace the model either.
    (out / "classifier.ckpt").unlink()
    forced = (out / "classifier.pt").read_bytes()
    assert _train(phantom_dir, out, "--epochs", "1", "--seed", "3", "--resume") == 2
    assert (out / "classifier.pt").read_bytes() == forced


def _constant_model(path, value):
    """A TorchScript model with one output column, `value` for every image."""
    class Constant(nn.Module):
        def forward(self, x):
            return x.mean((1, 2, 3))[:, None] * 0 + value

    torch.jit.trace(Constant(), torch.zeros(1, 1, *SIZE)).save(str(path))


def test_eval_only_reads_the_model_as_the_node_is_told_to(phantom_dir, tmp_path, capsys):
    """--class-index and --output reach the adapter: a single output 0.3 is a negative as a
    probability, a positive as a logit (sigmoid 0.57), and class 0's 1 - 0.57 a negative."""
    from cfia.cli import main

    _constant_model(tmp_path / "c.ts", 0.3)
    ev = ["train", "classifier", "--eval-only", "--data", str(phantom_dir), "--model", str(tmp_path / "c.ts"),
          "--cache-dir", str(tmp_path / "cache"), *TINY]
    for extra, sensitivity in (([], 1.0), (["--output", "probabilities"], 0.0), (["--class-index", "0"], 0.0),
                               (["--class-index", "0", "--output", "probabilities"], 1.0)):
        capsys.readouterr()
        assert main(ev + extra) == 0
        res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert res["sensitivity"] == sensitivity, extra
    assert main(ev + ["--class-index", "2"]) == 2
    assert "class_index 2 does not fit" in capsys.readouterr().err
    assert _train(phantom_dir, tmp_path / "t", "--epochs", "1", "--class-index", "0") == 2
    assert "--class-index and --output go with --eval-only" in capsys.readouterr().err


def test_eval_only_with_a_config_reads_the_classifier_as_the_node_does(phantom_dir, tmp_path, capsys):
    """A user's RGB model with ImageNet normalisation: --eval-only --config feeds it what the
    node feeds it (without the config's channels it could not run at all)."""
    import yaml

    from cfia.cli import main

    class Rgb(nn.Module):
        def forward(self, x):
            return torch.stack([-x[:, 0].mean((1, 2)), x[:, 2].mean((1, 2))], 1)  # channels 0 and 2 used

    torch.jit.script(Rgb()).save(str(tmp_path / "rgb.ts"))
    classifier = {"kind": "torchscript", "path": "rgb.ts", "input_size": [64, 48], "channels": 3,
                  "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    (tmp_path / "site.yaml").write_text(yaml.safe_dump({"models": {"classifier": classifier}}))
    ev = ["train", "classifier", "--eval-only", "--data", str(phantom_dir), "--cache-dir", str(tmp_path / "cache")]
    capsys.readouterr()
    assert main([*ev, "--config", str(tmp_path / "site.yaml")]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["model"] == str(tmp_path / "rgb.ts") and res["n"] > 0 and 0 <= res["auc"] <= 1
    assert main([*ev, "--model", str(tmp_path / "rgb.ts"), "--input-size", "64x48"]) == 2
    assert "rgb.ts: expected it to accept input of shape (B, 1, 64, 48)" in capsys.readouterr().err
    assert main([*ev, "--config", str(tmp_path / "site.yaml"), "--model", str(tmp_path / "rgb.ts")]) == 2
    assert "leave out --model" in capsys.readouterr().err


def test_resume_stops_when_the_data_changed_and_warns_of_other_threads(phantom_dir, tmp_path, capsys, caplog):
    """Rows appended to a manifest, or an image replaced, are other data: --resume stops,
    naming the folder; another --threads resumes, warning that the bits will differ."""
    import os
    import shutil

    data = tmp_path / "data"
    shutil.copytree(phantom_dir, data, ignore=shutil.ignore_patterns(".cfia-cache"))
    manifest = (data / "manifest.csv").read_bytes()
    assert _train(data, tmp_path / "r", "--epochs", "2", "--stop-after", "1") == 0
    first = data / manifest.decode().splitlines()[1].split(",")[0]
    shutil.copyfile(first, data / "extra.dcm")
    (data / "manifest.csv").write_bytes(manifest + b"extra.dcm,0,,L,CC,,\n")
    capsys.readouterr()
    assert _train(data, tmp_path / "r", "--epochs", "2", "--resume") == 2
    assert f"continues a run with other options: data {data}: its manifest.csv changed" in capsys.readouterr().err
    (data / "manifest.csv").write_bytes(manifest)
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10**9))
    assert _train(data, tmp_path / "r", "--epochs", "2", "--resume") == 2
    assert f"data {data}: its images or masks changed" in capsys.readouterr().err
    # A checkpoint from before the folders were fingerprinted: compared by path only.
    ckpt = tmp_path / "r" / "classifier.ckpt"
    state = torch.load(ckpt, weights_only=False)
    state["run"]["data"] = [str(data.resolve())]
    del state["threads"]
    torch.save(state, ckpt)
    assert _train(data, tmp_path / "r", "--epochs", "2", "--resume") == 0
    assert not any("bit-identical" in r.getMessage() for r in caplog.records)
    assert _train(data, tmp_path / "t", "--epochs", "2", "--stop-after", "1") == 0
    assert _train(data, tmp_path / "t", "--epochs", "2", "--resume", "--threads", "2") == 0
    assert any("--threads 2, the checkpoint's run used 1: the weights will not be bit-identical" in r.getMessage()
               for r in caplog.records)


def test_what_needs_no_images_is_checked_before_preprocessing(phantom_dir, tmp_path, capsys, monkeypatch):
    """A wrong --init network, a --resume with other options and a --val-data that shares
    images stop before the (minutes-long) preprocessing; so do bad sizes and files that are
    not state dicts, naming them."""
    from cfia.cli import main
    from cfia.training import classifier

    assert _train(phantom_dir, tmp_path / "a", "--epochs", "1", "--stop-after", "1") == 0
    capsys.readouterr()

    def preprocessed(*args, **kwargs):
        raise AssertionError("preprocessed")

    monkeypatch.setattr(classifier, "load_many", preprocessed)
    other = ["--network-args", json.dumps({"channels": [4, 8, 16], "subunits": 1})]
    for extra, says in ((["--init", str(tmp_path / "a" / "classifier.pt"), *other], "do not fit"),
                        (["--resume", "--lr", "0.01"], "lr 0.002 (now 0.01)"),
                        (["--val-data", str(phantom_dir)], "--val-data shares 8 image(s) with --data")):
        out = tmp_path / "a" if "--resume" in extra else tmp_path / "b"
        assert _train(phantom_dir, out, "--epochs", "1", *extra) == 2
        assert says in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("not a torch file\n")
    assert _train(phantom_dir, tmp_path / "c", "--epochs", "1", "--init", str(tmp_path / "notes.txt")) == 2
    assert f"--init: cannot read a state dict from {tmp_path / 'notes.txt'}" in capsys.readouterr().err
    assert main(["train", "average", "--models", str(tmp_path / "a" / "classifier.pt"), str(tmp_path / "notes.txt"),
                 "--out", str(tmp_path / "avg"), "--input-size", "64x48", "--network-args", json.dumps(ARGS)]) == 2
    assert f"--models: cannot read a state dict from {tmp_path / 'notes.txt'}" in capsys.readouterr().err
    for size in ("0x96", "-8x96", "7x64"):
        with pytest.raises(SystemExit) as stop:
            _train(phantom_dir, tmp_path / "d", f"--input-size={size}")
        assert stop.value.code == 2 and f"at least 8, got '{size}'" in capsys.readouterr().err


def test_training_logs_say_what_the_data_is_used_for(phantom_dir, tmp_path, caplog):
    """Without --val-data no epoch is selected: said at the start. A positive without a mask
    trains on its label only: said of training data, not of validation data."""
    from cfia.cli import main

    data = tmp_path / "data"  # other images: a copy of phantom_dir would not be held apart
    assert main(["phantom", "--out", str(data), "--count", "8", "--seed", "8", "--size", "128x104", "--quiet"]) == 0
    rows = (data / "manifest.csv").read_text().splitlines()
    header = rows[0].split(",")
    positive = next(i for i, r in enumerate(rows[1:], 1) if r.split(",")[header.index("label")] == "1")
    cells = rows[positive].split(",")
    cells[header.index("mask")] = ""
    rows[positive] = ",".join(cells)
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    assert _train(phantom_dir, tmp_path / "v", "--epochs", "1", "--val-data", str(data)) == 0
    messages = [r.getMessage() for r in caplog.records]
    assert not any("trained on their label only" in m or "no epoch is selected" in m for m in messages)
    caplog.clear()
    assert _train(data, tmp_path / "t", "--epochs", "1") == 0
    messages = [r.getMessage() for r in caplog.records]
    assert f"{data}: 1 positive(s) without a lesion mask: trained on their label only" in messages
    assert messages[0].startswith("no --val-data: no epoch is selected")


# -- the shipped default model -----------------------------------------------------

@pytest.mark.parametrize("stem", ["classifier", "classifier-markers", "classifier-implants"])
def test_shipped_model_matches_its_card_and_runs(stem):
    card = (ROOT / "models" / f"{stem}.md").read_text()
    meta = json.loads((ROOT / "models" / f"{stem}.json").read_text())
    size = tuple(meta["input_size"])
    for name in (f"{stem}.ts", f"{stem}.pt"):
        path = ROOT / "models" / name
        assert path.stat().st_size <= 15 * 2 ** 20
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert re.search(rf"{re.escape(name)}.*{digest}", card), f"sha256 of {name} not in the model card"
    ts = load_classifier("torchscript", ROOT / "models" / f"{stem}.ts", input_size=size)
    pt = load_classifier("monai_network", ROOT / "models" / f"{stem}.pt", network=meta["network"],
                         network_args=meta["network_args"], input_size=size)
    x = torch.rand(2, 1, *size)
    torch.testing.assert_close(ts(x), pt(x))
    p = ts.probability(x)
    assert p.shape == (2,) and bool(((p >= 0) & (p <= 1)).all())


def test_every_default_input_size_is_the_shipped_models():
    """config.yaml, the one default of config, training and benches, and explain/'s own
    defaults follow the shipped model."""
    import inspect

    from cfia import config as config_mod
    from cfia.training.classifier import TrainOptions

    shipped = tuple(json.loads((ROOT / "models" / "classifier.json").read_text())["input_size"])
    assert config_mod.load(ROOT / "config.yaml").models.classifier.input_size == shipped
    assert config_mod.DEFAULT_CLASSIFIER_INPUT == config_mod.ClassifierConfig().input_size == shipped
    assert TrainOptions.__dataclass_fields__["input_size"].default == shipped
    for fn in (Classifier.__init__, load_classifier):
        assert inspect.signature(fn).parameters["input_size"].default == shipped


def test_robustness_bench_alters_the_pixels_and_reports_every_alteration(phantom_dir, tmp_path):
    import numpy as np

    from cfia.bench import robustness

    rng = np.random.default_rng(0)
    px = np.linspace(0.0, 4095.0, 64 * 48).reshape(64, 48)
    for name, alter in robustness.ALTERATIONS.items():
        out = alter(px.copy(), rng)
        if name.startswith("air"):  # the image grows; what was there stays as it was
            assert out.shape > px.shape or out.shape[1] > px.shape[1], name
        else:
            assert out.shape == px.shape
            assert np.array_equal(out, px) == (name == "as stored"), name
    air = robustness.ALTERATIONS["air all round"](px, rng)
    assert air.shape == (64 + 16, 48 + 16) and np.array_equal(air[8:-8, 8:-8], px) and air[0, 0] == px.min()
    strip = robustness.ALTERATIONS["air strip at the chest wall"](px, rng)  # the bright side is the breast's
    assert strip.shape == (64, 49) and np.array_equal(strip[:, :48], px) and (strip[:, 48] == px.min()).all()
    gamma = robustness.ALTERATIONS["gamma 1.4"](px, rng)
    assert gamma.min() == px.min() and gamma.max() == px.max()
    added = robustness.ALTERATIONS["correlated noise 0.3 sd"](px, rng) - px
    breast_sd = px[px > np.percentile(px, 30)].std()
    assert abs(added.std() / breast_sd - 0.3) < 1e-6
    assert np.corrcoef(added[:, 1:].ravel(), added[:, :-1].ravel())[0, 1] > 0.8
    strands = robustness.ALTERATIONS["strands"](px, rng) - px  # brighter, and only inside the bright "breast"
    assert strands.min() >= 0 and strands.max() > 0 and not strands[px < px.mean() - 500].any()
    report = tmp_path / "r.json"
    assert robustness.main(["--data", str(phantom_dir), "--model", str(ROOT / "models" / "classifier.ts"),
                            "--threads", "1", "--json", str(report)]) == 0
    res = json.loads(report.read_text())
    assert res["n"] == 8 and set(res["table"]) == set(robustness.ALTERATIONS)
    assert all(0.0 <= row["auc"] <= 1.0 for row in res["table"].values())
    assert res["table"]["as stored"]["mean_abs_change"] == 0 and res["table"]["as stored"]["calls_changed"] == 0
    assert all(0 <= row["calls_changed"] <= 8 for row in res["table"].values())
    assert robustness.main(["--data", str(phantom_dir), "--model", str(ROOT / "models" / "classifier.ts"),
                            "--threads", "1", "--only", "as-stored,burned-in-label", "--json", str(report)]) == 0
    assert list(json.loads(report.read_text())["table"]) == ["as stored", "burned-in label"]
    with pytest.raises(SystemExit):
        robustness.main(["--data", str(phantom_dir), "--only", "sepia"])


def test_classifiers_bench_pairs_two_models_on_the_same_images(phantom_dir, tmp_path, capsys):
    """cfia.bench.classifiers: the paired difference is exactly 0 for one model against
    itself, and its interval excludes 0 when one model ranks every pair right and the
    other ranks at random."""
    import numpy as np

    from cfia.bench import classifiers

    rng = np.random.default_rng(0)
    y = np.array([1] * 60 + [0] * 60)
    perfect, noise = y + 0.1 * rng.random(120), rng.random(120)
    d = classifiers.paired_auc_difference(noise, perfect, y)
    assert d["difference"] > 0.3 and d["ci95"][0] > 0.2
    assert classifiers.paired_auc_difference(noise, noise, y) == {"difference": 0.0, "ci95": [0.0, 0.0]}
    shipped = str(ROOT / "models" / "classifier.ts")
    report = tmp_path / "c.json"
    assert classifiers.main(["--models", shipped, shipped, "--data", str(phantom_dir), "--json", str(report)]) == 0
    row = json.loads(report.read_text())["rows"][0]
    assert row["n"] == 8 and row["a"] == row["b"] and row["b_minus_a"]["difference"] == 0.0
    assert str(phantom_dir) in capsys.readouterr().out
    assert classifiers.main(["--models", shipped, shipped, "--data", str(tmp_path / "none")]) == 2


def test_train_average_mixes_weights_and_rejects_what_cannot_be_mixed(tmp_path, capsys):
    """cfia train average: every floating-point tensor is the weighted mean, BatchNorm's
    batch counts are the first model's, the TorchScript file computes what the state dict
    does, the card names each source; bad weights or another network's weights exit 2."""
    from cfia.cli import main

    a, b = small_net(0), small_net(1)
    b.stem.adn.N.num_batches_tracked.fill_(7)
    torch.save(a.state_dict(), tmp_path / "a.pt")
    torch.save(b.state_dict(), tmp_path / "b.pt")
    common = ["--input-size", "96x64", "--network-args", json.dumps(ARGS)]
    out = tmp_path / "mix"
    assert main(["train", "average", "--models", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"),
                 "--weights", "0.3", "0.7", "--out", str(out), *common]) == 0
    mixed, sa, sb = _weights(out), a.state_dict(), b.state_dict()
    floats = [k for k in sa if sa[k].is_floating_point()]
    assert floats and all(torch.allclose(mixed[k], 0.3 * sa[k] + 0.7 * sb[k], atol=1e-6) for k in floats)
    assert not torch.allclose(sa["stem.conv.weight"], sb["stem.conv.weight"])  # the mean is not either model
    assert int(mixed["stem.adn.N.num_batches_tracked"]) == int(sa["stem.adn.N.num_batches_tracked"])
    x = torch.rand(2, 1, *SIZE)
    net = small_net(5)
    net.load_state_dict(mixed)
    torch.testing.assert_close(torch.jit.load(str(out / "classifier.ts"))(x), net(x))
    card = json.loads((out / "classifier.json").read_text())
    assert [s["weight"] for s in card["averaged_from"]] == [0.3, 0.7]
    assert card["averaged_from"][0]["sha256"] == hashlib.sha256((tmp_path / "a.pt").read_bytes()).hexdigest()
    assert card["input_size"] == [96, 64] and card["command"].startswith("cfia train average")
    # A training checkpoint's weights mix as its state dict does.
    torch.save({"model": b.state_dict(), "epoch": 3}, tmp_path / "b.ckpt")
    assert main(["train", "average", "--models", str(tmp_path / "a.pt"), str(tmp_path / "b.ckpt"),
                 "--weights", "0.3", "0.7", "--out", str(tmp_path / "ck"), *common]) == 0
    assert all(torch.equal(_weights(tmp_path / "ck")[k], mixed[k]) for k in mixed)
    # Equal weights when none are given.
    assert main(["train", "average", "--models", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"),
                 "--out", str(tmp_path / "eq"), *common]) == 0
    assert torch.allclose(_weights(tmp_path / "eq")["stem.conv.weight"], (sa["stem.conv.weight"] + sb["stem.conv.weight"]) / 2)
    # A model already in --out is replaced only with --force.
    again = ["train", "average", "--models", str(tmp_path / "b.pt"), str(tmp_path / "a.pt"), "--out", str(out), *common]
    capsys.readouterr()
    assert main(again) == 2 and "--force" in capsys.readouterr().err
    assert all(torch.equal(_weights(out)[k], mixed[k]) for k in mixed)
    assert main([*again, "--force"]) == 0 and not torch.equal(_weights(out)["stem.conv.weight"], mixed["stem.conv.weight"])
    # What cannot be mixed: exit 2 with the reason, and nothing written.
    torch.save(small_net(0, channels=[4, 8, 16]).state_dict(), tmp_path / "other.pt")
    capsys.readouterr()
    for extra, says in ((["--weights", "0.5", "0.6"], "sum to 1"), (["--weights", "1.5", "-0.5"], ">= 0"),
                        (["--weights", "1"], "2 models")):
        assert main(["train", "average", "--models", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"),
                     "--out", str(tmp_path / "bad"), *extra, *common]) == 2
        assert says in capsys.readouterr().err
    assert main(["train", "average", "--models", str(tmp_path / "a.pt"), str(tmp_path / "other.pt"),
                 "--out", str(tmp_path / "bad"), *common]) == 2
    err = capsys.readouterr().err
    assert "--models" in err and "other.pt" in err and "do not fit" in err
    assert main(["train", "average", "--models", str(tmp_path / "a.pt"), "--out", str(tmp_path / "bad"), *common]) == 2
    assert not (tmp_path / "bad").exists()


def test_report_by_kind_ranks_each_kind_against_all_negatives():
    probs = [0.9, 0.8, 0.2, 0.6, 0.1, 0.3, 0.7]
    labels = [1, 1, 1, 1, 0, 0, 0]
    kinds = ["mass", "mass", "calc", "calc", "", "", ""]
    res = report_by_kind(probs, labels, kinds)
    assert set(res) == {"mass", "calc"}
    assert res["mass"] == {"n": 2, "auc_vs_negatives": 1.0, "sensitivity": 1.0}
    # calc: 0.2 beats 0.1 only, 0.6 beats 0.1 and 0.3: 3 of 6 pairs.
    assert res["calc"] == {"n": 2, "auc_vs_negatives": 0.5, "sensitivity": 0.5}
    assert report_by_kind(probs, labels, [""] * 7) == {}


def test_auc_interval_brackets_the_auc_and_narrows_with_more_images():
    rng = np.random.default_rng(0)
    assert auc_interval([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == [1.0, 1.0]

    def draw(n):
        y = np.arange(n) % 2
        return rng.normal(1.5 * y, 1.0), y  # true AUC = Phi(1.5 / sqrt(2)) = 0.856

    widths = []
    for n in (100, 1600):
        s, y = draw(n)
        lo, hi = auc_interval(s, y)
        assert lo < roc_auc(s, y) < hi and lo < 0.856 < hi
        widths.append(hi - lo)
    assert widths[1] < 0.5 * widths[0]  # a 16x larger set: about a quarter as wide
    s, y = draw(400)
    assert auc_interval(s, y, seed=3) == auc_interval(s, y, seed=3)


def test_report_by_contrast_bins_positives_and_skips_unknown_contrast():
    probs = [0.9, 0.4, 0.7, 0.95, 0.5, 0.1, 0.3, 0.6]
    labels = [1, 1, 1, 1, 1, 0, 0, 0]
    contrasts = [0.9, 1.1, 2.2, 6.0, None, None, None, None]
    res = report_by_contrast(probs, labels, contrasts)
    assert set(res) == {"0.8-1.2", "2-2.5", "2.5-6"}  # empty bins left out; 6.0 in the closed last bin
    # 0.9 beats all three negatives, 0.4 beats 0.1 and 0.3: 5 of 6 pairs.
    assert res["0.8-1.2"] == {"n": 2, "auc_vs_negatives": round(5 / 6, 4), "sensitivity": 0.5}
    assert res["2-2.5"]["n"] == 1 and res["2.5-6"]["auc_vs_negatives"] == 1.0
    assert report_by_contrast(probs, labels, [None] * 8) == {}


def test_observer_bench_responds_at_the_lesion_and_only_inside_the_breast():
    """cfia.bench.observer's FFT correlation: its largest response in an image with a
    planted disc is the direct response on the disc, and it keeps exactly the places where
    the template's footprint lies inside the breast (brute force on a small image)."""
    from cfia.bench import observer

    rng = np.random.default_rng(0)
    shape = (48, 40)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    lesion = (yy - 20) ** 2 + (xx - 15) ** 2 <= 9
    kernel, footprint, corner = observer.ring_kernel(lesion)
    pad = max(kernel.shape)
    fft = lambda a: np.fft.rfft2(a[::-1, ::-1].astype(np.float64), (shape[0] + pad, shape[1] + pad))  # noqa: E731
    breast = xx < 30
    positive = rng.normal(0, 1, shape) + 5.0 * lesion
    got = observer.Correlator(positive, breast, pad).responses(fft(kernel), fft(footprint), kernel.shape, footprint.sum())
    direct = observer.lesion_response(positive, kernel, corner)
    assert got.max() == pytest.approx(direct, abs=1e-9) and direct > 4.0
    kh, kw = kernel.shape
    inside = [breast[r:r + kh, c:c + kw][footprint].all()
              for r in range(shape[0] - kh + 1) for c in range(shape[1] - kw + 1)]
    assert got.size == sum(inside)
    normals = np.concatenate([observer.Correlator(rng.normal(0, 1, shape), breast, pad)
                              .responses(fft(kernel), fft(footprint), kernel.shape, footprint.sum()) for _ in range(3)])
    assert observer.auc_against(direct, normals) == 1.0
    assert observer.auc_against(float(np.median(normals)), normals) == pytest.approx(0.5, abs=0.01)


def test_observer_leaves_out_a_normal_breast_too_small_for_the_template():
    """A large template (an architectural distortion's mask) may fit nowhere inside a small
    normal breast: that normal has nothing to scan and is left out, not a crash."""
    from cfia.bench import observer

    rng = np.random.default_rng(2)
    shape = (48, 40)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    lesion = (yy - 20) ** 2 + (xx - 15) ** 2 <= 25
    kernel, footprint, corner = observer.ring_kernel(lesion)
    pad = max(kernel.shape)
    image = rng.normal(0, 1, shape) + 5.0 * lesion
    big, small = xx < 35, (xx < 4) & (yy < 4)
    normals = [observer.Correlator(rng.normal(0, 1, shape), b, pad) for b in (big, small)]
    got = observer.observe_one(image, big, kernel, footprint, corner, pad, normals)
    alone = observer.observe_one(image, big, kernel, footprint, corner, pad, normals[:1])
    assert got == alone and got["scan"] == 1.0


def test_observer_inverse_spectrum_filter_and_mask_template():
    """--prewhiten: 1/f^3 texture filtered by 1 / P(f), P measured on such texture, has power
    P / P^2 = 1 / P, rising as f^3 (the prewhitening matched filter's K^-1 g; its square root
    would whiten); the mask template sits exactly on the ring kernel's lesion crop."""
    from cfia.bench import observer
    from cfia.training.mammo_io import Mammo
    from phantom.texture import power_law_noise, spectral_slope

    rng = np.random.default_rng(1)
    breast = np.ones((256, 256), bool)
    normals = [Mammo(power_law_noise((256, 256), 3.0, rng), breast, None, "n") for _ in range(3)]
    spectrum = observer.texture_spectrum(normals, size=128, per_image=2)
    assert spectral_slope(normals[0].image[64:192, 64:192]) > 2.5
    filtered = observer.inverse_spectrum_filter(normals[1].image, breast, spectrum)
    assert spectral_slope(filtered[64:192, 64:192]) == pytest.approx(-3.0, abs=0.5)

    lesion = np.zeros((40, 40), bool)
    lesion[10:16, 20:25] = True
    ring, _, corner = observer.ring_kernel(lesion)
    template = observer.mask_template(lesion, ring, corner)
    assert template.shape == ring.shape
    assert template[ring > 0].min() > template[ring < 0].max()  # heaviest on the lesion, lowest on the ring


def test_a_mask_marks_the_lesion_with_any_nonzero_value(tmp_path):
    """README: any nonzero value; 0/255 saved as int8 wraps to -1."""
    from cfia.manifest import read_mask

    mask = np.zeros((8, 8), np.int8)
    mask[2:4, 2:4] = -1
    np.save(tmp_path / "m.npy", mask)
    assert read_mask(tmp_path / "m.npy", (8, 8)).sum() == 4


def test_a_model_file_name_longer_than_a_dicom_long_string_is_cut_in_the_objects(tmp_path):
    """The file name is the objects' model name, a 64-character LO: a longer one made every
    image's objects fail to build after its explanation, and the job was dead-lettered
    with a reason that blamed the image's header."""
    from cfia.config import from_dict
    from cfia.pipeline import Pipeline
    from node_helpers import mammogram

    path = tmp_path / ("site-densenet-finetuned-on-our-2026-screening-cohort-epoch-37-" + "x" * 20 + ".ts")
    torch.jit.trace(small_net(), torch.zeros(1, 1, *SIZE)).save(str(path))
    pipeline = Pipeline(from_dict({"models": {"inpainter": {"kind": "telea"},
                                              "classifier": {"kind": "torchscript", "path": str(path),
                                                             "input_size": list(SIZE)}},
                                   "explainer": {"method": "occlusion", "occlusion_size": 16}}))
    objects = pipeline.process(mammogram(1))
    names = {ds.ManufacturerModelName for ds in objects.values() if "ManufacturerModelName" in ds}
    assert names == {path.name[:61] + "..."}


class _SoftmaxPair(nn.Module):
    """Two softmax probabilities whose log-odds is k * (mean - 0.5)."""

    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x):
        odds = self.k * (x.mean(dim=(1, 2, 3))[:, None] - 0.5)
        return torch.softmax(torch.cat([-odds / 2, odds / 2], dim=1), dim=1)


def test_a_sure_softmax_probability_model_keeps_its_score_and_gradient(tmp_path):
    """output: probabilities over two classes: the score is log p1 - log p0, the clamped
    log-odds it was where p is not saturated; where p1 rounds to 1 (log-odds 20) it is still
    20 and still has a gradient (a clamp below 1 gave 13.8 and none: an empty map)."""
    x = torch.full((2, 1, *SIZE), 0.525) + 0.01 * torch.rand(2, 1, *SIZE)
    odds = x.mean(dim=(1, 2, 3)) - 0.5
    for k in (4.0, 800.0):
        path = tmp_path / f"softmax{int(k)}.ts"
        torch.jit.trace(_SoftmaxPair(k), torch.zeros(1, 1, *SIZE)).save(str(path))
        clf = load_classifier("torchscript", path, input_size=SIZE, output="probabilities")
        xg = x.clone().requires_grad_(True)
        score = clf.score(xg)
        torch.testing.assert_close(score, k * odds, rtol=1e-4, atol=1e-4)
        if k == 4.0:  # not saturated: what the clamped form gave
            p = clf.probability(x)
            torch.testing.assert_close(score.detach(), torch.log(p) - torch.log1p(-p), rtol=1e-5, atol=1e-5)
        else:
            assert bool((clf.probability(x) == 1.0).all())  # p1 rounds to 1 in float32
        grad, = torch.autograd.grad(score.sum(), xg)
        torch.testing.assert_close(grad, torch.full_like(x, k / x[0].numel()), rtol=1e-3, atol=0)


class _Rounded(nn.Module):
    def forward(self, x):
        return torch.round(8 * x.mean(dim=(1, 2, 3))[:, None] - 4)


class _Sign(nn.Module):
    def forward(self, x):
        return torch.sign(x.mean(dim=(1, 2, 3))[:, None] - 0.5) * 3


class _Gated(nn.Module):
    """No gradient on a blank image (its ReLU is below threshold there), one on tissue."""

    def forward(self, x):
        return torch.relu(x - 0.1).mean(dim=(1, 2, 3))[:, None] * 8 - 2


class _Dark(nn.Module):
    """A gradient on a blank image, none on mid-grey tissue."""

    def forward(self, x):
        return torch.relu(0.1 - x).mean(dim=(1, 2, 3))[:, None] * 8 - 2


def test_a_model_whose_gradient_is_zero_everywhere_is_marked_and_warned_of_at_load(tmp_path, caplog):
    """A rounded or sign score differentiates to exactly zero: it loaded silently, and cf or blur
    then reported the whole breast. It still loads (scoring and occlusion need no gradient), with
    a warning naming it and `no_gradient` set for a caller that explains by the gradient. A model
    whose gradient is dead on one of the two test images (blank, noisy mid-grey) but not the
    other is neither."""
    for name, model in (("rounded", _Rounded()), ("sign", _Sign()), ("gated", _Gated()), ("dark", _Dark())):
        torch.jit.trace(model, torch.rand(1, 1, *SIZE)).save(str(tmp_path / f"{name}.ts"))
    for name, none in (("rounded", True), ("sign", True), ("gated", False), ("dark", False)):
        caplog.clear()
        with caplog.at_level("WARNING", logger="cfia.explain"):
            clf = load_classifier("torchscript", tmp_path / f"{name}.ts", input_size=SIZE)
        warned = [r.getMessage() for r in caplog.records if "has no gradient" in r.getMessage()]
        assert [f"{name}.ts" in w for w in warned] == ([True] if none else []), name
        assert clf.no_gradient is none


class _Dropped(nn.Module):
    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(x).mean(dim=(1, 2, 3))[:, None] * 4 - 2


def test_a_model_random_at_inference_is_refused_at_load(tmp_path):
    """Dropout traced in training mode stays on in the trace (eval() cannot reach it), so
    every forward differs; on the all-zero dummy input it did not show. Traced in eval mode,
    or scripted (eval() reaches a script), the same network loads."""
    x = torch.rand(1, 1, *SIZE)
    torch.jit.trace(_Dropped().train(), x, check_trace=False).save(str(tmp_path / "train.ts"))
    torch.jit.trace(_Dropped().eval(), x).save(str(tmp_path / "eval.ts"))
    torch.jit.script(_Dropped().train()).save(str(tmp_path / "script.ts"))
    with pytest.raises(ValueError, match=r"train\.ts: two forwards of the same image differ.*"
                                         r"model\.eval\(\) before torch\.jit\.trace"):
        load_classifier("torchscript", tmp_path / "train.ts", input_size=SIZE)
    for name in ("eval", "script"):
        clf = load_classifier("torchscript", tmp_path / f"{name}.ts", input_size=SIZE)
        assert torch.equal(clf(x), clf(x))


def test_a_model_whose_output_depends_on_its_batch_is_refused_at_load(tmp_path):
    """BatchNorm traced in training mode normalises by the batch's statistics: an image's
    score changes with the images beside it, and at batch 1 it is its own statistics. Traced
    in eval mode the same network loads."""
    from monai.networks.nets import ResNet

    net = ResNet(block="basic", layers=[1, 1, 1, 1], block_inplanes=[4, 8, 8, 8], spatial_dims=2,
                 n_input_channels=1, num_classes=2)
    x = torch.rand(2, 1, *SIZE)
    torch.jit.trace(net.train(), x, check_trace=False).save(str(tmp_path / "train.ts"))
    torch.jit.trace(net.eval(), x).save(str(tmp_path / "eval.ts"))
    with pytest.raises(ValueError, match=r"train\.ts: an image's output changes with the other images in its "
                                         r"batch.*BatchNorm left in training mode"):
        load_classifier("torchscript", tmp_path / "train.ts", input_size=SIZE)
    load_classifier("torchscript", tmp_path / "eval.ts", input_size=SIZE)


class _Squeezed(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = small_net()

    def forward(self, x):
        return self.net(x).squeeze()


def test_a_model_whose_output_shape_changes_with_the_batch_is_refused_at_load(tmp_path):
    """A trailing squeeze() gives (2, 2) at the dummy forward's batch 2 but (2,) at the
    explainers' batch 1: refused at load naming the file and the shapes, not an IndexError
    on the first image."""
    torch.jit.trace(_Squeezed().eval(), torch.rand(2, 1, *SIZE)).save(str(tmp_path / "traced.ts"))
    torch.jit.script(_Squeezed().eval()).save(str(tmp_path / "scripted.ts"))
    for name in ("traced", "scripted"):
        with pytest.raises(ValueError, match=rf"{name}\.ts: expected output shape \(1, 2\) .*"
                                             r"got output shape \(2,\)"):
            load_classifier("torchscript", tmp_path / f"{name}.ts", input_size=SIZE)
