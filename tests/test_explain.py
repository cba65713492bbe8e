"""The explainer and its baselines on a planted lesion that a known detector sees."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy import ndimage

from explain import metrics
from explain.baselines import GradCAMExplainer, IntegratedGradientsExplainer, OcclusionExplainer
from explain.classifier import Classifier
from explain.counterfactual import CounterfactualExplainer, change_map
from explain.perturbation import (BlurPerturbation, InpaintPerturbation, apply, blurred, tile_holes,
                                  tiled_counterfactual)
from explain.region import sufficient_region

SIZE = (96, 80)
LESION = (40, 50, 5)  # row, col, radius


class BlobDetector(nn.Module):
    """A centre-surround (difference of Gaussians) filter, max-pooled: sees bright blobs."""

    def __init__(self):
        super().__init__()
        t = torch.arange(-7, 8, dtype=torch.float32)
        g = lambda s: torch.exp(-0.5 * (t / s) ** 2) / (s * (2 * torch.pi) ** 0.5)  # noqa: E731
        kernel = torch.outer(g(2.5), g(2.5)) - torch.outer(g(5.0), g(5.0))
        kernel = kernel - kernel.mean()  # zero response to flat tissue
        self.features = nn.Conv2d(1, 1, 15, padding=7, padding_mode="reflect", bias=False)
        self.features.weight.data[:] = kernel / kernel.abs().sum()
        self.act = nn.ReLU()

    def forward(self, x):
        v = F.adaptive_max_pool2d(self.act(self.features(x)), 1).flatten(1)
        return torch.cat([torch.zeros_like(v), 200.0 * (v - 0.03)], dim=1)


def score_fn(model):
    return lambda x: torch.softmax(model(x), dim=1)[:, 1]


def mean_fill(image, hole):
    """Normalised-convolution fill: the hole gets the Gaussian-weighted mean of its surroundings."""
    keep = 1.0 - hole
    num, den = blurred(image * keep, 6.0), blurred(keep, 6.0).clamp(min=1e-6)
    return keep * image + hole * num / den


@pytest.fixture
def planted():
    rng = np.random.default_rng(0)
    bg = 0.5 + 0.02 * rng.standard_normal(SIZE)
    r, c, rad = LESION
    yy, xx = np.mgrid[: SIZE[0], : SIZE[1]]
    lesion = (yy - r) ** 2 + (xx - c) ** 2 <= rad**2
    img = bg + 0.25 * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * (rad / 1.5) ** 2))
    return torch.tensor(img, dtype=torch.float32)[None, None], lesion


def test_detector_sees_the_planted_lesion(planted):
    x, _ = planted
    model = BlobDetector()
    s = score_fn(model)
    assert s(x)[0] > 0.9
    assert s(torch.full_like(x, 0.5))[0] < 0.1


@pytest.mark.parametrize("objective,blend", [("deletion", "linear"), ("preservation", "linear"),
                                             ("map_quality", "linear"), ("deletion_preservation", "linear"),
                                             ("deletion_preservation", "texture")])
def test_counterfactual_finds_the_planted_lesion(planted, objective, blend):
    x, lesion = planted
    s = score_fn(BlobDetector())
    pert = InpaintPerturbation(mean_fill, tile=16, blend=blend)
    explainer = CounterfactualExplainer(s, pert, objective=objective,
                                        mask_scale=4, max_passes=40, learning_rate=0.2, area_weight=1.0)
    result = explainer(x)
    saliency = result.mask.numpy()
    assert metrics.pointing_game(saliency, lesion, tolerance_px=2)
    assert metrics.energy_inside(saliency, lesion) > 3 * lesion.mean()
    assert result.passes <= 40
    if objective == "deletion_preservation":  # two classifier passes per step
        assert result.passes % 2 == 0
    if objective in ("deletion", "deletion_preservation"):
        assert result.score_after < 0.5 < result.score


def test_change_map_marks_what_the_counterfactual_changed_within_the_mask(planted):
    """A mask wider than the lesion, a counterfactual without it: the change map puts
    more of its energy on the lesion than the mask does, peaks there, is nil outside
    the mask and in [0, 1]; where the counterfactual changes nothing it is the mask."""
    x, lesion = planted
    healthy = mean_fill(x, torch.from_numpy(lesion).float()[None, None])
    mask = torch.zeros_like(x)
    mask[..., 28:62, 38:72] = 0.8
    changed = change_map(x, mask, healthy, sigma=1.0)
    assert changed.max() == 1.0 and changed.min() >= 0
    assert changed[mask == 0].abs().max() == 0
    assert metrics.pointing_game(changed[0, 0].numpy(), lesion, tolerance_px=0)
    assert metrics.energy_inside(changed[0, 0].numpy(), lesion) > 2 * metrics.energy_inside(mask[0, 0].numpy(), lesion)
    assert torch.equal(change_map(x, mask, x.clone()), mask)


def test_a_caller_that_measures_the_deletion_itself_gets_the_same_mask_and_no_score_after(planted):
    x, _ = planted
    make = lambda score_region: CounterfactualExplainer(  # noqa: E731
        score_fn(BlobDetector()), InpaintPerturbation(mean_fill, tile=16), mask_scale=4, max_passes=20,
        learning_rate=0.2, area_weight=1.0, saliency="change", score_region=score_region)
    measured, skipped = make(True)(x), make(False)(x)
    assert torch.equal(measured.mask, skipped.mask) and torch.equal(measured.saliency, skipped.saliency)
    assert 0.0 <= measured.score_after <= 1.0 and np.isnan(skipped.score_after)


@pytest.mark.parametrize("perturbation", [InpaintPerturbation(mean_fill, tile=16), BlurPerturbation(sigma=6.0)])
def test_explainer_reports_the_change_map_beside_the_same_mask(planted, perturbation):
    x, lesion = planted
    make = lambda saliency: CounterfactualExplainer(score_fn(BlobDetector()), perturbation, mask_scale=4,  # noqa: E731
                                                    max_passes=40, learning_rate=0.2, area_weight=1.0,
                                                    saliency=saliency)
    explainers = make("mask"), make("change")
    assert [e.region_threshold for e in explainers] == [0.5, 0.05]  # each map's own default
    plain, changed = (e(x) for e in explainers)
    assert plain.saliency is None and changed.saliency is not None
    assert torch.equal(plain.mask, changed.mask) and plain.passes == changed.passes
    # score_after deletes the reported map's region: the change map's, at its own threshold
    assert changed.score_after != plain.score_after and changed.score_after < 0.5 < changed.score
    saliency = changed.saliency.numpy()
    assert metrics.pointing_game(saliency, lesion, tolerance_px=2)
    assert metrics.energy_inside(saliency, lesion) > metrics.energy_inside(plain.mask.numpy(), lesion)
    with pytest.raises(ValueError, match="saliency"):
        make("difference")


def test_blur_of_an_input_narrower_than_its_kernel_keeps_its_shape_and_mean():
    x = torch.rand(1, 1, 40, 24)  # sigma 10: radius 30 > 24 columns (and > 40 rows at sigma 15)
    for sigma in (10.0, 15.0):
        y = blurred(x, sigma)
        assert y.shape == x.shape and torch.isfinite(y).all()
        assert float(y.std()) < float(x.std()) and abs(float(y.mean() - x.mean())) < 0.05


def test_score_runs_the_network_once_for_a_probability_output():
    calls = []

    class Probabilities(nn.Module):
        def forward(self, v):
            calls.append(1)
            return torch.softmax(BlobDetector()(v), dim=1)
    clf = Classifier(Probabilities(), output="probabilities", input_size=(64, 64))
    clf.score(torch.rand(1, 1, 64, 64))
    assert len(calls) == 1


def test_blur_perturbation_uses_the_same_optimiser(planted):
    x, lesion = planted
    explainer = CounterfactualExplainer(score_fn(BlobDetector()), BlurPerturbation(sigma=6.0), mask_scale=4,
                                        max_passes=60, learning_rate=0.2, area_weight=1.0)
    assert metrics.pointing_game(explainer(x).mask.numpy(), lesion, tolerance_px=2)


def test_explainer_is_deterministic_and_stops_early(planted):
    x, _ = planted
    make = lambda: CounterfactualExplainer(score_fn(BlobDetector()), InpaintPerturbation(mean_fill, tile=16),  # noqa: E731
                                           mask_scale=4, max_passes=100, learning_rate=0.2, tolerance=1e-3)
    a, b = make()(x), make()(x)
    assert torch.equal(a.mask, b.mask)
    assert a.passes == b.passes < 100


def test_decaying_schedules_settle_the_mask_by_the_last_pass(planted):
    """With the step annealed (cosine) or halving, one more pass barely moves the mask,
    and the planted lesion is still found; a constant step keeps moving it."""
    x, lesion = planted

    def run(schedule, passes):
        return CounterfactualExplainer(score_fn(BlobDetector()), InpaintPerturbation(mean_fill, tile=16),
                                       mask_scale=4, max_passes=passes, learning_rate=0.2, area_weight=1.0,
                                       lr_schedule=schedule, lr_half_life=5, tolerance=0.0)(x)

    moved = {}
    for schedule in ("constant", "cosine", "halving"):
        full, short = run(schedule, 30), run(schedule, 29)
        assert full.passes == 30
        assert metrics.pointing_game(full.mask.numpy(), lesion, tolerance_px=2), schedule
        moved[schedule] = (full.mask - short.mask).abs().max().item()
    assert moved["cosine"] < moved["constant"] and moved["halving"] < moved["constant"], moved


def test_breast_mask_confines_the_saliency(planted):
    x, _ = planted
    breast = torch.zeros_like(x)
    breast[..., :, :40] = 1.0
    result = CounterfactualExplainer(score_fn(BlobDetector()), BlurPerturbation(6.0), mask_scale=4,
                                     max_passes=10)(x, breast)
    assert result.mask[:, 40:].abs().max() == 0


def test_init_power_keeps_weak_effects_near_the_floor(planted):
    """The gradient initialisation alone (one pass, no steps): a higher power leaves the
    peak on the lesion and takes mass away from the weak effects elsewhere."""
    x, lesion = planted

    def initial(power):
        return CounterfactualExplainer(score_fn(BlobDetector()), InpaintPerturbation(mean_fill, tile=16),
                                       mask_scale=4, max_passes=1, init_mode="gradient", init=0.9,
                                       init_floor=0.001, init_power=power)(x)

    linear, squared = initial(1.0), initial(2.0)
    assert linear.passes == squared.passes == 1
    for r in (linear, squared):
        assert metrics.pointing_game(r.mask.numpy(), lesion, tolerance_px=2)
    assert squared.mask.max() == pytest.approx(linear.mask.max(), abs=0.01)  # bicubic overshoot differs
    # Mass above the floor outside the lesion: the weak effects.
    outside = {p: float((r.mask.numpy()[~lesion] - 0.001).clip(min=0).sum()) for p, r in ((1, linear), (2, squared))}
    assert outside[2] < 0.5 * outside[1], outside
    with pytest.raises(ValueError, match="init_power 0"):
        CounterfactualExplainer(lambda v: v, BlurPerturbation(), init_power=0)


def test_area_target_sets_the_area_of_a_gradient_initialised_mask(planted):
    """area_mode target with the gradient start: the start at init_floor left every target the
    same small mask (its cells could not rise within the budget); now the area follows the target."""
    x, _ = planted
    breast = torch.zeros_like(x)
    breast[..., :, :64] = 1.0

    def area(target):
        mask = CounterfactualExplainer(score_fn(BlobDetector()), InpaintPerturbation(mean_fill, tile=16),
                                       mask_scale=4, max_passes=10, learning_rate=0.2, area_weight=1.0,
                                       area_mode="target", target_area=target, init_mode="gradient", init=0.9,
                                       init_floor=0.001, init_power=2.0)(x, breast).mask
        return float(mask.sum() / breast.sum())

    small, large = area(0.05), area(0.4)
    assert small < 0.1 and large > 0.3, (small, large)


def test_passes_count_the_check_of_a_start_whose_effect_is_nil(planted):
    """A counterfactual equal to the image has no effect anywhere; the start then checks the
    score's own gradient, a pass it did not report."""
    x, _ = planted
    blob = score_fn(BlobDetector())
    spent = []

    def counted(v):
        out = blob(v)
        if out.requires_grad:  # a pass the optimiser differentiates: forward and backward
            spent.append(v.shape[0])
        return out

    out = CounterfactualExplainer(counted, InpaintPerturbation(lambda image, hole: image, tile=16), mask_scale=4,
                                  max_passes=6, init_mode="gradient", init=0.9, init_floor=0.001,
                                  score_region=False)(x)
    assert out.passes == sum(spent)


def test_preservation_target_stops_rewarding_a_region_that_keeps_the_evidence(planted):
    """Two-sided objective: once the kept region scores above preservation_target, its
    term is zero (the loss is the deletion loss); below it, -log(kept / target)."""
    x, lesion = planted
    s = score_fn(BlobDetector())
    pert = InpaintPerturbation(mean_fill, tile=16)
    c = pert.reference(x)
    covering = torch.tensor(lesion, dtype=torch.float32)[None, None]
    kept = float(s(apply(x, 1.0 - covering, c))[0])
    assert 0.5 < kept < 1.0  # the lesion alone keeps the call, not at probability 1

    def loss(objective, **kw):
        return float(CounterfactualExplainer(s, pert, objective=objective, **kw)._loss(x, covering, c, None))

    deletion = loss("deletion")
    assert loss("deletion_preservation", preservation_target=kept * 0.99) == pytest.approx(deletion, abs=1e-6)
    assert loss("deletion_preservation") == pytest.approx(deletion - np.log(kept), abs=1e-5)
    above = (kept + 1.0) / 2
    assert loss("deletion_preservation", preservation_target=above) == pytest.approx(
        deletion - np.log(kept / above), abs=1e-5)
    with pytest.raises(ValueError, match="preservation_target 0"):
        CounterfactualExplainer(s, pert, preservation_target=0.0)


def test_texture_blend_keeps_the_texture_energy_and_the_ends():
    gen = torch.Generator().manual_seed(0)
    x, c = (0.5 + 0.05 * torch.randn(1, 1, 128, 128, generator=gen) for _ in range(2))
    pert = InpaintPerturbation(mean_fill, blend="texture", blend_sigma=2.0)
    fine = lambda v: (v - blurred(v, 2.0))[..., 8:-8, 8:-8].std()  # noqa: E731
    half = torch.full_like(x, 0.5)
    # The plain blend of independent textures is smoother (0.71 of their s.d. at M = 0.5).
    assert float(fine(apply(x, half, c)) / fine(x)) == pytest.approx(0.5 ** 0.5, abs=0.03)
    assert float(fine(pert.apply(x, half, c)) / fine(x)) == pytest.approx(1.0, abs=0.03)
    assert torch.allclose(pert.apply(x, torch.zeros_like(x), c), x, atol=1e-6)
    assert torch.allclose(pert.apply(x, torch.ones_like(x), c), c, atol=1e-6)
    with pytest.raises(ValueError, match="blend 'soft'"):
        InpaintPerturbation(mean_fill, blend="soft")


@pytest.mark.parametrize("offset", [0, 3])
def test_tile_holes_cover_every_pixel_once(offset):
    total = sum(tile_holes((50, 37), 8, offset))
    assert torch.equal(total, torch.ones_like(total))


def test_shifted_tilings_remove_a_lesion_that_one_grid_cuts():
    """A grid line through a lesion leaves each half filled from context holding the
    other half; of three shifted grids two hold it whole, so the median fill is clean."""
    torch.manual_seed(0)
    x = 0.2 + 0.02 * torch.randn(1, 1, 64, 64)
    x[..., 22:27, 22:27] = 1.0  # the tile-8 grid cuts at row and column 24
    excess = lambda c: float(c[..., 22:27, 22:27].mean()) - 0.2  # noqa: E731
    one = tiled_counterfactual(x, mean_fill, 8)
    three = tiled_counterfactual(x, mean_fill, 8, tilings=3)
    assert excess(one) > 0.05
    assert abs(excess(three)) < 0.01
    assert torch.allclose(three[..., 40:, 40:].mean(), one[..., 40:, 40:].mean(), atol=0.01)
    with pytest.raises(ValueError, match="tilings 2"):
        InpaintPerturbation(mean_fill, tilings=2)


class FailingBlobDetector(BlobDetector):
    """Fails in its forward pass: GradCAM has hooked the layer and set eval mode by then."""

    def forward(self, x):
        super().forward(x)
        raise RuntimeError("forward failed")


def _model_state(model):
    return (dict(model.act._forward_hooks), dict(model.act._backward_hooks), model.training, model.act.inplace)


@pytest.mark.parametrize("fails", [False, True])
def test_gradcam_restores_the_model(planted, fails):
    x, lesion = planted
    model = (FailingBlobDetector if fails else BlobDetector)()
    model.act = nn.ReLU(inplace=True)  # MONAI turns inplace off; it must come back
    model.train()  # MONAI's GradCAM switches to eval mode
    before = _model_state(model)
    assert before[2:] == (True, True)
    explainer = GradCAMExplainer(model, "act", lambda v: model(v)[:, 1], score_fn(model))
    if fails:
        with pytest.raises(RuntimeError, match="forward failed"):
            explainer(x)
    else:
        result = explainer(x)
        assert metrics.pointing_game(result.mask.numpy(), lesion, tolerance_px=2)
    assert _model_state(model) == before


class SingleLogitBlobDetector(BlobDetector):
    """One output: the lesion logit (class 1); class 0 is its negation."""

    def forward(self, x):
        return super().forward(x)[:, 1:]


def test_gradcam_explains_the_class_of_a_single_logit_classifier(planted):
    x, lesion = planted
    maps = {}
    for class_index in (1, 0):
        clf = Classifier(SingleLogitBlobDetector(), class_index=class_index, input_size=tuple(x.shape[-2:]))
        maps[class_index] = GradCAMExplainer(clf.model, "act", clf.score, clf.probability)(x).mask.numpy()
    assert metrics.pointing_game(maps[1], lesion, tolerance_px=2)
    # The lesion's evidence speaks against class 0: its CAM (ReLU of the negated weights) is empty.
    assert maps[0].max() == 0 and maps[1].max() > 0


@pytest.mark.parametrize("make", [lambda s: OcclusionExplainer(s, mask_size=12),
                                  lambda s: OcclusionExplainer(s, mask_size=12, mode="mean_patch"),
                                  lambda s: OcclusionExplainer(s, mask_size=12, mode="mean_img"),
                                  lambda s: IntegratedGradientsExplainer(s, steps=16)])
def test_baselines_point_at_the_lesion(planted, make):
    x, lesion = planted
    result = make(score_fn(BlobDetector()))(x)
    assert 0.0 <= float(result.mask.min()) and float(result.mask.max()) == pytest.approx(1.0)
    assert metrics.pointing_game(result.mask.numpy(), lesion, tolerance_px=3)


@pytest.mark.parametrize("mode", ["gaussian", "mean_img"])
def test_occlusion_is_zero_where_occluding_changes_nothing(planted, mode):
    """A confident score (an offset of 10) must not raise the map everywhere: MONAI's
    default sigmoid on the occluded scores once made it about score - 1 away from the lesion."""
    from scipy import ndimage

    x, lesion = planted
    base = score_fn(BlobDetector())
    result = OcclusionExplainer(lambda t: base(t) + 10.0, mask_size=12, mode=mode)(x)
    far = ~ndimage.binary_dilation(lesion, iterations=12)
    assert float(result.mask.numpy()[far].mean()) < 0.05
    assert metrics.pointing_game(result.mask.numpy(), lesion, tolerance_px=3)


@pytest.mark.parametrize("mode", ["gaussian", "mean_img"])
def test_occlusion_draws_only_what_occluding_lowers(mode):
    """The map is high where covering a patch lowers the score: a bright place whose
    covering raises the score (evidence against the class) is not drawn."""
    x = torch.full((1, 1, 64, 64), 0.2)
    x[..., 8:20, 8:20] = 0.9    # evidence for: the score is its brightness
    x[..., 40:52, 40:52] = 0.9  # evidence against: subtracted from it

    def score(t):
        return t[..., 8:20, 8:20].mean(dim=(1, 2, 3)) - t[..., 40:52, 40:52].mean(dim=(1, 2, 3))
    mask = OcclusionExplainer(score, mask_size=12, mode=mode)(x).mask
    assert float(mask[8:20, 8:20].max()) == pytest.approx(1.0)
    assert float(mask[40:52, 40:52].max()) == 0.0


def test_occlusion_reports_the_images_it_scored(planted):
    x, _ = planted
    base, scored = score_fn(BlobDetector()), []

    def counting(t):
        scored.append(t.shape[0])
        return base(t)
    result = OcclusionExplainer(counting, mask_size=12)(x)
    assert result.passes == sum(scored)


def test_metrics_on_known_cases():
    lesion = np.zeros((20, 20), bool)
    lesion[5:10, 5:10] = True
    perfect = lesion.astype(float)
    assert metrics.pointing_game(perfect, lesion) and metrics.energy_inside(perfect, lesion) == 1.0
    assert metrics.iou(lesion, lesion) == 1.0 and metrics.pixel_average_precision(perfect, lesion) == 1.0
    assert metrics.mean_boundary_distance(lesion, lesion) == 0.0
    shifted = np.roll(lesion, 10, axis=1)
    # Edge pixels of the shifted square lie 6 to 10 px from the lesion edge: mean 128 / 16 = 8.
    assert metrics.iou(shifted, lesion) == 0.0 and metrics.mean_boundary_distance(shifted, lesion) == 8.0
    assert not metrics.pointing_game(shifted.astype(float), lesion, tolerance_px=2)
    region = metrics.salient_region(np.where(lesion, 0.9, 0.0) + np.eye(20) * 0.0, 0.5, 30)
    assert not region.any()  # 25-pixel component dropped below min_pixels=30
    assert metrics.salient_region(perfect, 0.5, 10).sum() == 25


def test_pixel_ap_treats_equal_saliency_as_one_threshold():
    lesion = np.zeros((20, 20), bool)
    for rows in (slice(0, 5), slice(15, 20)):  # the same map, the lesion at the top or the bottom
        lesion[:] = False
        lesion[rows, 5:10] = True
        flat = np.zeros((20, 20))
        assert metrics.pixel_average_precision(flat, lesion) == pytest.approx(lesion.mean())
        plateaus = np.zeros((20, 20))
        plateaus[0:5, 5:10] = plateaus[15:20, 5:10] = 1.0  # the lesion and a decoy, equally salient
        assert metrics.pixel_average_precision(plateaus, lesion) == pytest.approx(0.5)


def test_boundary_distance_in_mm_with_non_square_pixels():
    lesion = np.zeros((20, 20), bool)
    lesion[5:10, 5:10] = True
    shifted = np.roll(lesion, 10, axis=1)  # 8 columns apart on average (test above)
    assert metrics.mean_boundary_distance(shifted, lesion, spacing=(0.1, 0.05)) == pytest.approx(0.4)
    got = metrics.all_metrics(shifted.astype(float), lesion, shifted, spacing=(0.1, 0.05))["boundary_distance"]
    assert got == pytest.approx(0.4)


def test_pointing_game_with_a_flat_map_and_with_non_square_pixels():
    """A map without a maximum points nowhere (argmax took pixel (0, 0): a hit for a lesion
    beside it). With pixels twice as long along rows, the tolerance along rows is half as
    many pixels: the same distance in mm both ways."""
    lesion = np.zeros((40, 40), bool)
    lesion[0:3, 0:3] = True
    assert not metrics.pointing_game(np.zeros((40, 40)), lesion, 3, 3)
    assert not metrics.all_metrics(np.full((40, 40), 0.5), lesion, lesion)["pointing_game"]
    lesion[:] = False
    lesion[20, 20] = True
    for peak, hit in (((20, 24), True), ((20, 25), False), ((22, 20), True), ((23, 20), False), ((21, 22), True),
                      ((22, 22), False)):
        saliency = np.zeros((40, 40))
        saliency[peak] = 1.0
        assert metrics.pointing_game(saliency, lesion, tolerance_px=(2, 4)) == hit, peak
    for t in (1, 3):  # equal tolerances: the cross dilation repeated, as before
        grown = metrics._diamond(t, t)
        cross = np.zeros((2 * t + 1, 2 * t + 1), bool)
        cross[t, t] = True
        assert np.array_equal(grown, ndimage.binary_dilation(cross, iterations=t))


def test_masks_mark_the_lesion_with_any_nonzero_value():
    """README: any nonzero value; a 0/255 mask wrapped into int8 holds -1."""
    lesion = np.zeros((20, 20), np.int8)
    lesion[5:10, 5:10] = -1
    got = metrics.all_metrics(np.where(lesion != 0, 1.0, 0.0), lesion, lesion != 0)
    assert got["iou"] == 1.0 and got["energy_inside"] == 1.0 and got["pointing_game"]


def test_metrics_refuse_a_map_with_nan():
    lesion = np.zeros((20, 20), bool)
    lesion[5:10, 5:10] = True
    saliency = lesion.astype(float)
    saliency[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        metrics.all_metrics(saliency, lesion, lesion)


def _two_spots():
    """A region of two components, a (the lesion) and b, and a score that falls by 0.5 when a
    is deleted and by 0.1 when b is."""
    region = np.zeros((20, 20), bool)
    region[2:6, 2:6] = True    # a
    region[12:16, 12:16] = True  # b
    a, b = region.copy(), region.copy()
    a[10:], b[:10] = False, False
    calls = []

    def score_without(r):
        calls.append(r.copy())
        return 0.95 - 0.5 * float((r & a).any()) - 0.1 * float((r & b).any())
    return region, a, score_without, calls


def test_sufficient_region_keeps_the_component_the_call_needs():
    region, a, score_without, calls = _two_spots()
    kept = sufficient_region(region, score_without(region), score_without, threshold=0.5)
    assert np.array_equal(kept.region, a) and kept.score_after == pytest.approx(0.45)
    assert kept.forwards == 2 == len(calls) - 1  # each component tried once; one left, so no second round
    # A margin the removal would exceed (0.45 > 0.35 + 0.05) keeps the whole region.
    kept = sufficient_region(region, 0.35, score_without, threshold=0.5, margin=0.05)
    assert np.array_equal(kept.region, region) and kept.score_after == 0.35 and kept.forwards == 2
    # A budget too small for one round (two components, one pass) leaves the region whole.
    kept = sufficient_region(region, 0.35, score_without, threshold=0.5, max_forwards=1)
    assert np.array_equal(kept.region, region) and kept.forwards == 0


def test_sufficient_region_leaves_a_standing_call_or_one_component_alone():
    region, a, score_without, calls = _two_spots()
    for r, after in ((region, 0.6), (a, 0.45)):  # the call survives; a single component
        kept = sufficient_region(r, after, score_without)
        assert kept.region is r and kept.score_after == after and kept.forwards == 0
    assert not calls


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="objective 'x'"):
        CounterfactualExplainer(lambda x: x, BlurPerturbation(), objective="x")
    with pytest.raises(ValueError, match="init 1.0"):
        CounterfactualExplainer(lambda x: x, BlurPerturbation(), init=1.0)
    with pytest.raises(ValueError, match="reseed_init 1.0"):
        CounterfactualExplainer(lambda x: x, BlurPerturbation(), reseed_init=1.0)
    with pytest.raises(ValueError, match="reseed_every -1"):
        CounterfactualExplainer(lambda x: x, BlurPerturbation(), reseed_every=-1)
    with pytest.raises(ValueError, match="occlusion mode 'zero'"):
        OcclusionExplainer(lambda x: x, mode="zero")
    with pytest.raises(ValueError, match="area_mode 'target' does not go with objective 'map_quality'"):
        CounterfactualExplainer(lambda x: x, BlurPerturbation(), objective="map_quality", area_mode="target")
    with pytest.raises(ValueError, match="lr_schedule 'linear'"):
        CounterfactualExplainer(lambda x: x, BlurPerturbation(), lr_schedule="linear")


def two_blobs():
    """Two equal Gaussian blobs on noise: (1,1,H,W) image and their centres."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[: SIZE[0], : SIZE[1]]
    centres = ((30, 22), (66, 58))
    img = 0.5 + 0.02 * rng.standard_normal(SIZE)
    for r, c in centres:
        img = img + 0.25 * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * (5 / 1.5) ** 2))
    return torch.tensor(img, dtype=torch.float32)[None, None], centres


def two_blob_explainer(objective: str, max_passes: int, reseed_every: int) -> CounterfactualExplainer:
    """The gradient-initialised explainer the two-blob tests run, behind a max-pooling detector."""
    return CounterfactualExplainer(score_fn(BlobDetector()), InpaintPerturbation(mean_fill, tile=16),
                                   objective=objective, mask_scale=4, max_passes=max_passes, learning_rate=0.2,
                                   area_weight=1.0, init_mode="gradient", init=0.9, init_floor=0.001,
                                   init_power=2.0, reseed_every=reseed_every)


def test_reseed_finds_a_second_lesion_behind_max_pooling():
    """Two equal blobs: the max-pooled detector's gradient sees only one, so the gradient
    initialisation starts the mask there alone and deleting it leaves the call; reseeding
    starts the mask on the other one, and deleting both takes the call away."""
    x, centres = two_blobs()

    def explain(reseed_every):
        return two_blob_explainer("deletion", 40, reseed_every)(x)

    def on(result, centre):
        return float(result.mask[centre]) > 0.5

    plain, reseeded = explain(0), explain(5)
    assert sum(on(plain, c) for c in centres) == 1 and plain.score_after > 0.5
    assert all(on(reseeded, c) for c in centres) and reseeded.score_after < 0.5
    assert plain.passes <= 40 and reseeded.passes <= 40


def test_a_mask_that_settles_with_the_call_standing_is_reseeded():
    """The two blobs, the default (two-sided) objective: without reseeding the mask settles on
    one blob and the run stops early; with a reseed that is never due on schedule, settling
    with the call standing reseeds at once, and the budget left brings the second blob in."""
    x, centres = two_blobs()

    def explain(reseed_every):
        return two_blob_explainer("deletion_preservation", 60, reseed_every)(x)

    plain, settled = explain(0), explain(1000)
    assert plain.passes < 40 and sum(float(plain.mask[c]) > 0.5 for c in centres) == 1
    assert plain.score_after > 0.5
    assert settled.passes > plain.passes and all(float(settled.mask[c]) > 0.5 for c in centres)
    assert settled.score_after < 0.5


class RoundedBlobDetector(BlobDetector):
    """The detector's logits rounded: a score whose gradient is exactly zero everywhere."""

    def forward(self, x):
        return torch.round(super().forward(x))


@pytest.mark.parametrize("perturbation", [InpaintPerturbation(mean_fill, tile=16), BlurPerturbation(sigma=6.0)])
@pytest.mark.parametrize("init_mode", ["constant", "gradient"])
def test_a_score_without_gradient_at_the_image_stops_the_explainer(planted, perturbation, init_mode):
    """The mask never left its start and the change map, scaled to its own largest value, showed
    the whole breast as the explanation: now a ValueError that says why. A rounded score has no
    gradient anywhere; the plain detector has none on a blank image (its ReLU is dead there)."""
    x, _ = planted
    for model, image in ((RoundedBlobDetector(), x), (BlobDetector(), torch.zeros_like(x))):
        explainer = CounterfactualExplainer(score_fn(model), perturbation, mask_scale=4, max_passes=10,
                                            init_mode=init_mode, init=0.9, saliency="change")
        with pytest.raises(ValueError, match="the classifier's score has no gradient at this image"):
            explainer(image)
