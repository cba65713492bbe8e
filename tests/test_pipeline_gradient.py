"""A classifier whose score is flat at an image (a rounded output, a saturated probability):
cf and blur cannot move their mask there, and their map had been the whole breast."""
from __future__ import annotations

import pytest
import torch

from cfia.config import from_dict
from cfia.dicom_io import from_dataset
from cfia.pipeline import Pipeline
from dicom_out import UnsupportedSource
from explain.classifier import Classifier
from explain.counterfactual import NoGradient
from phantom.dicom import to_dataset
from phantom.generate import PhantomOptions, make_one

SIZE = (64, 48)


class Gated(torch.nn.Module):
    """Logit `base`, plus a slope only where the input's mean is above 0.45: flat on a
    mammogram (mostly air and padding), not on the loader's mid-grey probe."""

    def __init__(self, base: float):
        super().__init__()
        self.base = base

    def forward(self, x):
        return (self.base + 40.0 * torch.relu(x.mean(dim=(2, 3)) - 0.45)).reshape(-1, 1)


class Rounded(torch.nn.Module):
    def forward(self, x):
        return torch.round(x.mean(dim=(2, 3)) * 4.0).reshape(-1, 1)


def _pipeline(tmp_path, net, method="cf") -> Pipeline:
    path = tmp_path / "net.ts"
    torch.jit.script(net).save(str(path))
    return Pipeline(from_dict({
        "models": {"classifier": {"kind": "torchscript", "path": str(path), "input_size": list(SIZE)},
                   "inpainter": {"kind": "telea"}},
        "explainer": {"method": method, "max_passes": 4}}))


def _mammogram():
    ds = to_dataset(make_one(3, 0, PhantomOptions(size=(256, 208), positive_fraction=0.0)), "t:g", 0)
    return ds, from_dataset(ds)


def test_a_negative_call_with_a_flat_score_has_an_empty_map(tmp_path):
    result = _pipeline(tmp_path, Gated(-20.0)).explain(_mammogram()[1])
    assert result.score < 0.5 and result.saliency.max() == 0 and not result.region.any()


def test_a_positive_call_with_a_flat_score_is_a_permanent_failure_that_says_why(tmp_path):
    with pytest.raises(UnsupportedSource, match="no gradient at this image"):
        _pipeline(tmp_path, Gated(20.0)).process(_mammogram()[0])


@pytest.mark.parametrize("method", ["cf", "blur", "ig"])
def test_a_model_without_any_gradient_loads_and_each_gradient_method_says_why_it_cannot(tmp_path, method):
    """Refused at load before, also a working model dead on both load-time probes (a ReLU above
    0.8 finds bright tissue in every mammogram); each image now says it, occlusion works."""
    pipeline = _pipeline(tmp_path, Rounded())
    assert pipeline.classifier.no_gradient  # warned of at load
    src = _mammogram()[1]
    with pytest.raises(NoGradient):  # a positive call: round(mean * 4) is 1
        pipeline.explain(src, method)
    assert pipeline.explain(src, "occlusion").saliency.shape == (256, 208)


@pytest.mark.parametrize("output, class_index", [("logits", 0), ("logits", 1), ("logits", 2), ("probabilities", 1)])
def test_the_log_odds_rise_and_fall_with_the_probability(output, class_index):
    """presented() judges a sure model's region by them: a 2-class network's raw logit can fall
    while its probability rises, and a region that raised the score was shown as a finding."""
    clf = Classifier(torch.nn.Identity(), class_index=class_index, output=output)
    logits = torch.tensor([[2.0, 1.0, -1.0], [1.9, 0.5, -1.0], [0.3, 2.5, 0.1], [-3.0, -3.5, 4.0]])
    out = torch.softmax(logits, dim=1) if output == "probabilities" else logits
    p = clf.probability_of(out)
    assert torch.allclose(clf.log_odds_of(out), torch.log(p) - torch.log1p(-p), atol=1e-4)


def test_evaluate_names_the_image_whose_score_has_no_gradient_in_one_line(tmp_path, capsys):
    """It stopped with a traceback, and the report kept no case."""
    import yaml

    from cfia.cli import main

    data = tmp_path / "data"
    assert main(["phantom", "--out", str(data), "--count", "1", "--seed", "3", "--size", "256x208",
                 "--positive-fraction", "1", "--quiet"]) == 0
    path = tmp_path / "net.ts"
    torch.jit.script(Gated(20.0)).save(str(path))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"models": {"classifier": {"kind": "torchscript", "path": str(path),
                                                                "input_size": list(SIZE)},
                                                 "inpainter": {"kind": "telea"}},
                                      "explainer": {"max_passes": 4}}))
    assert main(["evaluate", "--data", str(data), "--methods", "cf", "--out", str(tmp_path / "r.json"),
                 "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "img00000.dcm: cf: the classifier's score has no gradient" in err and "Traceback" not in err


def test_occlusion_that_moves_a_saturated_score_by_rounding_only_is_an_empty_map():
    """The drops, 2e-6 on a log-odds of 13.8, were scaled to a full-strength map."""
    from explain.baselines import OcclusionExplainer

    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    out = OcclusionExplainer(lambda v: 13.8 + 1e-6 * v.mean(dim=(1, 2, 3)), mask_size=8)(x)
    assert out.mask.max() == 0
    moved = OcclusionExplainer(lambda v: 13.8 + 10.0 * v.mean(dim=(1, 2, 3)), mask_size=8)(x)
    assert moved.mask.max() == 1


def test_a_single_probability_short_of_1_keeps_its_gradient():
    """A clamp at 1 - 1e-6 cut the gradient of p = 0.9999993, which the model still had: the
    image was refused as having none."""
    clf = Classifier(torch.nn.Identity(), class_index=1, output="probabilities")
    out = torch.sigmoid(torch.tensor([[14.15]], requires_grad=True))
    assert out.item() < 1.0
    clf.log_odds_of(out).sum().backward()
    logit = out.grad_fn.next_functions[0][0].variable
    assert logit.grad.item() > 0.5  # d log-odds / d logit is 1 where nothing is clamped


class Against(torch.nn.Module):
    """A bright image speaks against the lesion class: its Grad-CAM (ReLU of negative weights)
    is empty, though the score has a gradient."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        self.act = torch.nn.ReLU()
        with torch.no_grad():
            self.conv.weight.fill_(0.1)
            self.conv.bias.zero_()

    def forward(self, x):
        return -self.act(self.conv(x)).mean(dim=(1, 2, 3))[:, None]


def test_an_empty_grad_cam_counts_the_pass_that_checked_its_gradient():
    """It reported 1 pass and spent 2."""
    from explain.baselines import GradCAMExplainer

    clf = Classifier(Against(), class_index=1, input_size=(32, 32))
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    out = GradCAMExplainer(clf.model, "act", clf.score, clf.probability)(x)
    assert out.mask.max() == 0 and out.passes == 2
