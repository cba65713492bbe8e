"""The optimisation of counterfactual impact analysis (Major et al., ISBI 2020).

Find the smallest, smooth mask M whose replacement by the counterfactual removes
the classifier's evidence. Each optimiser step costs one classifier forward+backward
pass per image it scores (two with the objective deletion_preservation: the deleted and
the preserved image); `passes` counts them, with the start's and the reseeds'. All
hyper-parameters are constructor arguments.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .perturbation import blurred


# A classifier score: (B,1,H,W) -> (B,) the explained class's probability, logit or
# -log(1 - p): what the optimiser drives down (CounterfactualExplainer's score_fn).
ScoreFn = Callable[[torch.Tensor], torch.Tensor]

OBJECTIVES = ("deletion", "preservation", "map_quality", "deletion_preservation")
AREA_MODES = ("penalty", "target")
LR_SCHEDULES = ("constant", "cosine", "halving")
SALIENCY = ("mask", "change")
# Each map's value above which it forms the region: the change map is scaled to a largest
# value of 1 and falls off steeply from it (docs/evaluation.md, "The region from the change map").
REGION_THRESHOLDS = {"mask": 0.5, "change": 0.05}


class NoGradient(ValueError):
    """The classifier's score has no gradient at this image (NO_GRADIENT says why it matters)."""


NO_GRADIENT = ("the classifier's score has no gradient at this image (exactly zero: a rounded or thresholded "
               "score, or a probability saturated at 0 or 1, has none); explanations by cf, blur and gradcam "
               "need one, ig one along its path from black, occlusion none")


@dataclass
class MaskResult:
    mask: torch.Tensor          # (H,W) float in [0,1], the input grid
    score: float                # f_c(x)
    score_after: float          # f_c with the thresholded region replaced by this explainer's own
                                # perturbation (blur: blurred); nan without score_region
    passes: int                 # classifier forward+backward passes
    seconds: float
    saliency: Optional[torch.Tensor] = None  # (H,W) the map to report, when it is not the mask


def _nonzero(grad: Optional[torch.Tensor]) -> bool:
    return grad is not None and bool(grad.any())


def require_gradient(score_fn: ScoreFn, x: torch.Tensor) -> None:
    """NoGradient when the score's gradient with respect to the image is exactly zero at x:
    a mask could never leave its start (cf, blur: the change map, scaled to its own largest
    value, would paint the whole breast), and Grad-CAM's and IG's maps would be empty. (A
    nil deletion effect with a gradient, a counterfactual equal to the image, is left as it was.)"""
    image = x.detach().clone().requires_grad_(True)
    score = score_fn(image).sum()
    grad = torch.autograd.grad(score, image, allow_unused=True)[0] if score.requires_grad else None
    if not _nonzero(grad):
        raise NoGradient(NO_GRADIENT)


def total_variation(m: torch.Tensor) -> torch.Tensor:
    return (m[..., 1:, :] - m[..., :-1, :]).abs().mean() + (m[..., :, 1:] - m[..., :, :-1]).abs().mean()


def sorted_area_penalty(m: torch.Tensor, target: float, weight_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Extremal-perturbation area constraint: sorted mask values against a step of `target` ones."""
    values = m.flatten() if weight_mask is None else m.flatten()[weight_mask.flatten() > 0]
    ranked = torch.sort(values).values
    ref = torch.zeros_like(ranked)
    ref[ranked.numel() - int(round(target * ranked.numel())):] = 1.0
    return ((ranked - ref) ** 2).mean()


def change_map(x: torch.Tensor, mask: torch.Tensor, counterfactual: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """The mask weighted by what replacing it changes: M * G_sigma(|C - x|), scaled to a
    largest value of 1 (the mask itself where C equals x everywhere).

    The mask says where the counterfactual was put, at which strength; the difference
    says where that changed the image. A counterfactual that replaces a lesion by healthy
    tissue differs from the image most on the lesion, and little where the fill
    continues tissue that was healthy already, so the product marks the lesion within
    a region that must be somewhat larger to remove it (docs/evaluation.md, "What the
    counterfactual changed")."""
    diff = (counterfactual - x).abs()
    if sigma > 0:
        diff = blurred(diff, sigma)
    out = mask * diff  # the explainer's mask is nil outside the breast already
    top = out.max()
    return out / top if top > 0 else mask


class CounterfactualExplainer:
    """Optimise a low-resolution mask against a perturbation.

    The defaults below are the bare method's. The shipped explainer is another setting of
    them, config.yaml's (cfia.config.ExplainerConfig, README "Configuration"): build it
    with cfia.pipeline.Pipeline.explainer to get what `cfia explain` and the node run.

    Args:
        score_fn: differentiable classifier score for the explained class (the
            probability, its logit, or -log(1 - p)), what the optimiser drives down on
            the deleted image (deletion, and deletion_preservation's deleted side).
        report_fn: the probability, reported as score and score_after (default
            score_fn; give it when score_fn is not the probability). It must be
            differentiable: the kept image's terms (preservation, map_quality,
            deletion_preservation's kept side) use it, as 1 - p or -log p, whatever score_fn is.
        perturbation: supplies the counterfactual C and the blend Φ(x, M, C)
            (InpaintPerturbation or BlurPerturbation from explain.perturbation).
        objective: "deletion" (minimise f_c(Φ(x,M))), "preservation" (keep M,
            replace 1−M, maximise f_c), or "map_quality" (Dabkowski & Gal:
            log(max(area, area_min)) − log f_c(preserved)), or "deletion_preservation"
            (Dabkowski & Gal's two-sided objective: deleting M removes the evidence and
            M alone, the rest replaced, keeps it; two classifier passes per step).
        preservation_weight: weight of −log f_c(preserved) in "deletion_preservation"
            (default 1.0).
        preservation_target: in "deletion_preservation", the probability the kept
            region must reach: the term is −log min(f_c(preserved) / target, 1), so a
            region that already keeps the evidence at this level gains nothing from
            growing further (a sufficiency test, not a score to maximise; default 1.0,
            the plain −log f_c(preserved)).
        area_mode: "penalty" (area_weight·mean(M)) or "target" (sorted-mask
            constraint towards target_area of the breast, weighted by area_weight).
        area_weight: weight of the area term (default 2.0); not used by "map_quality",
            whose log(max(area, area_min)) term is unweighted, as in Dabkowski & Gal's metric.
        target_area: area fraction for area_mode "target" (default 0.05).
        area_min: floor of the area in the map-quality objective (default 0.01).
        tv_weight: total-variation weight on the upsampled mask (default 0.3).
        mask_scale: mask resolution = input size / mask_scale (default 8).
        max_passes: classifier forward+backward passes at most (default 50).
        learning_rate: Adam step on the mask logits (default 0.1).
        lr_schedule: "constant"; "cosine": the step anneals from learning_rate to 0
            over the pass budget; "halving": the step halves every lr_half_life
            passes whatever the budget, so a longer run follows the same path and
            then barely moves (default "constant").
        lr_half_life: passes per halving of the step for "halving" (default 10).
        init: initial mask value (default 0.5); with init_mode "gradient", the
            value where the first-order deletion effect is largest.
        init_mode: "constant" (init everywhere) or "gradient": one extra pass
            computes d f_c(Φ(x,M))/dM at M = 0, the first-order effect of deleting
            each pixel, and the mask starts high where deletion lowers the score
            most and at init_floor elsewhere (default "constant"); with area_mode "target",
            at least init on the cells of largest effect that cover target_area of the breast.
        init_floor: the low end of the gradient initialisation (default 0.05).
        init_power: the gradient initialisation follows (effect / max effect) to this
            power; above 1 it keeps weak, noisy effects near init_floor, where the
            budget's few steps could not clear them from the map (default 1.0).
        reseed_every: with init_mode "gradient", every this many steps (0 = never), if
            the current mask's deletion still leaves the probability at or above
            call_threshold, one extra pass computes the first-order deletion effect at
            the current mask, and the mask is raised, as the initialisation does, where
            that effect is large outside what it already holds: evidence the first
            initialisation could not see (a second lesion behind a max-pooling
            classifier's saturation) gets a start; a mask at init_floor could not
            grow there within the budget (default 0). With reseed_every > 0, a mask that
            settles (see tolerance) while its deletion leaves the call is reseeded at once
            instead of ending the run, as long as the budget holds a step after it.
        reseed_init: the highest value a reseeded start takes (default 0.5): below
            `init`, so a new start does not outrank the region already shaped.
        call_threshold: the probability of a positive call, for reseed_every (default 0.5).
        tolerance: stop when the objective changed by less than this over
            `patience` steps (default 1e-3).
        patience: steps of that window (default 5).
        region_threshold: the value of the reported map (the mask, or the change map) above
            which it marks the region for score_after (default REGION_THRESHOLDS[saliency]:
            0.5 for the mask, 0.05 for the change map).
        seed: seeds torch for determinism.
        saliency: the map the result reports beside the mask: "mask" (none: the mask is
            the map) or "change" (change_map: the mask weighted by how much the
            counterfactual differs from the image there; default "mask").
        saliency_sigma: the Gaussian sigma, input pixels, of that difference (default 1.0).
        score_region: measure score_after (one more inpainting and forward pass); False
            leaves it nan, for a caller that measures the deletion itself (cfia.pipeline).
    """

    def __init__(self, score_fn: ScoreFn, perturbation, objective: str = "deletion",
                 area_mode: str = "penalty", area_weight: float = 2.0, target_area: float = 0.05,
                 area_min: float = 0.01, tv_weight: float = 0.3, mask_scale: int = 8,
                 max_passes: int = 50, learning_rate: float = 0.1, lr_schedule: str = "constant",
                 lr_half_life: float = 10.0, init: float = 0.5,
                 init_mode: str = "constant", init_floor: float = 0.05,
                 tolerance: float = 1e-3, patience: int = 5, region_threshold: Optional[float] = None, seed: int = 0,
                 report_fn: Optional[ScoreFn] = None, preservation_weight: float = 1.0,
                 init_power: float = 1.0, preservation_target: float = 1.0, reseed_every: int = 0,
                 call_threshold: float = 0.5, reseed_init: float = 0.5, saliency: str = "mask",
                 saliency_sigma: float = 1.0, score_region: bool = True):
        if objective not in OBJECTIVES:
            raise ValueError(f"objective {objective!r} is not one of {OBJECTIVES}")
        if area_mode not in AREA_MODES:
            raise ValueError(f"area_mode {area_mode!r} is not one of {AREA_MODES}")
        if objective == "map_quality" and area_mode == "target":
            raise ValueError("area_mode 'target' does not go with objective 'map_quality', whose area term is "
                             "log(max(area, area_min)); expected 'penalty'")
        if not 0.0 < init < 1.0:
            raise ValueError(f"init {init!r} must lie strictly between 0 and 1")
        if init_mode == "gradient" and not 0.0 <= init_floor < init:
            raise ValueError(f"init_floor {init_floor!r} must lie in [0, init {init!r})")
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule {lr_schedule!r} is not one of {LR_SCHEDULES}")
        if not 0.0 < preservation_target <= 1.0:
            raise ValueError(f"preservation_target {preservation_target!r} must lie in (0, 1]")
        if not 0.0 < reseed_init < 1.0:
            raise ValueError(f"reseed_init {reseed_init!r} must lie strictly between 0 and 1")
        if reseed_every < 0:
            raise ValueError(f"reseed_every {reseed_every!r} must be >= 0")
        if init_power <= 0:
            raise ValueError(f"init_power {init_power!r} must be positive")
        if init_mode not in ("constant", "gradient"):
            raise ValueError(f"init_mode {init_mode!r} is not one of ('constant', 'gradient')")
        if saliency not in SALIENCY:
            raise ValueError(f"saliency {saliency!r} is not one of {SALIENCY}")
        if saliency_sigma < 0:
            raise ValueError(f"saliency_sigma {saliency_sigma!r} must be >= 0")
        self.score_fn, self.perturbation = score_fn, perturbation
        self.report_fn = report_fn or score_fn
        self.objective, self.area_mode = objective, area_mode
        self.area_weight, self.target_area, self.area_min = area_weight, target_area, area_min
        self.tv_weight, self.mask_scale = tv_weight, mask_scale
        self.max_passes, self.learning_rate, self.init = max_passes, learning_rate, init
        self.lr_schedule, self.lr_half_life = lr_schedule, lr_half_life
        self.init_mode, self.init_floor, self.init_power = init_mode, init_floor, init_power
        self.tolerance, self.patience = tolerance, patience
        self.region_threshold = REGION_THRESHOLDS[saliency] if region_threshold is None else region_threshold
        self.seed = seed
        self.preservation_weight, self.preservation_target = preservation_weight, preservation_target
        self.reseed_every, self.call_threshold, self.reseed_init = reseed_every, call_threshold, reseed_init
        self.saliency, self.saliency_sigma = saliency, saliency_sigma
        self.score_region = score_region
        # Classifier images per optimiser step: the two-sided objective scores two.
        self.images_per_step = 2 if objective == "deletion_preservation" else 1

    def __call__(self, x: torch.Tensor, breast: Optional[torch.Tensor] = None) -> MaskResult:
        """x: (1,1,H,W) classifier input; breast: optional (1,1,H,W) {0,1} where M may be non-zero.
        NoGradient when the score's gradient is exactly zero at the start: the mask
        could not move, and its map would be the whole breast."""
        # Seeded for a deterministic map; the caller's random state (a notebook's) is put back.
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            return self._explain(x, breast)

    def _explain(self, x: torch.Tensor, breast: Optional[torch.Tensor]) -> MaskResult:
        start = time.perf_counter()
        with torch.no_grad():
            score = float(self.report_fn(x)[0])
        counterfactual = self.perturbation.reference(x)
        logits, passes = self._init_logits(x, counterfactual, breast)
        opt = torch.optim.Adam([logits], lr=self.learning_rate)
        schedule = self._schedule(opt, (self.max_passes - passes) // self.images_per_step)
        history: list[float] = []
        step = 0
        while passes + self.images_per_step <= self.max_passes:
            mask = self._upsample(logits, x.shape[-2:], breast)
            counterfactual = self.perturbation.refresh(x, mask.detach(), counterfactual, step)
            # A constant start has no pass of its own to check the gradient on: the first step's
            # gradient reaching the image is that check, at no extra pass.
            image = x.detach().clone().requires_grad_(True) if step == 0 and self.init_mode == "constant" else x
            loss = self._loss(image, mask, counterfactual, breast)
            opt.zero_grad()
            loss.backward()
            if image is not x and not _nonzero(image.grad):
                raise NoGradient(NO_GRADIENT)
            opt.step()
            if schedule is not None:
                schedule.step()
            history.append(float(loss.detach()))
            passes, step = passes + self.images_per_step, step + 1
            if self._converged(history):
                # A settled mask whose deletion leaves the call standing has missed evidence:
                # reseed now rather than stop with budget left (a second lesion).
                spent = self._reseed(x, logits, counterfactual, breast) if self._can_reseed(passes) else 0
                if not spent:
                    break
                passes += spent
                history.clear()
            elif self._reseed_due(step) and passes < self.max_passes:
                passes += self._reseed(x, logits, counterfactual, breast)
        with torch.no_grad():
            mask = self._upsample(logits, x.shape[-2:], breast)
            saliency = None
            if self.saliency == "change":
                saliency = change_map(x, mask, counterfactual, self.saliency_sigma)
            score_after = (self._score_after(x, mask if saliency is None else saliency, counterfactual)
                           if self.score_region else float("nan"))
        return MaskResult(mask[0, 0].detach(), score, score_after, passes, time.perf_counter() - start,
                          None if saliency is None else saliency[0, 0])

    def _reseeding(self) -> bool:
        return self.init_mode == "gradient" and self.reseed_every > 0

    def _reseed_due(self, step: int) -> bool:
        return self._reseeding() and step % self.reseed_every == 0

    def _can_reseed(self, passes: int) -> bool:
        """Reseeding is on and the budget holds the reseed's pass and a step after it."""
        return self._reseeding() and passes + 1 + self.images_per_step <= self.max_passes

    def _reseed(self, x, logits, counterfactual, breast) -> int:
        """Raise the mask where deleting more would still lower a surviving call; one pass."""
        with torch.no_grad():
            mask = self._upsample(logits, x.shape[-2:], breast)
            if float(self.report_fn(self.perturbation.apply(x, mask, counterfactual))[0]) < self.call_threshold:
                return 0  # forward only: the deletion already takes the call away
        value, _ = self._effect_init(x, mask, counterfactual, breast, logits.shape[-2:], outside=1.0 - mask)
        # The effect's share only: the start's floor under it would lift every cell the optimiser
        # had driven below the floor back up to it, a haze over the breast.
        value = (value - self.init_floor).clamp(max=self.reseed_init)
        with torch.no_grad():
            raise_ = value > torch.sigmoid(logits)
            logits.copy_(torch.where(raise_, torch.maximum(logits, self._logit(value)), logits))
        return 1

    def _schedule(self, opt, steps: int):
        if self.lr_schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
        if self.lr_schedule == "halving":
            return torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.5 ** (self.images_per_step / self.lr_half_life))
        return None

    def _init_logits(self, x, counterfactual, breast) -> tuple[torch.Tensor, int]:
        """Initial low-resolution mask logits and the classifier passes spent on them."""
        h = math.ceil(x.shape[-2] / self.mask_scale)
        w = math.ceil(x.shape[-1] / self.mask_scale)
        if self.init_mode == "constant":
            value = torch.full((1, 1, h, w), self.init, dtype=x.dtype, device=x.device)
            return torch.logit(value).requires_grad_(True), 0
        value, passes = self._effect_init(x, torch.zeros_like(x), counterfactual, breast, (h, w), start=True)
        if self.area_mode == "target":
            value = self._cover_target(value, breast)
        return self._logit(value).detach().requires_grad_(True), passes

    def _cover_target(self, value: torch.Tensor, breast) -> torch.Tensor:
        """The cells of largest effect that cover target_area of the breast, raised to init.

        The sorted-area term pulls the target's share of the mask towards 1, but a cell that
        starts at init_floor (logit about -9) cannot rise within the budget at about one
        learning_rate per step: without this, every target gave the effect start's area."""
        cover = torch.ones_like(value) if breast is None else F.adaptive_avg_pool2d(breast, value.shape[-2:])
        cover = cover.flatten()
        order = torch.argsort(torch.where(cover > 0, value.flatten(), -1.0), descending=True, stable=True)
        before = cover[order].cumsum(0) - cover[order]  # breast covered by the cells ranked above
        chosen = order[before < self.target_area * cover.sum()]
        raised = value.flatten().clone()
        raised[chosen] = raised[chosen].clamp(min=self.init)
        return raised.view_as(value)

    @staticmethod
    def _logit(value: torch.Tensor) -> torch.Tensor:
        """Mask values -> logits, kept finite."""
        return torch.logit(value.clamp(1e-4, 1 - 1e-4))

    def _effect_init(self, x, mask, counterfactual, breast, size, outside=None,
                     start=False) -> tuple[torch.Tensor, int]:
        """Mask values (low resolution) from the first-order effect of deleting each pixel
        beyond `mask`: init where it is largest, init_floor where it is nil; and the passes
        spent. One; at the start, a second when that effect is nil everywhere, to tell why
        (require_gradient)."""
        m = mask.detach().clone().requires_grad_(True)
        grad, = torch.autograd.grad(self.score_fn(self.perturbation.apply(x, m, counterfactual)).sum(), m)
        passes = 1
        if start and not grad.any():
            require_gradient(self.score_fn, x)
            passes += 1
        effect = (-grad).clamp(min=0)
        for weight in (breast, outside):
            effect = effect if weight is None else effect * weight
        effect = F.adaptive_avg_pool2d(effect, size)
        effect = (effect / effect.max().clamp(min=1e-12)) ** self.init_power
        return self.init_floor + (self.init - self.init_floor) * effect, passes

    @staticmethod
    def _upsample(logits, size, breast):
        mask = torch.sigmoid(F.interpolate(logits, size=size, mode="bicubic", align_corners=False))
        return mask if breast is None else mask * breast

    def _area(self, mask, breast):
        if breast is None:
            return mask.mean()
        return mask.sum() / breast.sum().clamp(min=1.0)

    def _loss(self, x, mask, counterfactual, breast):
        area = self._area(mask, breast)
        smooth = self.tv_weight * total_variation(mask)
        replaced = 1.0 - mask if breast is None else (1.0 - mask) * breast
        if self.objective == "map_quality":
            p = self.report_fn(self.perturbation.apply(x, replaced, counterfactual))[0]
            return torch.log(area.clamp(min=self.area_min)) - torch.log(p.clamp(min=1e-6)) + smooth
        if self.objective == "deletion":
            evidence = self.score_fn(self.perturbation.apply(x, mask, counterfactual))[0]
        elif self.objective == "preservation":  # keep M, replace the rest
            evidence = 1.0 - self.report_fn(self.perturbation.apply(x, replaced, counterfactual))[0]
        else:  # both sides
            deleted = self.score_fn(self.perturbation.apply(x, mask, counterfactual))[0]
            kept = self.report_fn(self.perturbation.apply(x, replaced, counterfactual))[0]
            kept = (kept / self.preservation_target).clamp(min=1e-6, max=1.0)
            evidence = deleted - self.preservation_weight * torch.log(kept)
        if self.area_mode == "penalty":
            area_term = self.area_weight * area
        else:
            area_term = self.area_weight * sorted_area_penalty(mask, self.target_area, breast)
        return evidence + area_term + smooth

    def _converged(self, history: list[float]) -> bool:
        if len(history) <= self.patience:
            return False
        return abs(history[-1 - self.patience] - history[-1]) < self.tolerance

    def _score_after(self, x, reported, counterfactual) -> float:
        """f_c once the region (the reported map above region_threshold) is replaced (the
        region refilled from its border)."""
        region = reported > self.region_threshold
        filled = self.perturbation.fill_region(x, region, counterfactual)
        return float(self.report_fn(self.perturbation.apply(x, region.float(), filled))[0])
