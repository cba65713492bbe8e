"""Can a small detector that scans the breast tell faint masses from lumps of tissue?

docs/models.md puts the classifier's remaining errors in a search: the faint masses are
visible where they are, but a normal breast holds hundreds of mass-sized places, and
some lump among them scores as high. This bench trains what that page names as the next
step, a detector for that search, and measures whether it finds the faint masses better:

- a small fully convolutional network (one logit per 16x16 input cell), trained on 96x96
  crops of the classifier's input (the node's preprocessing): crops centred on each lesion
  (jittered, flipped) against crops of lesion-free tissue, from the fourth epoch on also
  the places the detector itself scores highest in normal training breasts (hard
  negatives: the lumps);
- scanned over each held-out breast: the image's score is its largest cell logit;
- AUC per contrast bin (each bin's positives against all negatives) beside the shipped
  classifier's on the same preprocessed images, and the two scores combined (a logistic
  regression fitted on the validation folder, applied to the held-out one).

    python -m cfia.bench.scanner --train /work/data-cls/train --val /work/data-cls/val --heldout /work/data-cls/heldout
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from ..manifest import read_manifest
from ..training.classifier import contrast_bins, roc_auc
from ..training.data import load_many

CROP, CELL = 96, 16


class Scanner(nn.Module):
    """Four stages of two 3x3 convolutions and a 2x2 max pool; a 1x1 convolution gives
    one logit per 16x16 cell (receptive field 76 px)."""

    def __init__(self, channels=(16, 32, 48, 64)) -> None:
        super().__init__()
        layers, c = [], 1
        for k in channels:
            for c_in in (c, k):
                layers += [nn.Conv2d(c_in, k, 3, padding=1), nn.BatchNorm2d(k), nn.ReLU()]
            layers.append(nn.MaxPool2d(2))
            c = k
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(c, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


def crop_score(net: Scanner, crops: torch.Tensor) -> torch.Tensor:
    """A crop's logit: the largest of its four central cells, whose 76-px receptive
    fields lie inside the 96-px crop (cells nearer its edge would see zero padding
    where the scan of a whole image sees tissue)."""
    return net(crops)[:, 0, 2:4, 2:4].amax(dim=(1, 2))


def lesion_centres(coverage: torch.Tensor) -> list[tuple[float, float]]:
    """Input-grid (row, col) of each connected lesion component of a coverage map on the
    1/8 grid (load_many's masks), coverage-weighted."""
    cov = coverage[0].float().numpy()
    labels, n = ndimage.label(cov > 0.05)
    centres = ndimage.center_of_mass(cov, labels, range(1, n + 1))
    return [(8 * r + 3.5, 8 * c + 3.5) for r, c in centres]


def crops_at(image: torch.Tensor, centres, rng: np.random.Generator, jitter: int = 0) -> torch.Tensor:
    """(N, 1, CROP, CROP) crops of a (1, H, W) image around (row, col) centres; zero outside."""
    h = CROP // 2
    padded = F.pad(image.float(), (h, h, h, h))
    out = []
    for r, c in centres:
        r = int(round(r)) + int(rng.integers(-jitter, jitter + 1))
        c = int(round(c)) + int(rng.integers(-jitter, jitter + 1))
        r = min(max(r, 0), image.shape[-2] - 1)
        c = min(max(c, 0), image.shape[-1] - 1)
        out.append(padded[:, r:r + CROP, c:c + CROP])
    return torch.stack(out)


def breast_places(image: torch.Tensor, rng: np.random.Generator, n: int, avoid=(), min_dist: float = 40.0):
    """n random (row, col) inside the breast (normalised intensity > 0.05), at least
    min_dist from every place in `avoid`."""
    rows, cols = np.nonzero(image[0].float().numpy() > 0.05)
    picks = []
    while len(picks) < n and len(rows):
        i = int(rng.integers(len(rows)))
        p = (float(rows[i]), float(cols[i]))
        if all((p[0] - a) ** 2 + (p[1] - b) ** 2 >= min_dist ** 2 for a, b in avoid):
            picks.append(p)
    return picks


def scan(net: Scanner, images: torch.Tensor, batch: int = 16) -> np.ndarray:
    """Each image's largest cell logit over the cells whose centre lies in the breast."""
    net.eval()
    scores = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = images[i:i + batch].float()
            logits = net(x)[:, 0]
            centre = x[:, 0, CELL // 2::CELL, CELL // 2::CELL][:, :logits.shape[1], :logits.shape[2]]
            logits = logits.masked_fill(centre <= 0.05, float("-inf"))
            scores.append(logits.flatten(1).amax(1).numpy())
    return np.concatenate(scores)


def hard_places(net: Scanner, images: torch.Tensor, per_image: int = 3):
    """The `per_image` highest-scoring breast cells of each image, as (image index, row, col)."""
    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), 16):
            x = images[i:i + 16].float()
            logits = net(x)[:, 0]
            centre = x[:, 0, CELL // 2::CELL, CELL // 2::CELL][:, :logits.shape[1], :logits.shape[2]]
            logits = logits.masked_fill(centre <= 0.05, float("-inf"))
            top = logits.flatten(1).topk(per_image, dim=1).indices
            for j, idx in enumerate(top.tolist()):
                for k in idx:
                    r, c = divmod(k, logits.shape[2])
                    out.append((i + j, CELL * r + CELL / 2, CELL * c + CELL / 2))
    return out


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if torch.rand(1, generator=gen) < 0.5:
        x = x.flip(-1)
    if torch.rand(1, generator=gen) < 0.5:
        x = x.flip(-2)
    gamma = float(torch.empty(1).uniform_(0.8, 1.25, generator=gen))
    return x.clamp(0, 1) ** gamma


def train(images, coverage, labels, epochs: int, seed: int, log=print) -> Scanner:
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = Scanner()
    optim = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    pos_idx = [i for i in range(len(labels)) if labels[i] == 1]
    neg_idx = [i for i in range(len(labels)) if labels[i] == 0]
    centres = {i: lesion_centres(coverage[i]) for i in pos_idx}
    hard: list = []
    for epoch in range(epochs):
        t0 = time.time()
        pos = torch.cat([crops_at(images[i], centres[i], rng, jitter=6) for i in pos_idx if centres[i]])
        neg = [crops_at(images[i], breast_places(images[i], rng, 1), rng) for i in neg_idx]
        neg += [crops_at(images[i], breast_places(images[i], rng, 1, centres[i]), rng) for i in pos_idx]
        if hard:
            neg += [crops_at(images[i], [(r, c)], rng, jitter=4) for i, r, c in hard]
        neg = torch.cat(neg)
        x = torch.cat([pos, neg])
        y = torch.cat([torch.ones(len(pos)), torch.zeros(len(neg))])
        perm = torch.randperm(len(y), generator=gen)
        net.train()
        total = 0.0
        for s in range(0, len(y), 128):
            idx = perm[s:s + 128]
            loss = F.binary_cross_entropy_with_logits(crop_score(net, _augment(x[idx], gen)), y[idx])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            total += float(loss.detach()) * len(idx)
        if epoch >= 2:  # mine the lumps the detector now confuses with masses
            pick = rng.choice(len(neg_idx), size=min(600, len(neg_idx)), replace=False)
            chosen = [neg_idx[k] for k in pick]
            hard = [(chosen[i], r, c) for i, r, c in hard_places(net, images[chosen])]
        log(f"epoch {epoch + 1}/{epochs}: loss {total / len(y):.4f}, {len(pos)} lesion crops, "
            f"{len(neg)} tissue crops, {time.time() - t0:.0f} s")
    recalibrate(net, x)
    return net


def recalibrate(net: Scanner, crops: torch.Tensor) -> None:
    """BatchNorm statistics of the final weights, averaged over the last epoch's crops:
    the running averages still hold their initial values after a short run and mix in
    older weights' statistics after a long one."""
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches below
    net.train()
    with torch.no_grad():
        for s in range(0, len(crops), 256):
            net(crops[s:s + 256])
    for m in bns:
        m.momentum = 0.1
    net.eval()


def classifier_logits(model_path: str, images: torch.Tensor) -> np.ndarray:
    model = torch.jit.load(model_path, map_location="cpu").eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), 32):
            z = model(images[i:i + 32].float())
            out.append((z[:, 1] - z[:, 0]).numpy())
    return np.concatenate(out)


def by_contrast(scores, labels, contrasts) -> dict:
    s, y = np.asarray(scores), np.asarray(labels)
    out = {"all": round(roc_auc(s, y), 4)}
    for name, sel in contrast_bins(contrasts):
        both = (sel & (y == 1)) | (y == 0)
        out[name] = round(roc_auc(s[both], y[both]), 4)
    return out


def _fit_combination(a, b, y):
    """Logistic regression of y on the two standardised scores (a few Newton steps)."""
    stats = [(float(np.mean(v)), float(np.std(v)) or 1.0) for v in (a, b)]
    X = np.column_stack([np.ones(len(y))] + [(v - m) / s for v, (m, s) in zip((a, b), stats)])
    w = np.zeros(3)
    for _ in range(25):
        p = 1 / (1 + np.exp(-X @ w))
        H = X.T @ (X * (p * (1 - p))[:, None]) + 1e-6 * np.eye(3)
        w -= np.linalg.solve(H, X.T @ (p - y))
    return lambda a2, b2: w[1] * (a2 - stats[0][0]) / stats[0][1] + w[2] * (b2 - stats[1][0]) / stats[1][1], w


def _load(folder: str, size):
    images, coverage, labels, files = load_many([folder], size, progress=False)
    meta = {str(it.path): it for it in read_manifest(Path(folder))}
    contrasts = [meta[f].contrast for f in files]
    return images, coverage, labels.numpy(), contrasts


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cfia.bench.scanner", description=__doc__.split("\n\n")[0])
    p.add_argument("--train", required=True, help="cfia phantom folder to train the detector on")
    p.add_argument("--val", required=True, help="cfia phantom folder to fit the combination on")
    p.add_argument("--heldout", required=True, help="cfia phantom folder to measure on")
    p.add_argument("--classifier", default="models/classifier.ts", help="TorchScript classifier to compare with")
    p.add_argument("--input-size", default="512x352")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the figures as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    size = tuple(int(v) for v in args.input_size.split("x"))
    t0 = time.time()
    tr_x, tr_cov, tr_y, _ = _load(args.train, size)
    net = train(tr_x, tr_cov, tr_y, args.epochs, args.seed, log=lambda m: print(m, file=sys.stderr, flush=True))
    del tr_x, tr_cov
    res = {"command": "python -m cfia.bench.scanner " + " ".join(argv or sys.argv[1:])}
    scores = {}
    for name, folder in (("val", args.val), ("heldout", args.heldout)):
        x, _, y, contrasts = _load(folder, size)
        scores[name] = (scan(net, x), classifier_logits(args.classifier, x), y, contrasts)
    combine, w = _fit_combination(*scores["val"][:3])
    det, cls, y, contrasts = scores["heldout"]
    res["heldout"] = {"detector": by_contrast(det, y, contrasts), "classifier": by_contrast(cls, y, contrasts),
                      "combined": by_contrast(combine(det, cls), y, contrasts)}
    res["combination_weights"] = [round(float(v), 3) for v in w]
    res["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(res, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
