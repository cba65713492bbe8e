"""Baselines behind the same interface as CounterfactualExplainer.

Each is configured in __init__ and applied in __call__(x, breast) -> MaskResult,
with the map normalised to [0,1] in the input grid. `passes` counts classifier
passes (forward+backward for gradient methods, forward only for occlusion).
"""
from __future__ import annotations

import time
from typing import Optional

import torch
import torch.nn as nn
from monai.visualize import GradCAM, OcclusionSensitivity

from .classifier import error_line
from .counterfactual import MaskResult, NoGradient, ScoreFn, require_gradient

OCCLUSION_MODES = ("mean_img", "mean_patch", "gaussian")


# Occlusion that moves the score by no more than this, relative to it, moved nothing (a score
# saturated at the image: 2e-6 on a log-odds of 13.8).
FLAT_OCCLUSION = 1e-5


def _normalise(m: torch.Tensor, breast: Optional[torch.Tensor]) -> torch.Tensor:
    m = m.detach().float().clamp(min=0)
    if breast is not None:
        m = m * breast[0, 0]
    top = m.max()
    return m / top if top > 0 else m


class _ScoreModule(nn.Module):
    """Wraps a score function as a module with one output (for monai.visualize)."""

    def __init__(self, score_fn: ScoreFn):
        super().__init__()
        self.score_fn = score_fn
        self.images = 0  # images scored: occlusion's classifier passes

    def forward(self, x):
        self.images += x.shape[0]
        return self.score_fn(x)[:, None]


def check_gradcam_layer(model: nn.Module, layer: str) -> None:
    """Grad-CAM hooks a named layer: a ValueError before any image when it cannot."""
    if isinstance(model, torch.jit.ScriptModule):
        raise ValueError("gradcam needs the classifier as a network (kind monai_network or monai_bundle "
                         "with network_def): a TorchScript model takes no hooks")
    names = [name for name, _ in model.named_modules() if name]
    if layer not in names:
        raise ValueError(f"explainer.gradcam_layer {layer!r} is not a layer of the classifier; "
                         f"its last layers: {', '.join(names[-6:])}")


def feature_map_layers(model: nn.Module, class_score: ScoreFn, x: torch.Tensor) -> list[str]:
    """The layers whose output is a feature map (B, C, H, W) of more than one place, in the
    order they run: the layers Grad-CAM can weigh, the last convolutional ones usually best
    (a global pooling's 1x1 output would give a constant map)."""
    seen: list[str] = []

    def record(name):
        def hook(module, args, out):
            if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-2:].numel() > 1 and name not in seen:
                seen.append(name)
        return hook

    handles = [m.register_forward_hook(record(name)) for name, m in model.named_modules() if name]
    try:
        with torch.no_grad():
            class_score(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def _hook_state(model: nn.Module, layer: str) -> tuple[nn.Module, dict, dict, dict]:
    module = dict(model.named_modules())[layer]
    return module, dict(module._forward_hooks), dict(module._backward_hooks), dict(module.__dict__)


def _restore_hooks(state: tuple[nn.Module, dict, dict, dict]) -> None:
    """Undo what monai.visualize's ModelWithHooks (MONAI 1.6) leaves on the target layer.

    It registers forward and full-backward hooks without keeping their handles (so
    they can never be removed) and turns `inplace` off; each GradCAM built on the
    same model stacks more hooks. We put the layer's hook tables and attributes back.
    """
    module, forward, backward, attrs = state
    for table, saved in ((module._forward_hooks, forward), (module._backward_hooks, backward)):
        for key in list(table):
            if key not in saved:
                del table[key]
    if "inplace" in attrs:
        module.inplace = attrs["inplace"]
    if not backward:
        module._is_full_backward_hook = attrs.get("_is_full_backward_hook")


class _ClassScore(nn.Module):
    """The network with one output, the explained class's score, for MONAI's GradCAM: a
    single-logit classifier has no column `class_index` to pick, and its class 0 is the
    logit negated (explain.classifier.Classifier.score)."""

    def __init__(self, net: nn.Module, class_score: ScoreFn):
        super().__init__()
        self.net, self._class_score = net, class_score

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._class_score(x)[:, None]


class GradCAMExplainer:
    """Grad-CAM (monai.visualize.GradCAM) on `target_layer` of `model`, for the score
    `class_score(x)` -> (B,) that `model` computes (the explained class's logit)."""

    def __init__(self, model: nn.Module, target_layer: str, class_score: ScoreFn, score_fn: ScoreFn):
        check_gradcam_layer(model, target_layer)
        self.model, self.target_layer, self.class_score, self.score_fn = model, target_layer, class_score, score_fn

    def check(self, x: torch.Tensor) -> None:
        """Grad-CAM once on `x` (a blank input will do): a layer that exists but gives no
        feature map, or whose output a later layer changes in place, fails here in one line,
        at start-up, instead of with a traceback on every image."""
        maps = feature_map_layers(self.model, self.class_score, x)
        mapped = self.target_layer in maps  # a pooled (B, C, 1, 1) output runs, to a uniform map
        error = self._fails(x) if mapped else None
        if mapped and error is None:
            return
        usable = [name for name in reversed(maps[-8:])  # the last feature maps first, tried in turn
                  if name != self.target_layer and self._with(name)._fails(x) is None][:3]
        hint = (f"layers it runs on, last first: {', '.join(usable)}" if usable
                else "it runs on no layer of this classifier")
        if not mapped:
            raise ValueError(f"explainer.gradcam_layer {self.target_layer!r} gives no feature map "
                             f"(B, C, H, W) for Grad-CAM to weigh; {hint}")
        raise ValueError(f"explainer.gradcam_layer {self.target_layer!r}: Grad-CAM cannot run on it "
                         f"({error}); {hint}")

    def _with(self, layer: str) -> "GradCAMExplainer":
        return GradCAMExplainer(self.model, layer, self.class_score, self.score_fn)

    def _fails(self, x: torch.Tensor) -> Optional[str]:
        """Why Grad-CAM fails on `x` at this layer, in a line; None when it runs."""
        try:
            self(x)
        except NoGradient:
            return None  # a blank input may have none: said per image, where it matters
        except Exception as exc:  # noqa: BLE001 - hooks fail in many ways; the layer is what to change
            return error_line(exc)
        return None

    def __call__(self, x: torch.Tensor, breast: Optional[torch.Tensor] = None) -> MaskResult:
        start = time.perf_counter()
        was_training = self.model.training
        saved = _hook_state(self.model, self.target_layer)
        try:
            # MONAI's default post-processing returns 1 - normalised CAM (high = not
            # salient); take the raw CAM and normalise it like every other method.
            cam = GradCAM(nn_module=_ClassScore(self.model, self.class_score), target_layers=f"net.{self.target_layer}",
                          postprocessing=lambda v: v)
            # A frozen classifier (requires_grad off) still needs a graph to the
            # activations: let it flow from the input.
            m = cam(x.detach().clone().requires_grad_(True), class_idx=0)[0, 0]
        finally:
            _restore_hooks(saved)
            self.model.train(was_training)
        passes = 1
        if not m.any():  # an empty CAM: say so when the score has no gradient at this image at all
            require_gradient(self.class_score, x)
            passes += 1
        with torch.no_grad():
            score = float(self.score_fn(x)[0])
        return MaskResult(_normalise(m, breast), score, float("nan"), passes, time.perf_counter() - start)


class OcclusionExplainer:
    """Occlusion sensitivity (monai.visualize.OcclusionSensitivity): score drop under a sliding patch.

    mode: what the patch becomes: "gaussian" (MONAI's default: multiplied by 1 − a
    Gaussian window, dark at its centre and unchanged at its edges; overlapping patches
    weighted by the window), "mean_patch" (the patch's own mean) or "mean_img" (the
    whole image's mean, background included: a flat grey square in the breast).
    """

    def __init__(self, score_fn: ScoreFn, mask_size: int = 24, overlap: float = 0.5, batch: int = 16,
                 mode: str = "gaussian"):
        if mode not in OCCLUSION_MODES:
            raise ValueError(f"occlusion mode {mode!r} is not one of {OCCLUSION_MODES}")
        self.score_fn, self.mask_size, self.overlap, self.batch = score_fn, mask_size, overlap, batch
        self.mode = mode

    def __call__(self, x: torch.Tensor, breast: Optional[torch.Tensor] = None) -> MaskResult:
        start = time.perf_counter()
        module = _ScoreModule(self.score_fn)
        # activate=False: MONAI's default puts the occluded scores through a sigmoid (one
        # output channel), which subtracted from the raw score below left a map of about
        # score - 1 everywhere, the lesion barely above it.
        occ = OcclusionSensitivity(module, mask_size=self.mask_size, overlap=self.overlap,
                                   n_batch=self.batch, mode=self.mode, verbose=False, activate=False)
        with torch.no_grad():
            score = float(self.score_fn(x)[0])
            occ_map = _occlusion_map(occ, x)
        drop = score - occ_map[0, 0]   # high where occluding lowers the score
        if drop.abs().max() <= FLAT_OCCLUSION * max(1.0, abs(score)):  # float rounding, scaled up to 1
            drop = torch.zeros_like(drop)  # by _normalise, had been drawn as the explanation
        passes = 1 + module.images  # the unoccluded score and every occluded image
        return MaskResult(_normalise(drop, breast), score, float("nan"), passes, time.perf_counter() - start)


def _occlusion_map(occ: OcclusionSensitivity, x: torch.Tensor) -> torch.Tensor:
    """MONAI's occlusion map, without the warning its indexing raises: MONAI 1.6.1's
    OcclusionSensitivity indexes tensors with lists (occlusion_sensitivity.py, lines 140, 193 and
    199), which torch warns is deprecated, four times an image on a user's terminal. The maps are
    what tests/test_explain.py's occlusion tests expect; only this one warning is hidden, here."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence for multidimensional indexing",
                                category=UserWarning)
        occ_map, _ = occ(x)
    return occ_map


class IntegratedGradientsExplainer:
    """Integrated gradients (Sundararajan et al. 2017) from a baseline image (default black)."""

    def __init__(self, score_fn: ScoreFn, steps: int = 32, baseline: float = 0.0):
        self.score_fn, self.steps, self.baseline = score_fn, steps, baseline

    def __call__(self, x: torch.Tensor, breast: Optional[torch.Tensor] = None) -> MaskResult:
        start = time.perf_counter()
        base = torch.full_like(x, self.baseline)
        total = torch.zeros_like(x)
        for k in range(1, self.steps + 1):
            xi = (base + (k / self.steps) * (x - base)).requires_grad_(True)
            grad, = torch.autograd.grad(self.score_fn(xi).sum(), xi)
            total += grad
        passes = self.steps
        if not total.any():  # nothing along the path: an empty map, when it should be an error
            require_gradient(self.score_fn, x)
            passes += 1
        attribution = ((x - base) * total / self.steps)[0, 0]
        with torch.no_grad():
            score = float(self.score_fn(x)[0])
        return MaskResult(_normalise(attribution, breast), score, float("nan"), passes, time.perf_counter() - start)
