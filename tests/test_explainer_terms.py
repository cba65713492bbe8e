"""The explainer's parts each do what their docstrings say: the reference counterfactual uses every
configured tiling; the region is refilled every refresh_every steps; a refilled region takes a
margin of context and keeps the reference elsewhere; total variation counts both directions;
area terms are shares of the breast; the objective settles only when it changed little over
`patience` steps; halving halves the step every lr_half_life passes (a two-sided step is two),
cosine anneals it to 0 over the steps the budget leaves;
the preservation weight and the map-quality area floor enter the loss; preservation replaces
nothing outside the breast; the gradient start is scaled within the breast; the change map is
blurred by its sigma; score_after uses the reported map's own threshold; the reported score is
report_fn's probability; reseeding needs a pass and a step left in the budget, starts no higher
than reseed_init, lowers nothing already held, lifts no cell without effect back to the floor and
looks only outside what the mask holds."""
from __future__ import annotations

import math

import pytest
import torch

from explain.counterfactual import CounterfactualExplainer, change_map, sorted_area_penalty, total_variation
from explain.perturbation import BlurPerturbation, InpaintPerturbation, tiled_counterfactual
from test_explain import mean_fill


def _explainer(**kw):
    kw.setdefault("score_fn", lambda x: x.mean(dim=(1, 2, 3)))
    return CounterfactualExplainer(perturbation=kw.pop("perturbation", BlurPerturbation()), **kw)


def test_the_reference_uses_every_configured_tiling():
    torch.manual_seed(0)
    x = 0.2 + 0.02 * torch.randn(1, 1, 64, 64)
    x[..., 22:27, 22:27] = 1.0
    pert = InpaintPerturbation(mean_fill, tile=8, tilings=3)
    assert torch.allclose(pert.reference(x), tiled_counterfactual(x, mean_fill, 8, tilings=3))


def test_the_region_is_refilled_every_refresh_every_steps():
    pert = InpaintPerturbation(lambda image, hole: torch.full_like(image, 7.0), refresh_every=10)
    x, current, mask = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8)
    refilled = [step for step in range(31) if bool((pert.refresh(x, mask, current, step) == 7.0).any())]
    assert refilled == [10, 20, 30]


def test_a_refilled_region_takes_a_margin_and_keeps_the_reference_elsewhere():
    pert = InpaintPerturbation(lambda image, hole: torch.full_like(image, 7.0))
    region = torch.zeros(1, 1, 20, 20, dtype=torch.bool)
    region[..., 8:12, 8:12] = True
    out = pert.fill_region(torch.zeros(1, 1, 20, 20), region, torch.zeros(1, 1, 20, 20))
    want = torch.zeros(1, 1, 20, 20)
    want[..., 6:14, 6:14] = 7.0  # the region and 2 pixels around it
    assert torch.equal(out, want)


def test_total_variation_counts_both_directions():
    m = torch.zeros(1, 1, 4, 4)
    m[..., :, 2:] = 1.0  # changes along the columns only
    assert float(total_variation(m)) > 0
    assert float(total_variation(m.transpose(-1, -2))) == pytest.approx(float(total_variation(m)))


def test_area_terms_are_shares_of_the_breast():
    breast = torch.zeros(1, 1, 10, 10)
    breast[..., :, :5] = 1.0
    mask = torch.zeros(1, 1, 10, 10)
    mask[..., :5, :5] = 1.0  # half the breast, a quarter of the image
    assert float(_explainer()._area(mask, breast)) == pytest.approx(0.5)
    assert float(sorted_area_penalty(mask, 0.5, breast)) == pytest.approx(0.0)
    assert float(sorted_area_penalty(mask, 0.25, None)) == pytest.approx(0.0)


def test_the_objective_settles_only_when_it_changed_little_over_patience_steps():
    e = _explainer(patience=2, tolerance=1e-3)
    assert not e._converged([1.0, 0.9, 0.5, 0.5])
    assert e._converged([1.0, 0.5, 0.5, 0.5])


def test_halving_halves_the_step_every_lr_half_life_passes():
    for objective, steps in (("deletion", 10), ("deletion_preservation", 5)):
        e = _explainer(objective=objective, lr_schedule="halving", lr_half_life=10, learning_rate=0.1)
        p = torch.zeros(1, requires_grad=True)
        opt = torch.optim.Adam([p], lr=0.1)
        sched = e._schedule(opt, 100)
        for _ in range(steps):
            opt.step()
            sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(0.05), objective


def test_cosine_anneals_the_step_to_zero_over_the_steps_the_budget_leaves():
    e = _explainer(lr_schedule="cosine", learning_rate=0.1)
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([p], lr=0.1)
    sched = e._schedule(opt, 20)
    rates = []
    for _ in range(20):
        opt.step()
        sched.step()
        rates.append(opt.param_groups[0]["lr"])
    assert rates[9] == pytest.approx(0.05) and rates[-1] == pytest.approx(0.0, abs=1e-12)


def _loss(e, mask, breast=None, x=None):
    x = torch.ones(1, 1, 8, 8) if x is None else x
    return float(e._loss(x, mask, torch.zeros_like(x), breast))


def test_the_preservation_weight_and_the_map_quality_floor_enter_the_loss():
    score = lambda x: 0.2 + 0.5 * x.mean(dim=(1, 2, 3))  # noqa: E731
    mask = torch.full((1, 1, 8, 8), 0.5)
    one, two = (_explainer(score_fn=score, objective="deletion_preservation", preservation_weight=w,
                           tv_weight=0.0) for w in (1.0, 2.0))
    kept = 0.2 + 0.5 * 0.5
    assert _loss(two, mask) - _loss(one, mask) == pytest.approx(-math.log(kept), rel=1e-5)
    mq = _explainer(score_fn=score, objective="map_quality", area_min=0.01, tv_weight=0.0)
    assert _loss(mq, torch.zeros(1, 1, 8, 8)) == pytest.approx(math.log(0.01) - math.log(0.2), rel=1e-5)


def test_preservation_replaces_nothing_outside_the_breast():
    seen = []
    report = lambda x: (seen.append(x.detach().clone()), x.mean(dim=(1, 2, 3)))[1]  # noqa: E731
    breast = torch.zeros(1, 1, 8, 8)
    breast[..., :, :4] = 1.0
    e = _explainer(score_fn=report, objective="preservation")
    _loss(e, torch.zeros(1, 1, 8, 8), breast)
    assert torch.equal(seen[-1][..., :, 4:], torch.ones(1, 1, 8, 4))  # the image, kept as it is
    assert torch.equal(seen[-1][..., :, :4], torch.zeros(1, 1, 8, 4))  # the counterfactual


def test_the_gradient_start_is_scaled_within_the_breast():
    w = torch.ones(1, 1, 8, 8)
    w[..., :, 4:] = 10.0  # deleting outside the breast would lower the score far more
    e = _explainer(score_fn=lambda x: (x * w).sum(dim=(1, 2, 3)), init_mode="gradient", init=0.5, init_floor=0.05)
    breast = torch.zeros(1, 1, 8, 8)
    breast[..., :, :4] = 1.0
    x = torch.ones(1, 1, 8, 8)
    value, _ = e._effect_init(x, torch.zeros_like(x), torch.zeros_like(x), breast, (8, 8))
    assert float(value[..., :, :4].max()) == pytest.approx(0.5)


def test_the_change_map_is_blurred_by_its_sigma():
    x = torch.zeros(1, 1, 9, 9)
    c = x.clone()
    c[..., 4, 4] = 1.0
    m = change_map(x, torch.ones_like(x), c, sigma=1.0)
    # An impulse blurred by a separable Gaussian: one pixel off the peak is exp(-1/2 / sigma^2) of it.
    assert float(m[..., 4, 4]) == 1.0 and float(m[..., 4, 5]) == pytest.approx(math.exp(-0.5), rel=1e-5)
    wider = change_map(x, torch.ones_like(x), c, sigma=2.0)
    assert float(wider[..., 4, 5]) == pytest.approx(math.exp(-0.125), rel=1e-5)


class _Recorder(BlurPerturbation):
    def fill_region(self, x, region, current):
        self.region = region
        return current


def test_score_after_uses_the_reported_maps_own_threshold():
    pert = _Recorder()
    e = _explainer(perturbation=pert, saliency="change")
    reported = torch.full((1, 1, 8, 8), 0.2)
    e._score_after(torch.ones(1, 1, 8, 8), reported, torch.zeros(1, 1, 8, 8))
    assert bool(pert.region.all())  # 0.2 is above the change map's 0.05


def test_the_reported_score_is_report_fns_probability():
    prob = lambda x: torch.sigmoid(10 * (x.mean(dim=(1, 2, 3)) - 0.4))  # noqa: E731
    logit = lambda x: 10 * (x.mean(dim=(1, 2, 3)) - 0.4)  # noqa: E731
    x = torch.full((1, 1, 16, 16), 0.5)
    result = _explainer(score_fn=logit, report_fn=prob, max_passes=2)(x)
    assert result.score == pytest.approx(float(prob(x)[0]))


def _reseeder(**kw):
    w = torch.ones(1, 1, 16, 16)
    w[..., :8, :8] = 5.0  # most evidence top left
    score = lambda x: (x * w).mean(dim=(1, 2, 3))  # noqa: E731
    return _explainer(score_fn=score, report_fn=lambda x: torch.full((x.shape[0],), 0.9), init_mode="gradient",
                      reseed_every=4, mask_scale=1, **kw)


def test_reseeding_needs_a_pass_and_a_step_left():
    e = _reseeder(max_passes=10, objective="deletion_preservation")
    assert e._can_reseed(7) and not e._can_reseed(8)


def test_a_reseed_starts_no_higher_than_reseed_init_and_lowers_nothing_held():
    e = _reseeder(init=0.9, reseed_init=0.3, init_floor=0.01)
    x = torch.ones(1, 1, 16, 16)
    logits = torch.full((1, 1, 16, 16), math.log(0.001 / 0.999))
    logits[..., 12:, 12:] = 3.0  # held (0.95), where deleting adds least
    assert e._reseed(x, logits, torch.zeros_like(x), None) == 1
    mask = torch.sigmoid(logits)
    assert float(mask[..., :12, :12].max()) == pytest.approx(0.3, abs=1e-4)
    assert float(mask[..., 12:, 12:].min()) == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())


def test_a_reseed_lifts_no_cell_without_effect_back_to_the_floor():
    """Cells the optimiser drove below init_floor, where deleting adds nothing, stay there: the
    reseed lifted every cell back to the floor (a haze over the breast at a floor of 0.01)."""
    w = torch.ones(1, 1, 16, 16)
    w[..., 8:, :8] = 0.0  # no evidence here
    e = _explainer(score_fn=lambda x: (x * w).mean(dim=(1, 2, 3)), init_mode="gradient", reseed_every=4,
                   mask_scale=1, report_fn=lambda x: torch.full((x.shape[0],), 0.9), init=0.9, reseed_init=0.5,
                   init_floor=0.01)
    x = torch.ones(1, 1, 16, 16)
    logits = torch.full((1, 1, 16, 16), math.log(0.001 / 0.999))
    assert e._reseed(x, logits, torch.zeros_like(x), None) == 1
    mask = torch.sigmoid(logits)
    assert float(mask[..., 8:, :8].max()) == pytest.approx(0.001, rel=1e-3)
    assert float(mask[..., :8, :].min()) > 0.01  # where deleting adds evidence it is raised


def test_a_reseed_looks_only_outside_what_the_mask_holds():
    e = _reseeder(init=0.9, reseed_init=0.5, init_floor=0.01)
    x = torch.ones(1, 1, 16, 16)
    logits = torch.full((1, 1, 16, 16), -9.0)
    logits[..., :8, :8] = 9.0  # the strongest evidence is held already
    e._reseed(x, logits, torch.zeros_like(x), None)
    # the rest's largest effect is the new start's top: reseed_init
    assert float(torch.sigmoid(logits)[..., 8:, 8:].max()) == pytest.approx(0.5, abs=1e-3)
