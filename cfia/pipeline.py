"""One mammogram in, an explanation and its DICOM result objects out.

The composition root's glue: config -> loaded models (once) -> preprocess ->
explainer -> saliency on the source grid -> dicom_out builders. `cfia explain`,
`cfia evaluate` and the node's workers all go through `Pipeline`.
"""
from __future__ import annotations

import hashlib
import json
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from pydicom.dataset import Dataset

from dicom_out import AlgorithmInfo, Explanation, UnsupportedSource, build_results, check_source
from dicom_out.model import LO_MAX
from explain import metrics
from explain.baselines import GradCAMExplainer, IntegratedGradientsExplainer, OcclusionExplainer
from explain.classifier import load_classifier
from explain.counterfactual import CounterfactualExplainer, MaskResult, NoGradient
from explain.inpaint import make_inpainter
from explain.perturbation import BlurPerturbation, InpaintPerturbation
from explain.preprocess import display_values
from explain.region import sufficient_region
from listener.spool import encode

from . import config as config_mod
from .config import CALL_THRESHOLD, METHODS, Config, ExplainerConfig
from .dicom_io import SourceImage, from_dataset
from .files import content_digest


@dataclass
class Result:
    method: str
    saliency: np.ndarray        # float32 [0,1], source rows x columns
    region: np.ndarray          # bool, source grid
    score: float                # classifier probability before
    score_after_deletion: float  # with the region replaced by inpainted tissue
    passes: int
    seconds: float
    display: np.ndarray         # the source as float [0,1] display values (for overlays)
    input_saliency: np.ndarray  # the map on the classifier input grid
    region_forwards: int = 0    # forward-only passes spent keeping the sufficient region
    withheld: str = ""          # why the region is not shown (see presented); region then empty
    logit: float = float("nan")        # the explained class's log-odds before, and with the whole
    logit_after: float = float("nan")  # region deleted: p saturates at 1.0 long before they do
    caveat: str = ""            # why the call itself is less to be trusted (CAVEAT_IMPLANT), shown beside it


# Why presented() shows no region; the GSPS note and `cfia explain` say it.
WITHHELD_NEGATIVE = "the classifier's call is negative"
WITHHELD_NOT_LOWER = "replacing the region did not lower the score"
WITHHELD_EMPTY_MAP = "the map is empty: the method found nothing in the image that raises the explained score"
# Said beside the call where the source says a breast implant is in the field: the shipped
# classifier calls half of the normal breasts with one positive (docs/models.md, "A breast
# implant and a biopsy clip"). The explanation still shows what the call rests on.
CAVEAT_IMPLANT = "breast implant in view: the classifier was not trained on implant views and calls many normal ones positive"


def presented(result: Result) -> Result:
    """The result as the objects, the overlay and `cfia explain` show it: no region for a
    negative call (nothing was found, and an outline reads as a finding), nor for a region
    whose replacement does not lower the score (it holds none of the evidence). The map is
    kept; `cfia evaluate` measures the method's own region, before this. A positive call whose
    map is empty (Grad-CAM's weighted activations all below zero for the class's raw logit)
    says so, rather than leaving no region unexplained."""
    if result.score < CALL_THRESHOLD:
        reason = WITHHELD_NEGATIVE
    elif result.region.any() and not _lowered(result):
        reason = WITHHELD_NOT_LOWER
    elif not result.saliency.any():
        reason = WITHHELD_EMPTY_MAP
    else:
        return result
    return replace(result, region=np.zeros_like(result.region), score_after_deletion=result.score, withheld=reason)


def _lowered(result: Result) -> bool:
    """Deleting the region lowered the probability, or else the log-odds (where measured): a
    sure model's probability is 1.0 in float32 with and without a region that took its logit
    from 19 to 17."""
    return result.score_after_deletion < result.score or result.logit_after < result.logit


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("explainer.device: 'cuda' was asked for but no CUDA device is available")
    return name


class Pipeline:
    """Loads the configured models once; explains images with any method."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        c, e = cfg.models.classifier, cfg.explainer
        self.device = resolve_device(e.device)
        self.classifier = load_classifier(c.kind, c.path, c.network, c.network_args, c.class_index,
                                          c.input_size, c.output, in_channels=c.channels, device=self.device,
                                          input_range=c.input_range, mean=c.mean, std=c.std)
        self.classifier.set_precision(e.precision)
        i = cfg.models.inpainter
        if i.kind == "learned":
            self.inpainter = make_inpainter("learned", i.path, device=self.device, seed=e.seed,
                                            texture_match=i.texture_match, noise_scale=i.noise_scale)
        else:
            self.inpainter = make_inpainter(i.kind, device=self.device)
        self.model_version = content_digest(c.path)[:16] if Path(c.path).exists() else "unversioned"
        self.settings = settings_digest(cfg)
        self.algorithm(e.method).check()  # fails at start-up, not after every image's explanation
        self._gradcam_checked: set[str] = set()  # layers Grad-CAM has run on
        self.explainer(e.method)  # a method the models cannot serve (gradcam's layer) fails now, not per study

    # -- scores ---------------------------------------------------------------
    def score_fn(self):
        """The differentiable score the optimiser and gradient baselines use."""
        clf = self.classifier
        if self.cfg.explainer.score == "logit":
            return lambda x: clf.score(x)
        if self.cfg.explainer.score == "cross_entropy":
            # -log(1 - p) = softplus(log-odds): monotone in p like the probability, but its
            # slope does not vanish when the classifier is sure (p near 1), and it is
            # bounded below, unlike the logit, so deleting more stops paying off at p near 0.
            # The log-odds, not a multi-class network's raw logit, which can fall while p rises.
            return lambda x: torch.nn.functional.softplus(clf.log_odds(x))
        return lambda x: clf.probability(x)

    def probability(self, x: torch.Tensor) -> float:
        return self._scores(x)[0]

    # -- explainers -----------------------------------------------------------
    def explainer(self, method: str, e: Optional[ExplainerConfig] = None):
        e = e or self.cfg.explainer
        if method in ("cf", "blur"):
            if method == "cf":
                size = self.cfg.models.classifier.input_size
                if 2 * e.tile > min(size):  # a hole pattern's period must fit, or one hole is most of the image
                    raise ValueError(f"explainer.tile: {e.tile} is not allowed; expected at most half the "
                                     f"classifier's input size {size[0]}x{size[1]}, {min(size) // 2}")
                pert = InpaintPerturbation(self.inpainter, tile=e.tile, refresh_every=e.refresh_every,
                                           blend=e.blend, blend_sigma=e.blend_sigma, tilings=e.tilings)
            else:
                pert = BlurPerturbation(sigma=e.blur_sigma)
            return CounterfactualExplainer(
                self.score_fn(), pert, objective=e.objective, area_mode=e.area_mode,
                area_weight=e.area_weight, target_area=e.target_area, area_min=e.area_min, tv_weight=e.tv_weight,
                mask_scale=e.mask_scale, max_passes=e.max_passes, tolerance=e.tolerance, patience=e.patience,
                learning_rate=e.learning_rate,
                lr_schedule=e.lr_schedule, lr_half_life=e.lr_half_life,
                init=e.init, init_mode=e.init_mode, init_floor=e.init_floor,
                seed=e.seed, report_fn=self.classifier.probability, preservation_weight=e.preservation_weight,
                init_power=e.init_power, preservation_target=e.preservation_target,
                reseed_every=e.reseed_every, reseed_init=e.reseed_init, saliency=e.saliency,
                saliency_sigma=e.saliency_sigma, score_region=False)  # explain() measures every method's deletion
        # The baselines explain the class's own logit, as their reference implementations do, or
        # the log-odds cf explains (explainer.baseline_score): unbounded either way, where a
        # probability saturated near 1 hides both the drop under one occluded patch and the
        # gradient along most of IG's path.
        target = self.classifier.log_odds if e.baseline_score == "log_odds" else self.classifier.score
        if method == "gradcam":
            gradcam = GradCAMExplainer(self.classifier.model, e.gradcam_layer, target, self.score_fn())
            if e.gradcam_layer not in self._gradcam_checked:  # once a layer: a forward and backward more
                rows, cols = self.cfg.models.classifier.input_size
                gradcam.check(torch.zeros(1, 1, rows, cols, device=self.device))
                self._gradcam_checked.add(e.gradcam_layer)
            return gradcam
        if method == "occlusion":
            size = self.cfg.models.classifier.input_size
            if e.occlusion_size > min(size):  # MONAI's occlusion needs the patch inside the image
                raise ValueError(f"explainer.occlusion_size: {e.occlusion_size} is not allowed; expected at most "
                                 f"the classifier's input size {size[0]}x{size[1]}")
            return OcclusionExplainer(target, mask_size=e.occlusion_size, mode=e.occlusion_mode)
        if method == "ig":
            return IntegratedGradientsExplainer(target, steps=e.ig_steps)
        raise ValueError(f"method {method!r} is not one of {', '.join(METHODS)}")

    # -- one image ------------------------------------------------------------
    def explain(self, src: SourceImage, method: Optional[str] = None) -> Result:
        method = method or self.cfg.explainer.method
        start = time.perf_counter()
        pre = self._preprocess(src)
        x = pre.image[None].to(self.device)
        breast = (pre.breast[None] > 0.5).float().to(self.device)
        try:
            out = self.explainer(method)(x, breast)
        except NoGradient:
            p = self.probability(x)
            if p >= CALL_THRESHOLD:
                raise
            # A negative call so sure that its score is flat: no evidence anywhere, a map of zeros.
            out = MaskResult(mask=torch.zeros_like(x[0, 0]), score=p, score_after=p, passes=1, seconds=0.0)
        input_map = (out.mask if out.saliency is None else out.saliency).detach().float().cpu().numpy()
        saliency = on_source(pre.geometry, input_map)
        region = metrics.salient_region(saliency, self.cfg.explainer.map_region_threshold(method),
                                        self._min_region_source(pre.geometry))
        # Always report the probability, whatever score the method explained.
        p, logit = self._scores(x)
        # One measure for every method (blur's own deletion, a blurred region, is not it).
        region, after, forwards, logit_after = self._region_deleted(x, pre.geometry, region, p >= CALL_THRESHOLD)
        return Result(method, saliency, region, p, float(after), out.passes, time.perf_counter() - start,
                      display_image(src), input_map, forwards, logit=logit, logit_after=logit_after,
                      caveat=CAVEAT_IMPLANT if src.implant else "")

    def _region_deleted(self, x, geometry, region: np.ndarray, called: bool) -> tuple[np.ndarray, float, int, float]:
        """The region to report (source grid), the probability once it is deleted, the forward
        passes spent choosing it (its sufficient components, when configured and the call is
        positive: a negative call's region is withheld, `presented`), and the log-odds with the
        whole region deleted (the one reported unless the deletion took the call away)."""
        def without(r: np.ndarray) -> float:
            return self._score_without(x, geometry, r)

        after, logit_after = self._scores_without(x, geometry, region)
        e = self.cfg.explainer
        if not (e.sufficient_region and called):
            return region, after, 0, logit_after
        kept = sufficient_region(region, after, without, CALL_THRESHOLD, e.sufficient_margin, e.sufficient_forwards)
        return kept.region, kept.score_after, kept.forwards, logit_after

    def _preprocess(self, src: SourceImage):
        return src.to_input(self.cfg.models.classifier.input_size)

    def _min_region_source(self, geometry) -> int:
        """min_region_pixels is given on the input grid; scale it to source pixels."""
        sr, sc = geometry.scale
        return int(round(self.cfg.explainer.min_region_pixels / max(sr * sc, 1e-12)))

    def score_without(self, src: SourceImage, region: np.ndarray) -> float:
        """The probability once `region` (bool, source grid) is replaced by inpainted
        healthy tissue: what every method's score_after_deletion reports."""
        pre = self._preprocess(src)
        return self._score_without(pre.image[None].to(self.device), pre.geometry, region)

    def _score_without(self, x: torch.Tensor, geometry, region_source: np.ndarray) -> float:
        return self._scores_without(x, geometry, region_source)[0]

    def _scores_without(self, x: torch.Tensor, geometry, region_source: np.ndarray) -> tuple[float, float]:
        """The probability and log-odds with the region deleted: the source-grid region mapped
        to the input grid; exactly its pixels take the inpainter's fill (the hole it fills is
        the region grown by 2 px, for context); every other pixel is the image's."""
        region_in = geometry.to_input(region_source.astype(np.float32)) > 0.5
        region = torch.from_numpy(region_in)[None, None].to(x.device)
        if not region.any():
            return self._scores(x)
        perturbation = InpaintPerturbation(self.inpainter)
        filled = perturbation.fill_region(x, region, x)
        return self._scores(perturbation.apply(x, region.float(), filled))

    def _scores(self, x: torch.Tensor) -> tuple[float, float]:
        """The explained class's probability and log-odds, from one forward pass."""
        with torch.no_grad():
            out = self.classifier(x)
            return float(self.classifier.probability_of(out)[0]), float(self.classifier.log_odds_of(out)[0])

    def process(self, ds) -> dict:
        """A pydicom Dataset -> the enabled DICOM result objects (object type -> Dataset).
        A source that cannot carry them raises dicom_out.UnsupportedSource before any
        explaining is spent on it."""
        check_source(ds)
        try:
            result = self.explain(from_dataset(ds))
        except NoGradient as exc:  # the same every time: not one to retry
            raise UnsupportedSource(f"{exc} (and the classifier calls it positive)") from None
        return self.result_objects(ds, presented(result))

    def result_objects(self, ds, result: Result) -> dict:
        """build_objects; any failure as UnsupportedSource, whose text quotes no header value."""
        try:
            objects = self.build_objects(ds, result)
            for built in objects.values():
                _check_writable(built)
            return objects
        except UnsupportedSource:
            raise
        except Exception as exc:  # the builders are deterministic: retrying cannot help
            raise UnsupportedSource(_build_failure(exc)) from exc

    def build_objects(self, ds, result: Result) -> dict:
        enabled = [k for k, on in vars(self.cfg.outputs).items() if on]
        info = self.algorithm(result.method)
        expl = Explanation(saliency=result.saliency, region=result.region, score=result.score,
                           score_after_deletion=result.score_after_deletion,
                           positive=bool(result.score >= CALL_THRESHOLD), withheld=result.withheld,
                           caveat=result.caveat)
        return build_results(ds, expl, info, enabled)

    def algorithm(self, method: str) -> AlgorithmInfo:
        return AlgorithmInfo(model_name=model_name(self.cfg.models.classifier.path),
                             model_version=self.model_version, method=method, settings=self.settings)


def model_name(path: str) -> str:
    """The classifier's file (or bundle folder) name as the objects' model name. It goes
    into a DICOM LO, which holds 64 characters and no backslash: a longer name is cut
    (the weights' digest, model_version, is what identifies the model)."""
    name = Path(path).name.replace("\\", "_")
    return name if len(name) <= LO_MAX else name[:LO_MAX - 3] + "..."


def settings_digest(cfg: Config) -> str:
    """What else shapes an explanation than the classifier's weights: the network they are
    built into (kind monai_network), how the classifier is fed and read, the inpainter (its
    weights too) and the explainer's settings, but not the device they run on. Part of every
    result UID, so a changed setting gives new objects instead of overwriting those of the old one."""
    fed = {k: v for k, v in config_mod.to_dict(cfg.models.classifier).items() if k not in ("kind", "path", "network", "network_args")}
    if cfg.models.classifier.kind == "monai_network":  # the network the weights go into: arguments
        # that add no weights (a ResNet's no_max_pool) change what the same file computes
        fed.update(network=cfg.models.classifier.network, network_args=cfg.models.classifier.network_args)
    inpainter = config_mod.to_dict(cfg.models.inpainter)
    if cfg.models.inpainter.kind != "learned":  # the path and the learned-only keys are not read
        inpainter = {"kind": cfg.models.inpainter.kind}
    elif Path(cfg.models.inpainter.path).exists():
        inpainter["path"] = content_digest(cfg.models.inpainter.path)
    explainer = {k: v for k, v in config_mod.to_dict(cfg.explainer).items() if k != "device"}
    text = json.dumps({"classifier": fed, "inpainter": inpainter, "explainer": explainer}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_writable(ds) -> None:
    """Write the object's header to nowhere: a value copied from the source with a VR it cannot
    be written in (StationName as UL) built fine and failed only when the node wrote the object,
    which it took for a worker error and explained the image again. The pixel data is left
    out: it is the builders' own, and tens of MB at detector size."""
    header = Dataset()
    header.file_meta = ds.file_meta
    for element in ds:
        if element.tag.group != 0x7FE0:
            header.add(element)
    encode(header)  # as the node's spool writes the objects


def _build_failure(exc: Exception) -> str:
    """Why the objects could not be built, without the exception's text: a builder's
    message may quote a header value (a patient's name or birth date), and this reason
    goes to the log and the dead-letter folder. The type and the place say what failed."""
    last = traceback.extract_tb(exc.__traceback__)[-1]
    return (f"the result objects cannot be built from this source's header ({type(exc).__name__} at "
            f"{Path(last.filename).name}:{last.lineno} in {last.name})")


def on_source(geometry, input_map: np.ndarray) -> np.ndarray:
    """A map on the classifier's input grid -> float32 in [0, 1] on the source grid."""
    return np.clip(geometry.to_source(input_map), 0.0, 1.0).astype(np.float32)


def display_image(src: SourceImage) -> np.ndarray:
    """Source pixels as float [0,1] for looking at: the classifier's polarity (dense
    tissue bright), windowed to the image's 1st-99.8th percentiles."""
    v = display_values(src.pixels, src.photometric, src.for_processing)
    lo, hi = np.percentile(v, [1, 99.8])
    return np.clip((v - lo) / max(hi - lo, 1e-6), 0, 1)
