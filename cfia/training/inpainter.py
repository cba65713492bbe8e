"""Train the learned inpainter on lesion-free tissue crops (`cfia train inpainter`).

An epoch is `crops_per_epoch` random crops; the crops, holes, augmentation and noise of
epoch e are drawn from generators seeded with (seed, e), so a fixed seed gives the same
weights, and --resume from the checkpoint of epoch e continues exactly where an
uninterrupted run would be. Single-threaded CPU torch is bit-reproducible; CUDA is not.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from explain.inpaint import CHECKPOINT_FORMAT, LearnedInpainter, TeleaInpainter
from explain.inpaint_net import DEFAULT_WIDTHS, GatedUNet

from ..files import sha256
from .crops import CropSampler, add_texture, augment
from .holes import random_hole
from .inpaint_losses import TextureLoss
from ..manifest import DataError, read_manifest
from .checkpoint import read_checkpoint
from .classifier import _device
from .data import check_held_apart, data_changes, folder_fingerprint
from .mammo_io import load_folder
from .progress import run_left
from .torch_settings import keeps_torch_settings

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    epochs: int = 10                   # passes of crops_per_epoch crops
    seed: int = 0
    crops_per_epoch: int = 2048
    batch_size: int = 8
    crop_size: int = 96                # training crop side in pixels
    scales: tuple = (1.0, 0.5)         # image scales crops are taken at
    input_size: Optional[tuple] = None  # crops from the classifier's input of this size (the node's grid)
    edge_fraction: float = 0.2         # crops straddling the skin line
    coverage: tuple = (0.05, 0.4)      # hole fraction of a crop
    lr: float = 5e-4                   # Adam learning rate of epoch 1
    lr_decay: float = 0.7              # lr of epoch e = max(lr * lr_decay**e, lr / 10)
    widths: tuple = DEFAULT_WIDTHS
    val_fraction: float = 0.1          # held-out images when no --val-data is given
    val_crops: int = 64                # held-out crops with fixed holes for the report
    clip: float = 1.0                  # gradient norm clipping
    threads: int = 1
    device: str = "cpu"
    loss: dict = field(default_factory=dict)  # TextureLoss weights overriding the defaults
    aug_texture: float = 0.0           # fraction of crops given extra tissue texture
    texture_amplitude: tuple = (0.3, 2.0)  # its s.d., x the crop's breast pixel s.d.


def _batch(sampler: CropSampler, rng: np.random.Generator, n: int, opts: TrainOptions):
    crops, holes = [], []
    for _ in range(n):
        crop, is_edge = sampler.sample(rng)
        crop = augment(crop, is_edge, rng)
        if opts.aug_texture > 0 and rng.random() < opts.aug_texture:  # off: the old random stream
            crop = add_texture(crop, rng, opts.texture_amplitude)
        crops.append(crop)
        holes.append(random_hole(rng, opts.crop_size, opts.crop_size, opts.coverage))
    return torch.from_numpy(np.stack(crops)[:, None]), torch.from_numpy(np.stack(holes)[:, None])


def _epoch_rngs(seed: int, epoch: int):
    return np.random.default_rng([seed, epoch]), torch.Generator().manual_seed(seed * 100003 + epoch)


def heldout_report(net: GatedUNet, sampler: CropSampler, opts: TrainOptions) -> dict:
    """Learned vs Telea on `val_crops` fixed held-out crops and holes (their breast part)."""
    from cfia.bench.inpaint_metrics import summarise

    rng = np.random.default_rng([opts.seed, 10**6])
    crops, holes = [], []
    for _ in range(opts.val_crops):  # no augmentation: held-out tissue as it is
        crops.append(sampler.sample(rng)[0])
        holes.append(random_hole(rng, opts.crop_size, opts.crop_size, opts.coverage))
    crops, holes = torch.from_numpy(np.stack(crops)[:, None]), torch.from_numpy(np.stack(holes)[:, None])
    learned = LearnedInpainter.from_network(net, device=opts.device)
    out = {}
    for name, inp in (("learned", learned), ("telea", TeleaInpainter())):
        filled = inp(crops, holes).numpy()
        rows = [tissue_metrics(filled[i, 0], crops[i, 0].numpy(), holes[i, 0].numpy() > 0.5) for i in range(len(crops))]
        out[name] = summarise([r for r in rows if r is not None])
    return out


def tissue_metrics(filled: np.ndarray, crop: np.ndarray, hole: np.ndarray, min_pixels: int = 16):
    """hole_metrics on the hole's breast pixels (> 0.02) only; None when it holds fewer than
    min_pixels. An edge crop's hole in the air has no texture to keep, and its ratio (any
    fill over ~0) once made one crop of 64 carry the report's mean texture (215 against a
    median of 0.68; models/inpainter.md)."""
    from cfia.bench.inpaint_metrics import hole_metrics

    tissue = hole & (crop > 0.02)
    return hole_metrics(filled, crop, tissue) if int(tissue.sum()) >= min_pixels else None


# Options a resumed run may change: more epochs, another machine.
RESUMABLE_CHANGES = ("epochs", "threads", "device")


def _check_resumable(saved: dict, now: dict, saved_data: dict, data: dict) -> None:
    """A resumed run must continue the same training, not quietly mix two: the same options
    and data (folder fingerprints; checkpoints before the thirty-sixth session hold none)."""
    differ = [] if not saved_data else [*data_changes("data", saved_data["data"], data["data"]),
                                        *data_changes("val_data", saved_data["val_data"], data["val_data"])]
    differ += [f"{k} {saved.get(k)!r} (now {now.get(k)!r})" for k in sorted(saved.keys() | now.keys())
               if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k)]
    if differ:
        raise ValueError("--resume: the checkpoint was trained with other options: " + ", ".join(differ)
                         + "; give the same ones, or another --out")
    if saved.get("threads") != now["threads"]:  # CPU kernels split their sums by thread
        log.warning("--resume: --threads %d, the checkpoint's run used %s: the weights will not be bit-identical "
                    "to an uninterrupted run", now["threads"], saved.get("threads"))


def _read(folder, lesion_free_only: bool, input_size, progress: bool) -> tuple[list, list]:
    """load_folder behind a bar: a site's thousands of detector-size images take minutes."""
    from tqdm import tqdm

    total = sum(not (lesion_free_only and r.label) for r in read_manifest(folder))
    with tqdm(total=total, desc=f"read {Path(folder).name}", unit="img", disable=not progress) as bar:
        return load_folder(folder, lesion_free_only=lesion_free_only, input_size=input_size, progress=bar.update)


@keeps_torch_settings
def train(data: str | Path, out: str | Path, opts: TrainOptions, val_data: str | Path | None = None,
          resume: bool = False, progress: bool = True) -> dict:
    """Train, checkpoint each epoch to out/inpainter.ckpt, write out/inpainter.pt and a report."""
    if not 0 <= opts.aug_texture <= 1:
        raise ValueError(f"--aug-texture {opts.aug_texture}: must be a fraction in [0, 1]")
    opts = replace(opts, device=str(_device(opts.device)))  # no CUDA: stop now, not after loading
    torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / "inpainter.ckpt"
    # What can be checked without the images is checked before they are read.
    fingerprints = {"data": [folder_fingerprint(data)], "val_data": [folder_fingerprint(val_data)] if val_data else []}
    ck = None
    if resume:  # first: a resumed run with other data says which
        if not ckpt_path.is_file():
            raise DataError(f"--resume: no checkpoint {str(ckpt_path)!r}")
        ck = read_checkpoint(ckpt_path, opts.device)
        _check_resumable(json.loads(ck["options"]), json.loads(json.dumps(asdict(opts))),  # tuples as lists
                         json.loads(ck.get("data", "{}")), fingerprints)
    images, val_images, skipped = _split(data, val_data, opts, progress)
    sampler = CropSampler(images, opts.crop_size, tuple(opts.scales), opts.edge_fraction)
    val_sampler = CropSampler(val_images, opts.crop_size, tuple(opts.scales), opts.edge_fraction)

    net = GatedUNet(tuple(opts.widths)).to(opts.device)
    loss_fn = TextureLoss(**opts.loss).to(opts.device)
    optim = torch.optim.Adam(net.parameters(), lr=opts.lr)
    steps_per_epoch = max(1, opts.crops_per_epoch // opts.batch_size)
    start, history = 0, []
    if ck is not None:
        net.load_state_dict(ck["state_dict"])
        optim.load_state_dict(ck["optimizer"])
        start, history = int(ck["epoch"]), json.loads(ck["history"])
    t0 = time.time()
    for epoch in range(start, opts.epochs):
        net.train()
        for group in optim.param_groups:  # depends on the epoch only, so --resume with more epochs is exact
            group["lr"] = max(opts.lr * opts.lr_decay ** epoch, opts.lr / 10)
        totals = _train_epoch(net, loss_fn, optim, sampler, opts, epoch, steps_per_epoch, progress)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(totals)), "seconds": round(time.time() - t0, 1)})
        log.info("epoch %d: %s; %s", epoch + 1, json.dumps(history[-1]),
                 run_left(t0, epoch + 1 - start, opts.epochs - epoch - 1))
        tmp = ckpt_path.with_suffix(".tmp")  # written whole, then renamed: an interruption keeps the last one
        torch.save({"epoch": epoch + 1, "state_dict": net.state_dict(), "optimizer": optim.state_dict(),
                    "history": json.dumps(history), "options": json.dumps(asdict(opts)),
                    "data": json.dumps(fingerprints)}, tmp)
        tmp.replace(ckpt_path)
    report = _export(net, out, opts, history, val_sampler)
    report.update(train_images=len(images), heldout_images=len(val_images), skipped=skipped)
    (out / "inpainter.report.json").write_text(json.dumps(report, indent=2))
    return report


def _split(data, val_data, opts: TrainOptions, progress: bool) -> tuple[list, list, list]:
    """(training images, held-out lesion-free images, skipped files): --val-data's, or a
    seeded val_fraction of --data's, never an image on both sides."""
    if val_data is not None:
        check_held_apart([data], [val_data], val_lesion_free=True)
    images, skipped = _read(data, False, opts.input_size, progress)
    if val_data is not None:
        val_images, skipped_val = _read(val_data, True, opts.input_size, progress)
        skipped += skipped_val
    else:
        n_val = max(1, int(round(len(images) * opts.val_fraction))) if len(images) > 1 else 0
        order = np.random.default_rng(opts.seed).permutation(len(images))
        val_images = [images[i] for i in order[:n_val]]
        images = [images[i] for i in order[n_val:]]
    # Positives contribute crops away from their lesion; label-0 images everywhere.
    if not images:
        raise DataError(f"no readable training images in {str(data)!r}")
    shared = {str(Path(m.source).resolve()) for m in images} & {str(Path(m.source).resolve()) for m in val_images}
    if shared:  # --val-data was checked above; a file listed twice can land on both sides of the split
        raise DataError(f"{str(data)!r} lists {len(shared)} image(s) more than once (e.g. {sorted(shared)[0]}): "
                        "held out and trained on, the held-out report would not be held apart")
    if not val_images:  # a report on training images must not be called held-out
        raise DataError(f"no lesion-free held-out images in {str(val_data)!r}" if val_data is not None else
                        f"{str(data)!r}: at least 2 readable images are needed (one is held out for the report)")
    return images, val_images, skipped


def _train_epoch(net, loss_fn, optim, sampler, opts: TrainOptions, epoch: int, steps: int,
                 progress: bool) -> list[float]:
    """One epoch's steps, drawn from the epoch's own generators (so --resume is exact); the losses."""
    from tqdm import tqdm

    rng, gen = _epoch_rngs(opts.seed, epoch)
    totals = []
    bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{opts.epochs}", disable=not progress, unit="step")
    for _ in bar:
        target, hole = _batch(sampler, rng, opts.batch_size, opts)
        noise = torch.randn(target.shape, generator=gen)
        target, hole, noise = target.to(opts.device), hole.to(opts.device), noise.to(opts.device)
        pred = net(target * (1 - hole), hole, noise)
        loss, parts = loss_fn(pred, target, hole)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), opts.clip)
        optim.step()
        totals.append(float(loss.detach()))
        bar.set_postfix(loss=f"{np.mean(totals[-20:]):.4f}", l1=f"{parts['l1']:.4f}", energy=f"{parts['energy']:.3f}")
    return totals


def _export(net, out: Path, opts: TrainOptions, history: list, val_sampler) -> dict:
    """out/inpainter.pt (on the CPU) and the report's model part, with the held-out metrics."""
    final = out / "inpainter.pt"
    net = net.cpu().eval()
    torch.save({"format": CHECKPOINT_FORMAT, "arch": {"name": "GatedUNet", "widths": list(opts.widths)},
                "state_dict": net.state_dict(), "options": json.dumps(asdict(opts))}, final)
    opts_cpu = TrainOptions(**{**asdict(opts), "device": "cpu"})
    return {"model": str(final), "sha256": sha256(final), "parameters": sum(p.numel() for p in net.parameters()),
            "options": asdict(opts), "history": history, "heldout": heldout_report(net, val_sampler, opts_cpu)}
