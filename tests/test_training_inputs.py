"""What training draws and reads: random holes stay within their coverage range; `cfia train
average` mixes by the given weights and refuses a negative one; the augmentation's vertical
flip keeps the chest wall on its side, contrast changes about each image's mean, the lesion
masks move with the image, correlated
noise has the s.d. asked for; the preprocessing cache is rebuilt when a label, a mask or a
file's modification time changes; a resumed run sees changed images as a change, and
lesion_weight as part of the run it continues; the AUC interval is the central 95 % of
resamples that keep the positives' and negatives' counts."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from cfia.manifest import Record
from cfia.training import average, data
from cfia.training.augment import AugmentOptions, augment
from cfia.training.classifier import (TrainOptions, _run_definition, auc_interval, roc_auc,
                                      stratified_resamples)
from cfia.training.holes import random_hole

STILL = dict(p_vflip=0.0, max_rotate_deg=0.0, scale=(1.0, 1.0), max_translate=0.0, gamma=(1.0, 1.0),
             contrast=(1.0, 1.0), brightness=0.0, p_blur=0.0, noise_std=(0.0, 0.0))


def test_random_holes_cover_a_fraction_within_the_range():
    for seed in range(12):
        hole = random_hole(np.random.default_rng(seed), 64, 64, coverage=(0.05, 0.1))
        assert 0.05 <= hole.mean() <= 0.1, seed


def test_average_mixes_by_the_given_weights_and_refuses_a_negative_one():
    a, b = {"w": torch.zeros(3), "n": torch.tensor(4)}, {"w": torch.ones(3), "n": torch.tensor(9)}
    out = average.average_states([a, b], [0.25, 0.75])
    assert torch.allclose(out["w"], torch.full((3,), 0.75)) and int(out["n"]) == 4
    with pytest.raises(ValueError, match="must be >= 0"):
        average.check_weights(["a.pt", "b.pt"], [-0.5, 1.5])


def _image():
    x = torch.zeros(1, 1, 16, 12)
    x[..., 2:5, 1:3] = 0.8  # top left: flipped vertically it goes to the bottom left
    return x + 0.1


def test_the_vertical_flip_keeps_the_chest_wall_on_its_side():
    x = _image()
    out = augment(x, torch.Generator().manual_seed(0), AugmentOptions(**dict(STILL, p_vflip=1.0)))
    assert torch.allclose(out, x.flip(-2), atol=1e-5)


def test_contrast_changes_about_each_images_mean():
    x = torch.cat([_image(), 0.5 * _image() + 0.3])  # two images, two means
    out = augment(x, torch.Generator().manual_seed(0), AugmentOptions(**dict(STILL, contrast=(0.5, 0.5))))
    mean_in, mean_out = x.mean(dim=(2, 3), keepdim=True), out.mean(dim=(2, 3), keepdim=True)
    assert torch.allclose(mean_out, mean_in, atol=1e-5)
    assert torch.allclose(out - mean_out, 0.5 * (x - mean_in), atol=1e-5)


def _centre(t: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> (B, 2): each image's centre of mass as a fraction of its height and width."""
    h, w = t.shape[-2:]
    ys = (torch.arange(h, dtype=t.dtype) + 0.5) / h
    xs = (torch.arange(w, dtype=t.dtype) + 0.5) / w
    total = t.sum(dim=(1, 2, 3))
    return torch.stack([(t.sum(dim=(1, 3)) * ys).sum(1) / total, (t.sum(dim=(1, 2)) * xs).sum(1) / total], 1)


def test_the_lesion_masks_get_the_images_geometric_transform():
    """The deep supervision's masks (any resolution) must stay on the lesion through the
    flip, rotation, scale and shift, or --lesion-weight trains on places without one."""
    x = torch.full((8, 1, 96, 72), 0.1)
    x[..., 20:32, 12:24] = 0.9  # a bright lesion, top left
    masks = torch.zeros(8, 1, 48, 36)
    masks[..., 10:16, 6:12] = 1.0  # the same place at half the resolution
    opts = AugmentOptions(**dict(STILL, p_vflip=0.5, max_rotate_deg=10.0, scale=(0.9, 1.1), max_translate=0.1))
    out, moved = augment(x, torch.Generator().manual_seed(1), opts, masks=masks)
    lesion = (out - 0.1).clamp(min=0)
    assert float((_centre(lesion) - _centre(x - 0.1)).abs().max()) > 0.05  # the transform moved it
    assert float((_centre(moved) - _centre(lesion)).abs().max()) < 0.01


def test_correlated_noise_has_the_sd_asked_for():
    x = torch.full((4, 1, 64, 64), 0.5)
    opts = AugmentOptions(**dict(STILL, noise_std=(0.02, 0.02), p_noise_corr=1.0, noise_corr_sigma=(2.0, 2.0)))
    out = augment(x, torch.Generator().manual_seed(0), opts)
    assert float((out - 0.5).std()) == pytest.approx(0.02, rel=0.1)


def _records(tmp_path, label=1, mask_text="m1"):
    img, mask = tmp_path / "a.dcm", tmp_path / "a_mask.png"
    if not img.exists():
        img.write_bytes(b"x" * 100)
    if not mask.exists() or mask.read_text() != mask_text:
        mask.write_text(mask_text)
    return [Record(img, label, mask)]


def test_the_cache_key_changes_with_a_label_a_mask_or_a_files_time(tmp_path):
    key = data._cache_key(_records(tmp_path), (64, 48))
    assert data._cache_key(_records(tmp_path, label=0), (64, 48)) != key
    other_mask = _records(tmp_path, mask_text="m2")  # same size, rewritten: a coarse file-system
    st = other_mask[0].mask.stat()  # clock (kernels before 6.13, NFS) may give it the same time
    os.utime(other_mask[0].mask, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert data._cache_key(other_mask, (64, 48)) != key
    records = _records(tmp_path)
    st = records[0].path.stat()
    os.utime(records[0].path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same size, rewritten
    assert data._cache_key(records, (64, 48)) != key


def test_a_resumed_run_sees_changed_images_and_lesion_weight():
    saved = [{"folder": "/d", "manifest": "m", "files": "f1"}]
    now = [{"folder": "/d", "manifest": "m", "files": "f2"}]
    assert data.data_changes("--data", saved, now) == ["--data /d: its images or masks changed (size or "
                                                      "modification time)"]
    one, two = (_run_definition(TrainOptions(data=[], lesion_weight=w)) for w in (1.0, 0.5))
    assert one != two


def test_auc_resamples_keep_the_counts_and_the_interval_is_the_central_95_percent():
    rng = np.random.default_rng(0)
    labels = np.array([1] * 8 + [0] * 20)
    scores = rng.normal(labels * 1.0, 1.0)
    for idx in stratified_resamples(labels, resamples=5):
        assert (labels[idx] == 1).sum() == 8 and (labels[idx] == 0).sum() == 20
    aucs = [roc_auc(scores[i], labels[i]) for i in stratified_resamples(labels, 300, 0)]
    want = [round(float(v), 4) for v in np.percentile(aucs, [2.5, 97.5])]
    assert auc_interval(scores, labels, resamples=300) == want


def test_the_exported_classifier_is_the_best_validation_epochs(tmp_path):
    from explain.classifier import build_network
    from cfia.training.classifier import DEFAULT_ARGS, _cpu_state, _export

    args = dict(DEFAULT_ARGS, channels=[4, 8, 8], subunits=1)
    torch.manual_seed(0)
    best_model = build_network("MammoNet", args)
    torch.save(_cpu_state(best_model), tmp_path / "classifier.best.pt")
    last = build_network("MammoNet", args)  # other weights: the run's last epoch
    opts = TrainOptions(data=[], network_args=args, input_size=(64, 48))
    meta = _export(last, opts, tmp_path, [{}, {}, {}], {"auc": 0.9, "epoch": 2}, torch.device("cpu"))
    saved = torch.load(tmp_path / "classifier.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in _cpu_state(best_model).items())
    assert meta["selected"].startswith("epoch 2 ")
