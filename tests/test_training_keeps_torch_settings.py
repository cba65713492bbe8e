"""Training and --eval-only set torch's thread count and deterministic mode, and seed the random
generators, for their run, and put them back after: a caller in the same process (a notebook,
the rest of this test suite) keeps its own settings instead of running single-threaded in
deterministic mode, and its own random draws instead of seed 0's."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from cfia.cli import main
from cfia.training.torch_settings import keeps_torch_settings


@pytest.fixture
def settings():
    """The caller's settings: 2 threads, deterministic mode off; restored after the test."""
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(False)
    yield lambda: (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    torch.set_num_threads(before[0])
    torch.use_deterministic_algorithms(before[1])


def test_classifier_training_and_eval_only_leave_the_callers_settings(phantom_dir, tmp_path, settings):
    assert main(["train", "classifier", "--data", str(phantom_dir), "--out", str(tmp_path / "c"), "--epochs", "1",
                 "--input-size", "64x48", "--threads", "1", "--quiet"]) == 0
    assert settings() == (2, False)
    assert main(["train", "classifier", "--eval-only", "--data", str(phantom_dir), "--model",
                 str(tmp_path / "c" / "classifier.pt"), "--input-size", "64x48", "--threads", "1", "--quiet"]) == 0
    assert settings() == (2, False)


def _draws() -> tuple:
    return random.random(), float(np.random.random()), float(torch.rand(1))


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def test_training_leaves_the_callers_random_draws(phantom_dir, tmp_path, settings):
    _seed_all(999)
    expected = _draws()
    _seed_all(999)
    assert main(["train", "classifier", "--data", str(phantom_dir), "--out", str(tmp_path / "c"), "--epochs", "1",
                 "--input-size", "64x48", "--threads", "1", "--quiet"]) == 0
    assert _draws() == expected


def test_inpainter_training_leaves_the_callers_settings(phantom_dir, tmp_path, settings):
    assert main(["train", "inpainter", "--data", str(phantom_dir), "--out", str(tmp_path / "i"), "--epochs", "1",
                 "--crops-per-epoch", "4", "--batch-size", "2", "--crop-size", "32", "--val-crops", "2",
                 "--threads", "1", "--quiet"]) == 0
    assert settings() == (2, False)


def test_the_settings_come_back_when_the_run_fails(settings):
    @keeps_torch_settings
    def failing():
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True, warn_only=True)
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        failing()
    assert settings() == (2, False)
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
