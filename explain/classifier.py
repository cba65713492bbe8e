"""Classifier adapters: one interface over TorchScript files, MONAI bundles and
MONAI networks + state dicts.

    clf = load_classifier("torchscript", "models/classifier.ts", input_size=(512, 352))
    logits = clf(x)              # x: (B, 1, H, W) float in [0, 1] -> (B, C)
    p = clf.probability(x)       # (B,) probability of class_index, differentiable

Every loader validates the model at load time with a dummy forward at input_size:
a model that wants other input channels, or returns the wrong shape, stops with a
ValueError naming the model path, what was expected and what it got, instead of
failing in the middle of a study; so does one random at inference (dropout traced in
training mode), seen on a fixed noisy image, and one without any gradient there nor on a
blank image (rounded, sign) is warned of and marked `no_gradient`. Parameters are frozen
(requires_grad False) and the model is put in eval mode: this is inference; gradients
flow to the input only.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

__all__ = ["Classifier", "load_classifier", "load_torchscript", "load_monai_bundle", "load_monai_network",
           "build_network", "KINDS"]

KINDS = ("torchscript", "monai_bundle", "monai_network")
_log = logging.getLogger("cfia.explain")


class Classifier(nn.Module):
    """A loaded, validated classifier.

    forward(x) returns what the network returns, (B, C): logits when
    output="logits", probabilities when output="probabilities".
    probability(x) returns (B,) the probability of `class_index`: softmax over C > 1
    logits, sigmoid of a single logit (class_index 1; class_index 0 gives 1 - it),
    the column itself when the network already returns probabilities.

    x is always cfia's (B, 1, H, W) image in [0, 1]. A network trained on other
    intensities gets it adapted first: replicated to `in_channels`, mapped linearly
    onto `input_range`, then normalised by `mean` and `std` (one value, or one per
    channel), e.g. in_channels 3, input_range (0, 1), ImageNet's mean and std.
    """

    def __init__(self, model: nn.Module, class_index: int = 1, output: str = "logits",
                 input_size: tuple[int, int] = (512, 352), in_channels: int = 1, source: str = "",
                 input_range: tuple[float, float] = (0.0, 1.0), mean: Sequence[float] = (0.0,),
                 std: Sequence[float] = (1.0,)) -> None:
        super().__init__()
        if output not in ("logits", "probabilities"):
            raise ValueError(f"output must be logits or probabilities, got {output!r}")
        self.model = model
        self.class_index = int(class_index)
        self.output = output
        self.input_size = (int(input_size[0]), int(input_size[1]))
        if min(self.input_size) < 1:
            raise ValueError(f"classifier {source}: input_size {self.input_size} must be positive")
        self.in_channels = int(in_channels)
        self.source = str(source)
        self.num_classes: Optional[int] = None
        self.no_gradient = False  # validate: no gradient on its probe nor on a blank image
        self.autocast: Optional[torch.dtype] = None  # set_precision
        self._intensity = _intensity(self.in_channels, input_range, mean, std, self.source)

    def _adapt(self, x: torch.Tensor) -> torch.Tensor:
        """cfia's one-channel [0, 1] image as the network was trained to see it; the
        default (one channel, [0, 1], no normalisation) leaves x as it is."""
        if self._intensity is None:
            return x
        scale, offset = (t.to(x.device, x.dtype) for t in self._intensity)
        return x.expand(-1, self.in_channels, -1, -1) * scale + offset

    def set_precision(self, precision: str) -> "Classifier":
        """"float32" (no autocast), "bf16" or "fp16": the network runs under torch.autocast
        with that dtype on its device; outputs come back as float32."""
        dtypes = {"float32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
        if precision not in dtypes:
            raise ValueError(f"precision must be one of {', '.join(dtypes)}, got {precision!r}")
        self.autocast = dtypes[precision]
        return self

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        x = self._adapt(x)
        if self.autocast is None:
            return self.model(x)
        with torch.autocast(x.device.type, dtype=self.autocast):
            return self.model(x).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)

    def probability(self, x: torch.Tensor) -> torch.Tensor:
        return self.probability_of(self._run(x))

    def probability_of(self, out: torch.Tensor) -> torch.Tensor:
        """(B,) the explained class's probability, from the network's output."""
        if out.shape[1] == 1:
            p = out[:, 0] if self.output == "probabilities" else torch.sigmoid(out[:, 0])
            return p if self.class_index == 1 else 1.0 - p
        if self.output == "probabilities":
            return out[:, self.class_index]
        return torch.softmax(out, dim=1)[:, self.class_index]

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) the logit of class_index (log-odds for a single output): an unbounded score."""
        return self.logit_of(self._run(x))

    def logit_of(self, out: torch.Tensor) -> torch.Tensor:
        """score() from the network's output."""
        if self.output == "probabilities":
            return self._log_odds(out)
        if out.shape[1] == 1:
            return out[:, 0] if self.class_index == 1 else -out[:, 0]
        return out[:, self.class_index]

    def log_odds(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) the explained class's log-odds, log p_c - log(1 - p_c), differentiable in x."""
        return self.log_odds_of(self._run(x))

    def log_odds_of(self, out: torch.Tensor) -> torch.Tensor:
        """(B,) log p_c - log(1 - p_c) from the network's output, whatever its kind: what tells
        whether a change lowered a sure model's call, whose p is 1.0 either side. (score() is
        the raw logit of a multi-class network, which can fall while p rises.)"""
        if self.output == "probabilities" or out.shape[1] == 1:
            return self.logit_of(out)
        c = self.class_index
        return out[:, c] - torch.logsumexp(torch.cat([out[:, :c], out[:, c + 1:]], dim=1), dim=1)

    def _log_odds(self, out: torch.Tensor) -> torch.Tensor:
        """log p_c - log(1 - p_c) of a probability output. Over C > 1 classes, 1 - p_c is the
        sum of the other columns, taken as such: a sure model's p_c rounds to 1 (and a clamp
        below 1 passes no gradient) while the other classes' probabilities are still far
        from 0, so the score keeps its slope until those underflow."""
        if out.shape[1] == 1:
            # Only an exact 0 or 1 is clamped (to float's nearest): a clamp at 1e-6 had cut the
            # gradient of every p above 1 - 1e-6, which the model still had.
            info = torch.finfo(out.dtype)
            p = self.probability_of(out).clamp(info.tiny, 1 - info.eps / 2)
            return torch.log(p) - torch.log1p(-p)
        c, tiny = self.class_index, torch.finfo(out.dtype).tiny  # tiny: log(0) would give nan gradients
        rest = torch.cat([out[:, :c], out[:, c + 1:]], dim=1).sum(dim=1)
        return torch.log(out[:, c].clamp(min=tiny)) - torch.log(rest.clamp(min=tiny))

    def _column(self, out: torch.Tensor) -> torch.Tensor:
        """(B,) the network's own output for the explained class, before any clamp."""
        return out[:, 0] if out.shape[1] == 1 else out[:, self.class_index]

    @property
    def device(self) -> torch.device:
        for t in list(self.model.parameters()) + list(self.model.buffers()):
            return t.device
        return torch.device("cpu")

    def validate(self) -> "Classifier":
        """Dummy forward at input_size, at batch 2 here and batch 1 in the probes (_check_batch);
        ValueError naming the model on any mismatch."""
        rows, cols = self.input_size
        x = self._adapt(torch.zeros(2, 1, rows, cols, device=self.device))
        single = " (or C == 1)" if self.class_index in (0, 1) else ""  # one logit stands for class 0 or 1 only
        expect = f"a (B, C) output with C > {self.class_index}{single} for input (2, {self.in_channels}, {rows}, {cols})"
        try:
            with torch.no_grad():
                out = self.model(x)
        except Exception as exc:  # a wrong channel count or size surfaces here as RuntimeError
            raise ValueError(f"classifier {self.source}: expected it to accept input of shape "
                             f"(B, {self.in_channels}, {rows}, {cols}); the dummy forward failed: "
                             f"{error_line(exc)}") from None
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"classifier {self.source}: expected a tensor output, got {type(out).__name__}; "
                             "export a wrapper whose forward returns the class scores alone (B, C)")
        if out.ndim != 2 or out.shape[0] != 2:
            raise ValueError(f"classifier {self.source}: expected {expect}, got output shape {tuple(out.shape)}")
        c = out.shape[1]
        ok = (c == 1 and self.class_index in (0, 1)) or (c > 1 and 0 <= self.class_index < c)
        if not ok:
            raise ValueError(f"classifier {self.source}: class_index {self.class_index} does not fit "
                             f"{c} output class(es); expected {expect}, got output shape {tuple(out.shape)}")
        if not out.is_floating_point():
            raise ValueError(f"classifier {self.source}: expected floating-point scores, got {out.dtype} "
                             "(class indices, e.g. an argmax, cannot be explained)")
        if self.output == "probabilities" and not bool(((out >= 0) & (out <= 1)).all()):
            raise ValueError(f"classifier {self.source}: output is configured as probabilities but "
                             f"values are outside [0, 1] (min {out.min().item():.3g}, max {out.max().item():.3g})")
        if self.output == "logits" and c > 1 and _sums_to_one(out):
            _log.warning("classifier %s: its outputs lie in [0, 1] and sum to 1 over the classes, as a softmax's "
                         "do, but it is configured as logits (models.classifier.output): probabilities read as "
                         "logits give scores near 1/C; set output: probabilities if it ends in a softmax",
                         self.source)
        self.num_classes = int(c)
        probe = self._probe(rows, cols)
        self._check_repeatable(probe, self._check_gradient(probe))
        return self

    def _probe(self, rows: int, cols: int) -> torch.Tensor:
        """(1, 1, rows, cols) mid-grey noise, the same on every start (its own generator, so
        loading leaves torch's seed alone): unlike zeros, it passes a ReLU's threshold, a
        breast-mask gate and dropout."""
        noise = torch.rand(1, 1, rows, cols, generator=torch.Generator().manual_seed(0))
        return (0.25 + 0.5 * noise).to(self.device)

    def _input_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """d(the explained column)/dx at x, and the output there; ValueError when there is none."""
        x = x.detach().clone().requires_grad_(True)
        try:
            out = self._run(x)
            self._check_batch(out, x)
            self._column(out).sum().backward()
        except RuntimeError as exc:
            raise ValueError(f"classifier {self.source}: its score cannot be differentiated with respect to "
                             f"the image ({str(exc).splitlines()[0]})") from None
        if x.grad is None:
            raise ValueError(f"classifier {self.source}: its score does not depend on the image differentiably")
        return x.grad, out.detach()

    def _check_batch(self, out: torch.Tensor, x: torch.Tensor) -> None:
        """The output at batch 1, the explainers' batch, must be validate()'s batch-2 shape with
        B = 1: one ending in squeeze() passes at batch 2 and loses its batch dimension here."""
        want = (x.shape[0], self.num_classes)
        if tuple(out.shape) != want:
            raise ValueError(f"classifier {self.source}: expected output shape {want} for input "
                             f"({x.shape[0]}, {self.in_channels}, {x.shape[2]}, {x.shape[3]}), as it gave "
                             f"(2, {self.num_classes}) for a batch of 2; got output shape {tuple(out.shape)} "
                             "(a squeeze() that drops the batch dimension?)")

    def _check_gradient(self, probe: torch.Tensor) -> torch.Tensor:
        """Every explainer but occlusion differentiates the score with respect to the image:
        a model that detaches its output would fail mid-study, so fail here instead. One whose
        gradient is exactly zero on the probe and on a blank image (a rounded or sign output;
        a working model's gradient, dead on one of them, a ReLU below its threshold or a gate
        closed on air, lives on the other) is only warned of and marked `no_gradient`: scoring
        (--eval-only) and occlusion do not need a gradient, cf, blur, Grad-CAM and IG refuse
        each image where it is nil (explain.counterfactual.require_gradient), and a model dead
        on both probes may still live on mammograms (a ReLU above 0.8). The raw output is
        tested, not the clamped score, so a model merely sure of both images is not taken for
        one without a gradient. Returns the output at the probe."""
        grad, out = self._input_gradient(probe)
        self.no_gradient = not grad.any() and not self._input_gradient(torch.zeros_like(probe))[0].any()
        if self.no_gradient:
            _log.warning("classifier %s: its output has no gradient with respect to the image, neither on a "
                         "blank image nor on a noisy mid-grey one (exactly zero: a rounded, thresholded or sign "
                         "output?); cf, blur, gradcam and ig will stop on an image where it has none; occlusion "
                         "needs no gradient", self.source)
        return out

    def _check_repeatable(self, probe: torch.Tensor, out: torch.Tensor) -> None:
        """A second forward of the probe must repeat the first: a model random at inference
        explains noise. Dropout traced in training mode stays on, eval() cannot reach into a
        trace; zeros pass dropout unchanged, hence the probe. Nor may the probe's output change
        beside a blank image in its batch: BatchNorm traced in training mode normalises by the
        batch's own statistics. Two forwards more at start-up."""
        with torch.no_grad():
            again = self._run(probe)
            beside = self._run(torch.cat([probe, torch.zeros_like(probe)]))[:1]
        if not torch.allclose(out, again, rtol=1e-4, atol=1e-6, equal_nan=True):
            raise ValueError(f"classifier {self.source}: two forwards of the same image differ (by up to "
                             f"{(out - again).abs().max().item():.3g}): it is random at inference, e.g. dropout "
                             "left in training mode; call model.eval() before torch.jit.trace")
        # Loose: a GPU's TF32 convolutions may round another batch size otherwise; BatchNorm on
        # the batch's statistics moves an output by tenths.
        if not torch.allclose(out, beside, rtol=1e-2, atol=1e-2, equal_nan=True):
            raise ValueError(f"classifier {self.source}: an image's output changes with the other images in its "
                             f"batch (by up to {(out - beside).abs().max().item():.3g}), e.g. BatchNorm left in "
                             "training mode; call model.eval() before torch.jit.trace")


def _intensity(channels: int, input_range, mean, std, source: str):
    """(scale, offset), each (1, C, 1, 1), folding input_range, mean and std into one affine
    map; None for the identity, so the default path computes exactly what it always did."""
    lo, hi = (float(v) for v in input_range)
    mean, std = [float(v) for v in mean], [float(v) for v in std]
    if channels < 1 or hi <= lo or any(len(v) not in (1, channels) for v in (mean, std)) or min(std) <= 0:
        raise ValueError(f"classifier {source}: intensity settings do not fit: in_channels {channels}, "
                         f"input_range {[lo, hi]}, mean {mean}, std {std} (expected in_channels >= 1, "
                         f"input_range low < high, mean and std one value or one per channel, std > 0)")
    if channels == 1 and (lo, hi) == (0.0, 1.0) and mean == [0.0] and std == [1.0]:
        return None
    mean_t = torch.tensor(mean).expand(channels).reshape(1, channels, 1, 1)
    std_t = torch.tensor(std).expand(channels).reshape(1, channels, 1, 1)
    return (hi - lo) / std_t, (lo - mean_t) / std_t


def error_line(exc: Exception) -> str:
    """The line of an error that says what went wrong: TorchScript's first line is always
    "The following operation failed in the TorchScript interpreter", its cause the last."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    line = lines[-1] if lines and "TorchScript interpreter" in lines[0] else (lines[0] if lines else "")
    line = line.removeprefix("builtins.")  # TorchScript names a Python error by its module
    return line if re.match(r"[\w.]+(Error|Exception): ", line) else f"{type(exc).__name__}: {line}"


def unreadable_weights(exc: Exception) -> str:
    """Why torch.load(weights_only=True) refused a file, in a line. Torch's own first line
    advises loading it unsafely, which cfia offers no way to do; the class it would not
    unpickle is what tells the user what to save instead."""
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    if found:
        return (f"it holds a pickled {found.group(1)}, not tensors alone (a whole model saved with "
                "torch.save(model), or a checkpoint holding other objects): save model.state_dict() alone")
    return re.sub(r"\x1b\[[0-9;]*m", "", error_line(exc))


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise ValueError(f"classifier {path}: {what} not found")
    return path


def _sums_to_one(out: torch.Tensor) -> bool:
    """Every row of a (B, C) output in [0, 1] and summing to 1: a softmax's, not logits."""
    out = out.detach().float()
    return bool(((out >= 0) & (out <= 1)).all() and torch.allclose(out.sum(1), torch.ones_like(out[:, 0]), atol=1e-4))


def build_network(name: str, network_args: Optional[dict] = None) -> nn.Module:
    """A network by class name: cfia's own (explain.networks) or monai.networks.nets."""
    from monai.networks import nets

    from .networks import NETWORKS

    args = dict(network_args or {})
    if name in NETWORKS:
        cls = NETWORKS[name]
    elif hasattr(nets, name) and isinstance(getattr(nets, name), type):
        cls = getattr(nets, name)
    else:
        raise ValueError(f"network {name!r} is neither one of cfia's ({', '.join(NETWORKS)}) "
                         f"nor a class in monai.networks.nets")
    try:
        return cls(**args)
    except TypeError as exc:
        raise ValueError(f"network {name} does not accept network_args {args!r}: {exc}") from None


STATE_KEYS = ("model", "state_dict", "network", "model_state", "model_state_dict")  # checkpoints' usual entries


def _state_dict(obj: Any, path: Path) -> dict:
    if isinstance(obj, dict):
        for key in STATE_KEYS:
            if key in obj and isinstance(obj[key], dict):
                return obj[key]
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    held = f" with the entries {', '.join(map(str, list(obj)[:8]))}" if isinstance(obj, dict) else ""
    raise ValueError(f"classifier {path}: expected a state dict, or a checkpoint with one of the entries "
                     f"{', '.join(STATE_KEYS)}; got a {type(obj).__name__}{held}")


def _with_keys_of(model: nn.Module, state: dict) -> dict:
    """A state dict saved from a DataParallel / DistributedDataParallel wrapper has every key
    under "module."; read it into a network whose own keys have no such prefix (a network
    that is itself a wrapper keeps its "module." keys)."""
    prefixed = state and all(isinstance(k, str) and k.startswith("module.") for k in state)
    if prefixed and not any(k.startswith("module.") for k in model.state_dict()):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def misfit(model: nn.Module, state: dict) -> str:
    """How a state dict's keys and shapes differ from the network's, a few keys each (torch
    lists them all); "" when they fit."""
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    parts = []
    for what, keys in (("missing", sorted(want.keys() - have.keys())),
                       ("unexpected", sorted(have.keys() - want.keys())),
                       ("of another shape", sorted(k for k in want.keys() & have.keys() if want[k] != have[k]))):
        if keys:
            parts.append(f"{len(keys)} {what} (e.g. {', '.join(keys[:3])})")
    return "; ".join(parts)


def _saved_as(path: Path) -> Optional[str]:
    """"torchscript" or "state dict" for the zip archives torch.jit.save and torch.save write
    (a TorchScript archive holds code/ and constants.pkl), None for anything else: a config
    naming one as the other got torch's unsafe-load advice or "corrupted" from the loader."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile):
        return None
    if any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
        return "torchscript"
    return "state dict" if any(n.endswith("/data.pkl") for n in names) else None


def _load_weights(model: nn.Module, path: Path, device: str) -> None:
    if _saved_as(path) == "torchscript":
        raise ValueError(f"classifier {path}: a TorchScript file, not a state dict: load it with "
                         "models.classifier.kind: torchscript (the default kind, monai_network, "
                         "reads a state dict into models.classifier.network)")
    try:
        obj = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise ValueError(f"classifier {path}: cannot read the state dict: {unreadable_weights(exc)}") from None
    state = _with_keys_of(model, _state_dict(obj, path))
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise ValueError(f"classifier {path}: state dict does not fit the network: "
                         f"{misfit(model, state) or 'its values do not'}; "
                         "give the network and network_args it was trained with") from None


def load_torchscript(path, device: str = "cpu", **kw) -> Classifier:
    path = _require(Path(path), "TorchScript file")
    if _saved_as(path) == "state dict":
        raise ValueError(f"classifier {path}: saved by torch.save (a state dict), not a TorchScript file: "
                         "load a state dict with models.classifier.kind: monai_network and its network and "
                         "network_args, or export the model with torch.jit.script or torch.jit.trace")
    try:
        model = torch.jit.load(str(path), map_location=device)
    except Exception as exc:
        raise ValueError(f"classifier {path}: not a loadable TorchScript file ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    return Classifier(_freeze(model), source=str(path), **kw).validate()


def load_monai_network(path, network: str, network_args: Optional[dict] = None, device: str = "cpu",
                       **kw) -> Classifier:
    path = _require(Path(path), "state dict file")
    if not network:
        raise ValueError(f"classifier {path}: kind monai_network needs a network class name")
    model = build_network(network, network_args)
    _load_weights(model, path, device)
    return Classifier(_freeze(model.to(device)), source=str(path), **kw).validate()


def load_monai_bundle(path, device: str = "cpu", network_key: str = "network_def", **kw) -> Classifier:
    """A MONAI bundle folder: configs/inference.{json,yaml} (or metadata + train config)
    with `network_def`, and weights models/model.pt; or only models/model.ts."""
    from monai.bundle import ConfigParser

    root = _require(Path(path), "MONAI bundle folder")
    configs = [p for name in ("inference", "train") for ext in ("json", "yaml", "yml")
               if (p := root / "configs" / f"{name}.{ext}").exists()]
    weights, ts = root / "models" / "model.pt", root / "models" / "model.ts"
    if configs and weights.exists():
        parser = ConfigParser()
        parser.read_config(str(configs[0]))
        meta = root / "configs" / "metadata.json"
        if meta.exists():
            parser.read_meta(str(meta))
        parser["bundle_root"] = str(root)
        if network_key not in parser.config:
            raise ValueError(f"classifier {root}: bundle config {configs[0].name} has no {network_key!r}")
        try:
            model = parser.get_parsed_content(network_key)
        except Exception as exc:  # MONAI wraps the network's own error: the innermost says what is wrong
            while exc.__cause__ is not None:
                exc = exc.__cause__
            raise ValueError(f"classifier {root}: cannot build {network_key} from {configs[0].name}: "
                             f"{error_line(exc)}") from None
        _load_weights(model, weights, device)
        return Classifier(_freeze(model.to(device)), source=str(root), **kw).validate()
    if ts.exists():
        clf = load_torchscript(ts, device=device, **kw)
        clf.source = str(root)
        return clf
    raise ValueError(f"classifier {root}: expected configs/inference.json + models/model.pt, "
                     f"or models/model.ts, in the bundle folder")


def trained_input_size(model_path) -> Optional[tuple]:
    """The input size in the card training wrote beside a model file (classifier.pt, .ts ->
    classifier.json), or in a bundle folder's metadata; None without one. Only the model's own
    name: another model's card in the same folder (the shipped one's, beside a site's model)
    says nothing of it."""
    path = Path(model_path)
    if path.is_dir():
        return _bundle_input_size(path)
    card = path.with_suffix(".json")
    if not path.is_file() or not card.is_file():
        return None
    try:
        size = tuple(int(v) for v in json.loads(card.read_text())["input_size"])
    except (OSError, ValueError, KeyError, TypeError):  # not a training card
        return None
    return size if len(size) == 2 else None


def _bundle_input_size(root: Path) -> Optional[tuple]:
    """A MONAI bundle's own input size: configs/metadata.json's network_data_format, its first
    input's spatial_shape when that is two whole numbers (a fully convolutional network's may be
    a rule, "16*n": then it says none)."""
    try:
        meta = json.loads((root / "configs" / "metadata.json").read_text())
        first = next(iter(meta["network_data_format"]["inputs"].values()))
        size = tuple(first["spatial_shape"])
    except (OSError, ValueError, KeyError, TypeError, StopIteration, AttributeError):  # none, or not as MONAI's
        return None
    return size if len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size) else None


def warn_other_input_size(model_path, input_size) -> None:
    """A model run at another input size than it was trained at scores images it was never
    shown (its card, or a bundle's metadata, says which); warn, naming both sizes."""
    trained = trained_input_size(model_path)
    if trained is not None and trained != tuple(input_size):
        said = "its bundle's metadata says so" if Path(model_path).is_dir() else "its card says so"
        _log.warning("%s was trained at input size %dx%d (" + said + "); it is run at %dx%d: "
                    "set models.classifier.input_size (or --input-size) to %dx%d", model_path, *trained,
                    *input_size, *trained)


def load_classifier(kind: str, path, network: Optional[str] = None, network_args: Optional[dict] = None,
                    class_index: int = 1, input_size: tuple[int, int] = (512, 352), output: str = "logits",
                    in_channels: int = 1, device: str = "cpu", input_range: tuple[float, float] = (0.0, 1.0),
                    mean: Sequence[float] = (0.0,), std: Sequence[float] = (1.0,)) -> Classifier:
    """Load and validate a classifier; ValueError with the model path on any problem."""
    warn_other_input_size(path, input_size)
    kw = dict(class_index=class_index, input_size=tuple(input_size), output=output, in_channels=in_channels,
              input_range=tuple(input_range), mean=tuple(mean), std=tuple(std))
    if kind == "torchscript":
        return load_torchscript(path, device=device, **kw)
    if kind == "monai_bundle":
        return load_monai_bundle(path, device=device, **kw)
    if kind == "monai_network":
        return load_monai_network(path, network, network_args, device=device, **kw)
    raise ValueError(f"classifier kind must be one of {', '.join(KINDS)}, got {kind!r}")
