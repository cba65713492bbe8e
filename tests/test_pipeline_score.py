"""What the optimiser drives down (`explainer.score`), on the shipped two-logit classifier,
whose logits are not each other's negatives: `cross_entropy` is -log(1 - p) of the explained
class, `probability` is p, `logit` is the class's raw logit."""
from __future__ import annotations

import dataclasses

import torch

from cfia import config as config_mod
from cfia.install import SHIPPED_CONFIG
from cfia.pipeline import Pipeline


def _pipeline(score: str) -> Pipeline:
    cfg = config_mod.load(SHIPPED_CONFIG)
    return Pipeline(dataclasses.replace(cfg, explainer=dataclasses.replace(cfg.explainer, score=score)))


def _images() -> torch.Tensor:
    torch.manual_seed(0)
    size = config_mod.load(SHIPPED_CONFIG).models.classifier.input_size
    return torch.rand(3, 1, *size)


def test_cross_entropy_is_minus_log_one_minus_p_of_the_explained_class():
    pipeline, x = _pipeline("cross_entropy"), _images()
    with torch.no_grad():
        out = pipeline.classifier(x)
        p = torch.softmax(out.double(), dim=1)[:, 1]
        assert (out[:, 0] + out[:, 1]).abs().min() > 0.1  # the raw logit is not the log-odds here
        assert torch.allclose(pipeline.score_fn()(x).double(), -torch.log1p(-p), rtol=1e-4, atol=1e-5)


def test_cross_entropy_has_the_gradient_of_minus_log_one_minus_p():
    pipeline, x = _pipeline("cross_entropy"), _images()[:1].requires_grad_(True)
    (grad,) = torch.autograd.grad(pipeline.score_fn()(x).sum(), x)
    y = x.detach().clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(-torch.log1p(-pipeline.classifier.probability(y)).sum(), y)
    assert torch.allclose(grad, expected, rtol=1e-3, atol=1e-6)


def test_probability_and_logit_scores():
    x, probability, logit = _images(), _pipeline("probability"), _pipeline("logit")
    with torch.no_grad():
        out = probability.classifier(x)
        assert torch.allclose(probability.score_fn()(x), torch.softmax(out, dim=1)[:, 1], atol=1e-6)
        assert torch.allclose(logit.score_fn()(x), out[:, 1], atol=1e-6)


def test_the_baselines_explain_the_logit_or_the_log_odds_as_configured():
    """explainer.baseline_score: Grad-CAM, occlusion and IG explain the class's own logit by
    default, the log-odds cf explains with `log_odds`; on the shipped two-logit network the
    two give other maps, each the map of its score."""
    from explain.baselines import GradCAMExplainer, IntegratedGradientsExplainer, OcclusionExplainer

    cfg = config_mod.load(SHIPPED_CONFIG)
    x = _images()[:1]
    maps = {}
    for target in ("logit", "log_odds"):
        e = dataclasses.replace(cfg.explainer, baseline_score=target, occlusion_size=128, ig_steps=4)
        pipeline = Pipeline(dataclasses.replace(cfg, explainer=e))
        clf = pipeline.classifier
        score = clf.log_odds if target == "log_odds" else clf.score
        direct = {"gradcam": GradCAMExplainer(clf.model, e.gradcam_layer, score, pipeline.score_fn()),
                  "occlusion": OcclusionExplainer(score, mask_size=e.occlusion_size, mode=e.occlusion_mode),
                  "ig": IntegratedGradientsExplainer(score, steps=e.ig_steps)}
        for method, explainer in direct.items():
            maps[target, method] = pipeline.explainer(method, e)(x).mask
            assert torch.equal(maps[target, method], explainer(x).mask), (target, method)
    for method in ("gradcam", "occlusion", "ig"):
        assert not torch.equal(maps["logit", method], maps["log_odds", method]), method
