"""`cfia train classifier`: train, checkpoint, resume and evaluate the default classifier.

Outputs in --out (default models/):
  classifier.pt    state dict of the selected weights (best validation AUC, else last epoch)
  classifier.ts    the same model traced to TorchScript (what the node loads by default)
  classifier.json  network name + args, input size, training command, metrics
  classifier.ckpt  full training state (weights, optimiser, schedule, RNG), written every
                   epoch; --resume continues from it. Not for git.
"""
from __future__ import annotations

import json
import logging
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from explain.classifier import build_network, error_line, load_classifier, misfit, unreadable_weights

from ..config import DEFAULT_CLASSIFIER_INPUT
from ..manifest import DataError, read_manifest
from .augment import AugmentOptions, augment
from .checkpoint import read_checkpoint
from .data import check_held_apart, data_changes, folder_fingerprint, load_many
from .progress import run_left
from .torch_settings import keeps_torch_settings

log = logging.getLogger("cfia.training")

DEFAULT_NETWORK = "MammoNet"
DEFAULT_ARGS = {"in_channels": 1, "num_classes": 2, "channels": [16, 24, 32, 64, 96], "subunits": 2, "dropout": 0.2}


@dataclass
class TrainOptions:
    data: list
    out: str = "models"
    val_data: list = field(default_factory=list)
    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    input_size: tuple = DEFAULT_CLASSIFIER_INPUT
    network: str = DEFAULT_NETWORK
    network_args: dict = field(default_factory=lambda: dict(DEFAULT_ARGS))
    resume: bool = False
    init: Optional[str] = None         # start from these weights (fine-tuning); fresh optimiser
    stop_after: Optional[int] = None   # end this run (checkpointed) after this many epochs
    device: str = "cpu"
    threads: int = 2
    workers: int = 2
    cache_dir: Optional[str] = None
    augment: bool = True
    aug_noise: float = 0.03            # largest s.d. of the added white noise (input scale)
    aug_noise_corr: float = 0.0        # fraction of samples whose noise is spatially correlated
    aug_markers: float = 0.0           # fraction of samples given radiopaque skin markers
    aug_texture: float = 0.0           # fraction of samples given extra tissue texture
    aug_implant: float = 0.0           # fraction of samples given a breast implant
    aug_clips: float = 0.0             # fraction of samples given metal clips in the breast
    lesion_weight: float = 1.0
    progress: bool = True
    command: str = ""


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    from scipy.stats import rankdata

    s, y = np.asarray(scores, float), np.asarray(labels, int)
    pos, neg = int((y == 1).sum()), int((y == 0).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(s)  # ties get their average rank
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def stratified_resamples(labels, resamples: int = 2000, seed: int = 0):
    """Bootstrap index arrays over the images, positives and negatives resampled apart
    (their counts fixed)."""
    y = np.asarray(labels, int)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    rng = np.random.default_rng(seed)
    for _ in range(resamples):
        yield np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])


def auc_interval(scores, labels, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> list:
    """Percentile bootstrap interval of the AUC, positives and negatives resampled
    separately (their counts fixed), so a reader can tell how far apart two AUCs on the
    same few hundred images must be to mean anything."""
    s, y = np.asarray(scores, float), np.asarray(labels, int)
    if not (y == 1).any() or not (y == 0).any():
        return [None, None]
    aucs = [roc_auc(s[idx], y[idx]) for idx in stratified_resamples(y, resamples, seed)]
    tail = (1 - level) / 2 * 100
    return [round(float(v), 4) for v in np.percentile(aucs, [tail, 100 - tail])]


def report(probs, labels, threshold: float = 0.5) -> dict:
    p, y = np.asarray(probs, float), np.asarray(labels, int)
    pred = p >= threshold
    auc = roc_auc(p, y)  # NaN with one class: null in the JSON, which has no NaN
    return {"n": int(len(y)), "positives": int(y.sum()), "auc": None if math.isnan(auc) else round(auc, 4),
            "accuracy": round(float((pred == y).mean()), 4),
            "sensitivity": round(float(pred[y == 1].mean()), 4) if (y == 1).any() else None,
            "specificity": round(float((~pred[y == 0]).mean()), 4) if (y == 0).any() else None,
            "threshold": threshold}


def report_by_kind(probs, labels, kinds, threshold: float = 0.5) -> dict:
    """Per lesion kind (the manifest's `kind`): its positives against all negatives."""
    p, y, k = np.asarray(probs, float), np.asarray(labels, int), np.asarray(kinds, object)
    negatives = p[y == 0]
    out = {}
    for kind in sorted(set(k[(y == 1) & (k != "")])):
        out[kind] = _against_negatives(p[(y == 1) & (k == kind)], negatives, threshold)
    return out


def _against_negatives(pos: np.ndarray, negatives: np.ndarray, threshold: float) -> dict:
    """A subset of the positives ranked against all negatives, and its sensitivity."""
    both = np.concatenate([pos, negatives])
    truth = np.concatenate([np.ones(len(pos), int), np.zeros(len(negatives), int)])
    return {"n": int(len(pos)), "auc_vs_negatives": round(roc_auc(both, truth), 4),
            "sensitivity": round(float((pos >= threshold).mean()), 4)}


# Bins of the manifest's lesion contrast (units of the tissue s.d.); the phantom draws
# masses at 0.8-2.5 and calcifications at 2.5-6.
CONTRAST_EDGES = (0.8, 1.2, 1.6, 2.0, 2.5, 6.0)


def contrast_bins(contrasts, edges=CONTRAST_EDGES):
    """(name "lo-hi", bool array) per bin of `edges`: [lo, hi), the last bin closed; None is in none."""
    c = np.array([np.nan if v is None else v for v in contrasts], float)
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        last = i == len(edges) - 2
        yield f"{lo:g}-{hi:g}", (c >= lo) & ((c <= hi) if last else (c < hi))


def report_by_contrast(probs, labels, contrasts, edges=CONTRAST_EDGES, threshold: float = 0.5) -> dict:
    """Positives binned by lesion contrast (contrast_bins), each against all negatives."""
    p, y = np.asarray(probs, float), np.asarray(labels, int)
    negatives = p[y == 0]
    out = {}
    for name, in_bin in contrast_bins(contrasts, edges):
        inside = (y == 1) & in_bin
        if inside.any():
            out[name] = _against_negatives(p[inside], negatives, threshold)
    return out


@torch.no_grad()
def predict(model, images: torch.Tensor, device, batch_size: int = 64) -> np.ndarray:
    was = model.training
    model.eval()
    try:
        out = []
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].to(device, torch.float32)
            out.append(torch.softmax(model(x), 1)[:, 1].float().cpu())
        return torch.cat(out).numpy()
    finally:
        model.train(was)


def _device(name: str) -> torch.device:
    """--device as a torch device, checked before any work (the inpainter's too)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: not a torch device (cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available")
    return device


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def _check_options(opts: TrainOptions) -> None:
    if opts.aug_noise < 0:
        raise ValueError(f"--aug-noise {opts.aug_noise}: must be >= 0")
    for flag, value in (("--aug-noise-corr", opts.aug_noise_corr), ("--aug-markers", opts.aug_markers),
                        ("--aug-texture", opts.aug_texture), ("--aug-implant", opts.aug_implant),
                        ("--aug-clips", opts.aug_clips)):
        if not 0 <= value <= 1:
            raise ValueError(f"{flag} {value}: must be a fraction in [0, 1]")


def _cosine_with_warmup(optim, steps_per_epoch: int, epochs: int):
    """Linear warm-up over the first epoch (at most a tenth of the run), then a cosine to zero."""
    total = steps_per_epoch * epochs
    warmup = min(steps_per_epoch, total // 10 + 1)
    return torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))


# What a resumed run must share with the run it continues (epochs may grow, the machine change).
RUN_DEFINING = ("data", "val_data", "batch_size", "lr", "weight_decay", "seed", "input_size", "network",
                "network_args", "init", "augment", "aug_noise", "aug_noise_corr", "aug_markers", "aug_texture",
                "aug_implant", "aug_clips", "lesion_weight")
# Run-defining options added since checkpoints began to hold them: their value in an older run.
ADDED_LATER = {"aug_implant": 0.0, "aug_clips": 0.0}


def _run_definition(opts: TrainOptions) -> dict:
    d = {k: getattr(opts, k) for k in RUN_DEFINING}
    # Each folder by path, manifest and files: rows appended to a manifest are other data.
    d["data"] = [folder_fingerprint(f) for f in opts.data]
    d["val_data"] = [folder_fingerprint(f) for f in opts.val_data]
    d["input_size"] = list(opts.input_size)
    return json.loads(json.dumps(d))  # as the checkpoint holds it


def _resume_state(ckpt_path: Path, device, opts: TrainOptions, run: dict) -> dict:
    """The last checkpoint, read before the data is preprocessed; stops when the run it
    continues was defined otherwise (checkpoints before the thirty-fourth session: not checked)."""
    state = read_checkpoint(ckpt_path, device)
    saved, differ = state.get("run"), []
    if saved is not None:
        differ = data_changes("data", saved.get("data", []), run["data"])
        differ += data_changes("val_data", saved.get("val_data", []), run["val_data"])
        differ += [f"{k} {saved.get(k, ADDED_LATER.get(k))!r} (now {run[k]!r})" for k in sorted(run)
                   if k not in ("data", "val_data") and saved.get(k, ADDED_LATER.get(k)) != run[k]]
    if differ:
        raise ValueError(f"--resume: {ckpt_path} continues a run with other options: " + ", ".join(differ)
                         + "; give the same ones, or another --out")
    if state.get("threads", opts.threads) != opts.threads:  # CPU kernels split their sums by thread
        log.warning("--resume: --threads %d, the checkpoint's run used %d: the weights will not be bit-identical "
                    "to an uninterrupted run", opts.threads, state["threads"])
    return state


def _resume(state: dict, model, optim, sched, gen: torch.Generator, device) -> tuple[int, list, dict]:
    """Every state a run carries (weights, optimiser, schedule, random streams) from the
    checkpoint; returns (epochs done, history, best)."""
    model.load_state_dict(state["model"])
    optim.load_state_dict(state["optim"])
    sched.load_state_dict(state["sched"])
    gen.set_state(state["gen"])
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"])
    return state["epoch"], state["history"], state["best"]


def _save_checkpoint(ckpt_path: Path, state: dict) -> None:
    tmp = ckpt_path.with_suffix(".tmp")  # written whole, then renamed: an interruption leaves the last one
    torch.save(state, tmp)
    tmp.replace(ckpt_path)


def _train_epoch(model, optim, sched, gen: torch.Generator, data: tuple, opts: TrainOptions,
                 aug: AugmentOptions, epoch: int, device) -> float:
    """One pass over the training set in the generator's order; returns the mean loss."""
    from tqdm import tqdm

    images, masks, labels = data
    model.train()
    steps = math.ceil(len(labels) / opts.batch_size)
    perm = torch.randperm(len(labels), generator=gen)
    bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{opts.epochs}", unit="batch",
               disable=not opts.progress, file=sys.stderr)
    run_loss, n = 0.0, 0
    for step in bar:
        idx = perm[step * opts.batch_size:(step + 1) * opts.batch_size].to(images.device)
        x = images[idx].to(device, torch.float32)
        y = labels[idx].to(device)
        m = masks[idx].to(device, torch.float32)
        if opts.augment:
            x, m = augment(x, gen, aug, masks=m)
        loss = _loss(model, x, y, m, opts.lesion_weight)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        sched.step()
        run_loss += float(loss.detach()) * len(idx)
        n += len(idx)
        bar.set_postfix(loss=f"{run_loss / n:.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
    bar.close()
    return run_loss / n


@keeps_torch_settings
def train(opts: TrainOptions) -> dict:
    _check_options(opts)
    torch.set_num_threads(max(1, opts.threads))
    device = _device(opts.device)
    _seed_everything(opts.seed)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "classifier.ckpt"
    if not opts.val_data:
        log.warning("no --val-data: no epoch is selected, the last one is exported")

    # What can be checked without the images is checked before their preprocessing (minutes).
    check_held_apart(opts.data, opts.val_data)
    run = _run_definition(opts)
    model = build_network(opts.network, opts.network_args).to(device)
    _check_outputs(model, opts, device)
    resuming = opts.resume and ckpt_path.exists()
    state = _resume_state(ckpt_path, device, opts, run) if resuming else None
    if opts.init and not resuming:
        model.load_state_dict(read_weights(opts.init, model))
        log.info("starting from the weights in %s", opts.init)
    if opts.resume and not resuming:
        log.warning("--resume: no checkpoint at %s; starting from scratch", ckpt_path)

    images, masks, labels, _ = load_many(opts.data, opts.input_size, opts.cache_dir, opts.workers, opts.progress,
                                         training=True)
    if device.type == "cuda":  # a few GB at most: keep the whole set on the GPU
        images, masks, labels = images.to(device), masks.to(device), labels.to(device)
    val = load_many(opts.val_data, opts.input_size, opts.cache_dir, opts.workers, opts.progress) if opts.val_data else None
    if int(labels.sum()) in (0, len(labels)):
        raise DataError(f"--data: all {len(labels)} readable images are label {int(labels[0])}; "
                        "a classifier needs positives and negatives")
    log.info("training on %d images (%d positive)%s", len(labels), int(labels.sum()),
             f", validating on {len(val[1])}" if val else "")

    optim = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    sched = _cosine_with_warmup(optim, math.ceil(len(labels) / opts.batch_size), opts.epochs)
    gen = torch.Generator().manual_seed(opts.seed)
    start, history, best = 0, [], {"auc": -1.0, "epoch": None}
    if state is not None:
        start, history, best = _resume(state, model, optim, sched, gen, device)
        log.info("resumed from %s at epoch %d", ckpt_path, start)

    aug = AugmentOptions(noise_std=(0.0, opts.aug_noise), p_noise_corr=opts.aug_noise_corr,
                         p_markers=opts.aug_markers, p_texture=opts.aug_texture,
                         p_implant=opts.aug_implant, p_clips=opts.aug_clips)
    t0 = time.time()
    end = opts.epochs if opts.stop_after is None else min(opts.epochs, start + opts.stop_after)
    for epoch in range(start, end):
        loss = _train_epoch(model, optim, sched, gen, (images, masks, labels), opts, aug, epoch, device)
        entry = {"epoch": epoch + 1, "loss": round(loss, 5), "seconds": round(time.time() - t0, 1)}
        if val is not None:
            entry["val"] = report(predict(model, val[0], device), val[2].cpu().numpy())
            if entry["val"]["auc"] is not None and entry["val"]["auc"] > best["auc"]:
                best = {"auc": entry["val"]["auc"], "epoch": epoch + 1}
                torch.save(_cpu_state(model), out / "classifier.best.pt")
        history.append(entry)
        log.info("epoch %d: %s; %s", epoch + 1, json.dumps(entry),
                 run_left(t0, epoch + 1 - start, opts.epochs - epoch - 1))
        _save_checkpoint(ckpt_path, {
            "model": model.state_dict(), "optim": optim.state_dict(), "sched": sched.state_dict(),
            "gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None,
            "epoch": epoch + 1, "history": history, "best": best,
            "network": opts.network, "network_args": opts.network_args, "run": run, "threads": opts.threads})

    if end < opts.epochs:
        log.info("stopped after epoch %d of %d; continue with --resume", end, opts.epochs)
    return _export(model, opts, out, history, best, device)


def read_weights(path: str, model, option: str = "--init") -> dict:
    """The state dict in `path` (a classifier.pt, or a classifier.ckpt's weights),
    checked against `model`; a mismatch names the differing keys."""
    try:  # weights_only: a state dict or checkpoint needs no pickled code, and a file from elsewhere runs none
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - what a non-torch file raises varies (UnpicklingError, RuntimeError, ...)
        raise ValueError(f"{option}: cannot read a state dict from {path}: {unreadable_weights(exc)}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise ValueError(f"{option} {path}: not a state dict")
    differ = misfit(model, state)
    if differ:
        raise ValueError(f"{option} {path}: weights do not fit the network ({differ}); "
                         "give the --network and --network-args they were trained with")
    return state


def _check_outputs(model, opts: TrainOptions, device) -> None:
    """The network takes one-channel images and gives a logit per class, the lesion class 1, as
    the loss and the export need: checked on two blank images before the preprocessing (minutes),
    not by a traceback after it. No random draw, no statistics kept: the weights are unchanged."""
    blank = torch.zeros(2, 1, *opts.input_size, device=device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(blank)
    except Exception as exc:  # noqa: BLE001 - any network's own complaint, said in one line
        raise ValueError(f"network {opts.network} on a 2x1x{opts.input_size[0]}x{opts.input_size[1]} batch "
                         f"(one-channel images): {error_line(exc)}") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2 or out.shape[1] < 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"network {opts.network} gives {shape} for a batch of 2; training needs (2, C) with "
                         "C >= 2 class logits, the lesion class 1 (e.g. out_channels or num_classes 2)")


def _loss(model, x, y, m, lesion_weight: float):
    """Cross-entropy; plus, for networks with a lesion head (MammoNet), deep supervision:
    BCE of the lesion map against 'a lesion covers this cell' from the masks."""
    if lesion_weight <= 0 or not hasattr(model, "feature_map") or not hasattr(model, "lesion"):
        return F.cross_entropy(model(x), y)
    f = model.feature_map(x)
    loss = F.cross_entropy(model.head(f), y)
    known = m.flatten(1).amin(1) >= 0  # a positive without a mask (UNKNOWN_MASK): its label only
    if not known.any():
        return loss
    lesion = model.lesion(f)[known]
    target = (F.adaptive_max_pool2d(m[known], lesion.shape[-2:]) > 0.05).float()
    return loss + lesion_weight * F.binary_cross_entropy_with_logits(lesion, target)


def _cpu_state(model) -> dict:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _export(model, opts: TrainOptions, out: Path, history, best, device) -> dict:
    """Write classifier.pt / .ts / .json from the best-validation (else last) weights."""
    best_file = out / "classifier.best.pt"
    if best.get("epoch") and best_file.exists():
        model.load_state_dict(torch.load(best_file, map_location=device, weights_only=True))
        chosen = f"epoch {best['epoch']} (best validation AUC {best['auc']})"
    else:
        chosen = f"epoch {len(history)} (last)"
    meta = {"network": opts.network, "network_args": opts.network_args, "input_size": list(opts.input_size),
            "class_index": 1, "output": "logits", "selected": chosen, "seed": opts.seed,
            "epochs": opts.epochs, "init": opts.init, "command": opts.command, "history": history}
    export_model(model, out, meta)
    return meta


def export_model(model, out: Path, meta: dict) -> None:
    """OUT/classifier.pt (state dict), .ts (traced at meta's input size) and .json (meta)."""
    out.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu").eval()
    torch.save(_cpu_state(model), out / "classifier.pt")
    example = torch.zeros(1, 1, *meta["input_size"])
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
    traced.save(str(out / "classifier.ts"))
    (out / "classifier.json").write_text(json.dumps(meta, indent=2) + "\n")


def _field(records: dict, file, name: str, default):
    record = records.get(str(file))
    return default if record is None else getattr(record, name)


@keeps_torch_settings
def score(model_path: str, data: list, input_size, kind: Optional[str] = None, network: Optional[str] = None,
          network_args: Optional[dict] = None, cache_dir=None, workers: int = 2, device: str = "cpu",
          threads: int = 2, progress: bool = True, class_index: int = 1, output: str = "logits",
          intensity: Optional[dict] = None):
    """(probabilities, labels, files) of a model file on manifest folders, through the
    run-time path: the adapter loads the file (class_index, output and `intensity`,
    load_classifier's in_channels, input_range, mean and std, as the node's config gives
    them), the images are preprocessed as the node does."""
    torch.set_num_threads(max(1, threads))
    kind = kind or ("torchscript" if str(model_path).endswith(".ts") else "monai_network")
    network = network or DEFAULT_NETWORK
    if not network_args and network == DEFAULT_NETWORK:  # another network is not shown MammoNet's arguments
        network_args = DEFAULT_ARGS
    clf = load_classifier(kind, model_path, network=network, network_args=network_args or {},
                          input_size=tuple(input_size), device=str(_device(device)), class_index=class_index,
                          output=output, **(intensity or {}))
    images, _, labels, files = load_many(data, input_size, cache_dir, workers, progress)
    probs = []
    with torch.no_grad():
        for i in range(0, len(images), 64):
            probs.append(clf.probability(images[i:i + 64].to(clf.device, torch.float32)).cpu())
    return torch.cat(probs).numpy(), labels, files


def evaluate(model_path: str, data: list, input_size, kind: Optional[str] = None, network: Optional[str] = None,
             network_args: Optional[dict] = None, cache_dir=None, workers: int = 2, device: str = "cpu",
             threads: int = 2, progress: bool = True, class_index: int = 1, output: str = "logits",
             intensity: Optional[dict] = None) -> dict:
    """Held-out report through the run-time path: the adapter loads the shipped file."""
    probs, labels, files = score(model_path, data, input_size, kind, network, network_args, cache_dir, workers,
                                 device, threads, progress, class_index, output, intensity)
    res = report(probs, labels.numpy())
    res["auc_ci95"] = auc_interval(probs, labels.numpy())
    records = {str(r.path): r for folder in data for r in read_manifest(folder)}
    by_kind = report_by_kind(probs, labels.numpy(), [_field(records, f, "kind", "") for f in files])
    if by_kind:
        res["by_kind"] = by_kind
    by_contrast = report_by_contrast(probs, labels.numpy(), [_field(records, f, "contrast", None) for f in files])
    if by_contrast:
        res["by_contrast"] = by_contrast
    res["model"] = str(model_path)
    res["class_index"], res["output"] = class_index, output
    res["data"] = [str(d) for d in data]
    return res
