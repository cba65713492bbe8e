"""`cfia train average`: one classifier whose weights are a weighted mean of several.

Weight-space ensembling (WiSE-FT, Wortsman et al., CVPR 2022; model soups, ICML 2022):
models fine-tuned from the same starting weights stay in one basin of the loss, so their
mean is itself a good model, and the mean of a model and its fine-tune often keeps more
of each than either alone (e.g. the default model and a fine-tune with `--aug-texture`:
docs/models.md, "Averaging weights"). Models trained apart from different starts do not
average; nothing here can tell, so measure the result (`--eval-only`,
`python -m cfia.bench.classifiers`).

Writes OUT/classifier.pt, .ts and .json as `cfia train classifier` does; the card names
each source's path, sha256 and weight.
"""
from __future__ import annotations

from pathlib import Path

import torch

from explain.classifier import build_network

from ..files import sha256
from .classifier import export_model, read_weights


def average_states(states: list, weights: list) -> dict:
    """sum_i weights[i] * states[i] for floating-point tensors; integer buffers
    (BatchNorm's batch counts) are the first state's."""
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            out[key] = sum(w * s[key].to(torch.float64) for w, s in zip(weights, states)).to(first.dtype)
        else:
            out[key] = first.clone()
    return out


def check_weights(paths: list, weights) -> list:
    """The mixing weights: equal when not given; otherwise one per model, >= 0, summing to 1
    (a mean, not an extrapolation)."""
    if len(paths) < 2:
        raise ValueError("--models: give two or more state dicts to average")
    if weights is None:
        return [1.0 / len(paths)] * len(paths)
    if len(weights) != len(paths):
        raise ValueError(f"--weights: {len(weights)} weights for {len(paths)} models")
    if min(weights) < 0 or abs(sum(weights) - 1.0) > 1e-6:
        raise ValueError(f"--weights {' '.join(map(str, weights))}: must be >= 0 and sum to 1")
    return [float(w) for w in weights]


def average(paths: list, weights, out: str, network: str, network_args: dict, input_size: tuple,
            command: str = "") -> dict:
    weights = check_weights(paths, weights)
    model = build_network(network, network_args)
    states = [read_weights(str(p), model, "--models") for p in paths]
    model.load_state_dict(average_states(states, weights))
    sources = [{"path": str(p), "sha256": sha256(p), "weight": w}
               for p, w in zip(paths, weights)]
    meta = {"network": network, "network_args": network_args, "input_size": list(input_size),
            "class_index": 1, "output": "logits", "averaged_from": sources, "command": command}
    export_model(model, Path(out), meta)
    return meta
