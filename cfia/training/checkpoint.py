"""Reading a training run's checkpoint back for --resume."""
from __future__ import annotations

from pathlib import Path

import torch

from explain.classifier import unreadable_weights


def read_checkpoint(path: Path, device) -> dict:
    """The checkpoint at `path`; one line naming it when it cannot be read (cut short by a full
    disk or a copy, or not a checkpoint), where torch.load gives a traceback without the file.
    Tensors, numbers, strings and containers only (weights_only): a file that would run pickled
    code is refused, not run."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - zip, pickle and EOF errors alike
        raise ValueError(f"--resume: cannot read the checkpoint {path} ({unreadable_weights(exc)}); "
                         "to start afresh over it, the same command without --resume and with --force, "
                         "or another --out") from None
