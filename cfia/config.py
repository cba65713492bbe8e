"""Typed, frozen configuration loaded from config.yaml.

Every knob a site changes lives here. `load()` validates the whole file and raises
ConfigError naming the key, the bad value and what is allowed; unknown keys are
errors, never silently ignored. Relative paths are resolved against the folder of
the config file, so a site can keep its config beside its models and spool.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import ssl
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

# The shipped models, wherever the config file is: a key left out of a site's file must
# not resolve against the working directory (under systemd, /).
from .install import SHIPPED_MODELS

# Rows, columns of the shipped default classifier (models/classifier.json): the default of
# config, training and benches alike (explain/ keeps its own, checked by a test).
DEFAULT_CLASSIFIER_INPUT = (512, 352)


class ConfigError(ValueError):
    """A config value is missing, unknown or out of range; the message names the key."""


def _choice(*allowed: str) -> dict:
    return {"choices": allowed}


def _range(lo: float | None = None, hi: float | None = None) -> dict:
    return {"range": (lo, hi)}


def _path() -> dict:
    return {"path": True}


HOST = {"host": True}  # a name or address: not empty (which binds every interface), no port in it


CALL_THRESHOLD = 0.5  # a probability at or above it is a positive call (cfia explain, evaluate, the region)


@dataclass(frozen=True)
class TLSConfig:
    enabled: bool = False
    certificate: Optional[str] = field(default=None, metadata=_path())
    key: Optional[str] = field(default=None, metadata=_path())
    ca: Optional[str] = field(default=None, metadata=_path())


@dataclass(frozen=True)
class ListenerConfig:
    ae_title: str = field(default="CFIA", metadata={"ae_title": True})
    host: str = field(default="127.0.0.1", metadata=HOST)
    port: int = field(default=11112, metadata=_range(0, 65535))
    allowed_calling_ae_titles: tuple[str, ...] = field(default=(), metadata={"ae_title": True})  # each
    tls: TLSConfig = TLSConfig()
    # What to do with a C-STORE of a SOP class that is not a mammogram.
    other_sop_classes: str = field(default="reject", metadata=_choice("reject", "ignore"))
    # A study is complete on association release, or after this many quiet seconds.
    study_quiet_seconds: float = field(default=30.0, metadata=_range(0, None))
    # Associations open at once; more are rejected as transient (busy), and senders retry.
    max_associations: int = field(default=10, metadata=_range(1, 1000))
    # One received dataset (an 8192 x 8192 16-bit image, the largest taken, is 128 MB): the
    # association of a larger one is aborted before it is all in memory.
    max_dataset_mb: float = field(default=256.0, metadata=_range(1, None))


@dataclass(frozen=True)
class DestinationConfig:
    ae_title: str = field(default="PACS", metadata={"ae_title": True})
    host: str = field(default="127.0.0.1", metadata=HOST)
    port: int = field(default=104, metadata=_range(1, 65535))
    name: str = "pacs"


@dataclass(frozen=True)
class SpoolConfig:
    folder: str = field(default="spool", metadata=_path())
    max_retries: int = field(default=3, metadata=_range(0, None))
    # Delay before the first resend to a destination that is down; doubles per try.
    send_backoff_seconds: float = field(default=5.0, metadata=_range(0, None))
    send_backoff_max_seconds: float = field(default=300.0, metadata=_range(0, None))
    # Rows of delivered (done) jobs are deleted this many days after they finished;
    # 0 keeps them for ever. Failed jobs are never deleted (they name dead letters).
    keep_done_days: float = field(default=30.0, metadata=_range(0, None))

    def __post_init__(self):
        if self.send_backoff_seconds > self.send_backoff_max_seconds:  # the cap would win from the first try
            raise ConfigError(f"spool.send_backoff_seconds: {self.send_backoff_seconds!r} is not allowed; expected "
                              f"at most spool.send_backoff_max_seconds ({self.send_backoff_max_seconds!r})")


@dataclass(frozen=True)
class WorkersConfig:
    count: int = field(default=1, metadata=_range(1, 64))
    # module:function building each worker's processor once (models load once);
    # cfia.bench.processors holds model-free fakes for tests and benchmarks only.
    processor: str = field(default="cfia.processors:pipeline_processor", metadata={"factory": True})
    # On SIGTERM, how long running jobs may take to finish before they are requeued.
    stop_timeout_seconds: float = field(default=30.0, metadata=_range(0, None))
    # CPU priority of workers (0-19, higher is lower priority), so the listener, at
    # normal priority, still answers C-STOREs within milliseconds while workers explain.
    nice: int = field(default=10, metadata=_range(0, 19))


@dataclass(frozen=True)
class ClassifierConfig:
    # torchscript: a TorchScript file; monai_bundle: a bundle folder;
    # monai_network: a monai.networks.nets class name + a state dict file.
    # The defaults are config.yaml's (the shipped model: Grad-CAM needs its layers);
    # MammoNet's own defaults are the shipped network_args (explain/networks.py).
    kind: str = field(default="monai_network", metadata=_choice("torchscript", "monai_bundle", "monai_network"))
    # Left out: the shipped model in the form `kind` loads (set in __post_init__).
    path: Optional[str] = field(default=None, metadata=_path())
    network: Optional[str] = "MammoNet"  # monai_network only; the other kinds ignore it
    network_args: dict = field(default_factory=dict)
    class_index: int = field(default=1, metadata=_range(0, None))
    input_size: tuple[int, int] = field(default=DEFAULT_CLASSIFIER_INPUT, metadata=_range(8, None))  # each
    # What the network returns: probabilities already, or logits (softmax/sigmoid applied by cfia).
    output: str = field(default="logits", metadata=_choice("logits", "probabilities"))
    # A network trained on other input than cfia's one-channel [0, 1] image: the image is
    # replicated to `channels`, mapped linearly onto `input_range`, then (x - mean) / std
    # (one value, or one per channel). The defaults leave it as it is.
    channels: int = field(default=1, metadata=_range(1, 16))
    input_range: tuple[float, float] = (0.0, 1.0)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = field(default=(1.0,), metadata={"range": (1e-12, None)})  # each

    def __post_init__(self):
        if self.path is None:
            if self.kind == "monai_bundle":  # no bundle ships
                raise ConfigError("models.classifier.path: none given; a path to the bundle folder is required "
                                  "when kind is monai_bundle")
            name = "classifier.ts" if self.kind == "torchscript" else "classifier.pt"
            object.__setattr__(self, "path", str(SHIPPED_MODELS / name))
        low, high = self.input_range
        if high <= low:
            raise ConfigError(f"models.classifier.input_range: {list(self.input_range)!r} is not allowed; "
                              "expected [low, high] with low < high")
        for key in ("mean", "std"):
            if len(getattr(self, key)) not in (1, self.channels):
                raise ConfigError(f"models.classifier.{key}: {list(getattr(self, key))!r} is not allowed; expected "
                                  f"one value or one per channel ({self.channels})")


@dataclass(frozen=True)
class InpainterConfig:
    kind: str = field(default="learned", metadata=_choice("learned", "telea", "navier_stokes"))
    path: str = field(default=str(SHIPPED_MODELS / "inpainter.pt"), metadata=_path())
    # learned only: scale the fill's texture to the tissue's around the hole (tried: cf localises worse).
    texture_match: bool = False
    # learned only: the noise input's scale (1 = as trained; 0 = the network's smooth fill).
    noise_scale: float = field(default=1.0, metadata=_range(0.0, None))


@dataclass(frozen=True)
class ModelsConfig:
    classifier: ClassifierConfig = ClassifierConfig()
    inpainter: InpainterConfig = InpainterConfig()


# The explanation methods, in one place for the config, the CLI, the pipeline and the benches.
# dicom_out.model.METHODS is its twin (dicom_out does not import cfia); a test keeps them equal.
METHODS = ("cf", "blur", "gradcam", "occlusion", "ig")


@dataclass(frozen=True)
class ExplainerConfig:
    method: str = field(default="cf", metadata=_choice(*METHODS))
    device: str = field(default="cpu", metadata=_choice("cpu", "cuda", "auto"))
    # The classifier's forward+backward under autocast (bf16 / fp16); float32 = none.
    precision: str = field(default="float32", metadata=_choice("float32", "bf16", "fp16"))
    objective: str = field(default="deletion_preservation",
                           metadata=_choice("deletion", "preservation", "map_quality", "deletion_preservation"))
    preservation_weight: float = field(default=1.0, metadata=_range(0, None))
    # deletion_preservation: the probability the kept region must reach (1 = maximise it).
    preservation_target: float = field(default=1.0, metadata=_range(0.01, 1))
    area_mode: str = field(default="penalty", metadata=_choice("penalty", "target"))
    area_weight: float = field(default=10.0, metadata=_range(0, None))
    target_area: float = field(default=0.05, metadata=_range(0, 1))
    area_min: float = field(default=0.01, metadata=_range(0, 1))  # map_quality: the area's floor in its log
    tv_weight: float = field(default=0.3, metadata=_range(0, None))
    mask_scale: int = field(default=12, metadata=_range(1, 64))
    max_passes: int = field(default=50, metadata=_range(1, 10000))
    # Early stop: the objective changed by less than `tolerance` over `patience` steps.
    tolerance: float = field(default=1e-3, metadata=_range(0, None))
    patience: int = field(default=5, metadata=_range(1, None))
    learning_rate: float = field(default=0.1, metadata=_range(0, None))
    # "halving": the step halves every lr_half_life passes whatever the budget, so the
    # mask has settled by pass 50 and a longer run barely moves it (docs/evaluation.md).
    lr_schedule: str = field(default="halving", metadata=_choice("constant", "cosine", "halving"))
    lr_half_life: float = field(default=20.0, metadata=_range(1, None))
    init: float = field(default=0.9, metadata=_range(0.001, 0.999))
    init_mode: str = field(default="gradient", metadata=_choice("constant", "gradient"))
    init_floor: float = field(default=0.0001, metadata=_range(0.0001, 0.999))
    init_power: float = field(default=2.0, metadata=_range(0.1, 10))
    # gradient: every N steps, while the mask's deletion leaves the call standing, start
    # the mask where the remaining evidence is (one pass; 0 = never).
    reseed_every: int = field(default=16, metadata=_range(0, None))
    reseed_init: float = field(default=0.5, metadata=_range(0.001, 0.999))  # a reseeded start's highest value
    # What the optimiser drives down: the class probability, its logit, or -log(1 - p).
    score: str = field(default="cross_entropy", metadata=_choice("cross_entropy", "probability", "logit"))
    # cf: hole size (input pixels) of the tiled counterfactual; re-inpaint the
    # current region every refresh_every steps (0 = never).
    tile: int = field(default=24, metadata=_range(4, 1024))
    # cf: shifted tile grids whose fills are combined by a per-pixel median (odd; 1 = one grid).
    tilings: int = field(default=5, metadata={**_range(1, 15), "odd": True})
    refresh_every: int = field(default=10, metadata=_range(0, None))
    # cf: how Φ mixes image and counterfactual at partial mask values: "linear", or
    # "texture" (fine texture mixed energy-preserving; low-pass sigma blend_sigma).
    blend: str = field(default="linear", metadata=_choice("linear", "texture"))
    blend_sigma: float = field(default=2.0, metadata=_range(0.1, None))
    blur_sigma: float = field(default=10.0, metadata=_range(0.1, None))
    # The last convolutional block, as Grad-CAM prescribes (features.2, 1/16, scored at chance).
    gradcam_layer: str = "features.3"
    occlusion_size: int = field(default=32, metadata=_range(2, 1024))
    # MONAI's default, and the best-localising of its three modes here (docs/evaluation.md).
    occlusion_mode: str = field(default="gaussian", metadata=_choice("mean_img", "mean_patch", "gaussian"))
    ig_steps: int = field(default=32, metadata=_range(1, 1024))
    # gradcam, occlusion, ig: the score they explain: "logit", the class's own logit (its
    # column; as their reference implementations do), or "log_odds", log p - log(1 - p), which
    # cf explains (a two-logit network's column can rise while p falls).
    baseline_score: str = field(default="logit", metadata=_choice("logit", "log_odds"))
    seed: int = field(default=0, metadata=_range(0, 2**64 - 1))  # torch.manual_seed's range
    region_threshold: float = field(default=0.5, metadata=_range(0, 1))
    # cf, blur: the map reported: the optimised mask, or "change": the mask weighted by
    # how much the counterfactual differs from the image (smoothed by saliency_sigma input
    # pixels).
    saliency: str = field(default="change", metadata=_choice("mask", "change"))
    saliency_sigma: float = field(default=1.0, metadata=_range(0, None))
    # The change map above this forms the region: it is scaled to a largest value of 1 and
    # falls off steeply from its peak, so its region needs a lower cut than a mask's (the
    # explainer's own default, explain.counterfactual.REGION_THRESHOLDS).
    change_region_threshold: float = field(default=0.05, metadata=_range(0, 1))
    min_region_pixels: int = field(default=16, metadata=_range(0, None))
    # Keep only the region's components whose deletion the call needs (explain/region.py):
    # each removal may leave the probability below 0.5 and at most sufficient_margin above
    # the whole region's deletion. Forward passes only (at most sufficient_forwards), reported apart.
    sufficient_region: bool = True
    sufficient_margin: float = field(default=0.1, metadata=_range(0, 1))
    sufficient_forwards: int = field(default=20, metadata=_range(0, None))

    def __post_init__(self):
        if self.init_floor >= self.init:  # the start would be highest where deleting does nothing
            raise ConfigError(f"explainer.init_floor: {self.init_floor!r} is not allowed; expected a value "
                              f"below explainer.init ({self.init!r})")
        if self.objective == "map_quality" and self.area_mode == "target":  # its area term is log(area)
            raise ConfigError("explainer.area_mode: 'target' is not allowed with explainer.objective "
                              "map_quality, whose area term is log(max(area, area_min)); expected penalty")

    def map_region_threshold(self, method: str) -> float:
        """The value of `method`'s reported map above which the map forms the salient region."""
        if method in ("cf", "blur") and self.saliency == "change":
            return self.change_region_threshold
        return self.region_threshold


@dataclass(frozen=True)
class OutputsConfig:
    fractional_seg: bool = True
    binary_seg: bool = True
    parametric_map: bool = True
    sr: bool = True
    gsps: bool = True


@dataclass(frozen=True)
class LoggingConfig:
    format: str = field(default="text", metadata=_choice("text", "json"))
    level: str = field(default="INFO", metadata=_choice("DEBUG", "INFO", "WARNING", "ERROR"))


@dataclass(frozen=True)
class HttpConfig:
    enabled: bool = False
    host: str = field(default="127.0.0.1", metadata=HOST)
    port: int = field(default=8080, metadata=_range(0, 65535))


@dataclass(frozen=True)
class Config:
    listener: ListenerConfig = ListenerConfig()
    destinations: tuple[DestinationConfig, ...] = ()
    # Calling AE title -> where to send its results ("back to the sender").
    return_to_sender: dict = field(default_factory=dict)
    spool: SpoolConfig = SpoolConfig()
    workers: WorkersConfig = WorkersConfig()
    models: ModelsConfig = ModelsConfig()
    explainer: ExplainerConfig = ExplainerConfig()
    outputs: OutputsConfig = OutputsConfig()
    logging: LoggingConfig = LoggingConfig()
    http: HttpConfig = HttpConfig()


_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a duplicate key: PyYAML keeps the last one silently,
    so a second `explainer:` section would drop the first one's settings."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<`: the keys it merges in may be overridden
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.MarkedYAMLError(problem=f"duplicate key {key!r} (first on line {seen[key]})",
                                           problem_mark=key_node.start_mark)
            if isinstance(key, typing.Hashable):
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load(path: str | Path) -> Config:
    """Read and validate a config file; raises ConfigError naming the bad key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")  # whatever the locale
        raw = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 (byte {exc.start}): save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_error(path, text, exc)) from None
    return from_dict(raw, base=path.parent)


def _yaml_error(path: Path, text: str, exc: yaml.YAMLError) -> str:
    """One line (PyYAML's message spans several and names `<unicode string>`)."""
    if isinstance(exc, yaml.reader.ReaderError):  # a control character: a position, no mark
        line, col = text.count("\n", 0, exc.position) + 1, exc.position - text.rfind("\n", 0, exc.position)
        return f"config file {path} line {line} column {col}: character #x{exc.character:04x}: {exc.reason}"
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    if mark is None or problem is None:
        return f"config file {path} is not valid YAML: {' '.join(str(exc).split())}"
    context = f" ({exc.context})" if getattr(exc, "context", None) and exc.context != problem else ""
    return f"config file {path} line {mark.line + 1} column {mark.column + 1}: {problem}{context}"


def from_dict(raw: Any, base: Path = Path(".")) -> Config:
    if isinstance(raw, dict) and isinstance(raw.get("destinations"), list):
        for i, dest in enumerate(raw["destinations"]):
            _require_host_port(f"destinations[{i}]", dest)
    cfg = _build(Config, raw, "", base)
    _check_return_to_sender(cfg.return_to_sender)
    _check_tls(cfg.listener.tls)
    _check_ports_apart(cfg)
    return cfg


def _check_ports_apart(cfg: Config) -> None:
    """The DICOM listener and the HTTP endpoint cannot share a port on one address: the
    second to bind failed at start ("Address already in use"), which a restart cannot mend."""
    lc, hc = cfg.listener, cfg.http
    anywhere = {"0.0.0.0", "::"}
    if hc.enabled and lc.port and lc.port == hc.port and (lc.host == hc.host or {lc.host, hc.host} & anywhere):
        raise ConfigError(f"http.port: {hc.port} is listener.port too, on {hc.host} and {lc.host}; "
                          "give each its own port")


def _check_return_to_sender(table: dict) -> None:
    for ae, dest in table.items():
        return_destination(ae, dest)


def return_destination(calling_ae: str, raw: Any) -> DestinationConfig:
    """A return_to_sender entry: host and port are required (a default would send a
    caller's results somewhere else); the AE title defaults to the caller's own."""
    where = f"return_to_sender.{calling_ae}"
    _require_host_port(where, raw)
    return _build(DestinationConfig, {"ae_title": str(calling_ae).strip(), **raw}, where + ".", Path("."))


def _require_host_port(where: str, raw: Any) -> None:
    """A destination must name its host and port: a default would send results elsewhere."""
    if not isinstance(raw, dict) or not {"host", "port"} <= set(raw):
        raise ConfigError(f"{where}: expected a mapping with host and port, got {raw!r}")


def missing_model_files(cfg: Config) -> list[str]:
    """The configured model files that are not there (the classifier always; the
    inpainter when it is the learned one), each as `key: path`."""
    wanted = [("models.classifier.path", cfg.models.classifier.path)]
    if cfg.models.inpainter.kind == "learned":
        wanted.append(("models.inpainter.path", cfg.models.inpainter.path))
    return [f"{key}: {path}" for key, path in wanted if not Path(path).exists()]


def _no_passphrase() -> bytes:
    """ssl's password callback: none, so an encrypted key fails instead of OpenSSL prompting
    on the terminal (a service has none; `cfia config show` would pass where the admin typed it)."""
    return b""


def _encrypted(key: str) -> bool:
    """A PEM key under a passphrase: PKCS#8's ENCRYPTED PRIVATE KEY, or OpenSSL's legacy
    Proc-Type: 4,ENCRYPTED header."""
    try:
        head = Path(key).read_bytes()[:4096]
    except OSError:
        return False
    return b"ENCRYPTED PRIVATE KEY" in head or b"Proc-Type: 4,ENCRYPTED" in head


def _check_tls(tls: TLSConfig) -> None:
    """The files are read here, so a missing or mismatched one stops `cfia serve` with exit 78
    (not restarted by systemd) and fails `cfia config show`, naming the key."""
    if not tls.enabled:
        return
    if not (tls.certificate and tls.key):
        raise ConfigError("listener.tls: enabled, so certificate and key are required")
    for key in ("certificate", "key", "ca"):
        path = getattr(tls, key)
        if path and not Path(path).is_file():
            raise ConfigError(f"listener.tls.{key}: {path} is not a file")
        if path and not os.access(path, os.R_OK):  # a key 0600 for root, the node running as cfia
            raise ConfigError(f"listener.tls.{key}: {path} cannot be read by this user")
    if _encrypted(tls.key):  # OpenSSL would ask for its passphrase on a terminal a service has not
        raise ConfigError(f"listener.tls.key: {tls.key} is encrypted (a passphrase); cfia needs the key "
                          f"unencrypted, readable by its user alone: openssl pkey -in {tls.key} -out KEY")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls.certificate, tls.key, password=_no_passphrase)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"listener.tls.certificate, key: {tls.certificate}, {tls.key} cannot be used together "
                          f"({exc})") from None
    try:
        if tls.ca:
            context.load_verify_locations(cafile=tls.ca)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"listener.tls.ca: {tls.ca} is not a CA bundle ({exc})") from None


def _build(cls: type, raw: Any, prefix: str, base: Path):
    where = prefix.rstrip(".") or "the top level"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]}; allowed keys in {where}: {', '.join(fields)}"
        )
    values = {
        name: _convert(hints[name], raw[name], f"{prefix}{name}", fields[name].metadata, base)
        for name in raw
    }
    # A key left out gets what a set one gets: its section built (so nested defaults are
    # too) and a relative default path resolved against the config file's folder, not the cwd.
    for name, f in fields.items():
        if name in values:
            continue
        if dataclasses.is_dataclass(hints[name]):
            values[name] = _build(hints[name], {}, f"{prefix}{name}.", base)
        elif f.metadata.get("path") and isinstance(f.default, str):
            values[name] = _convert(hints[name], f.default, f"{prefix}{name}", f.metadata, base)
    return cls(**values)


def _convert(hint: Any, value: Any, key: str, meta: Any, base: Path) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        return _convert(args[0], value, key, meta, base)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key + ".", base)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, f"{key}[{i}]", meta, base) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {value!r}")
        return tuple(_convert(a, v, f"{key}[{i}]", meta, base) for i, (a, v) in enumerate(zip(args, value)))
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    return _scalar(hint, value, key, meta, base)


def _scalar(hint: Any, value: Any, key: str, meta: Any, base: Path) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint in (int, float):
        if hint is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        ok = not isinstance(value, bool) and (isinstance(value, int) or
                                              (isinstance(value, float) and math.isfinite(value)))
        if not ok or (hint is int and isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{key}: expected {'an integer' if hint is int else 'a finite number'}, got {value!r}")
        value = hint(value)
        lo, hi = meta.get("range", (None, None))
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ConfigError(f"{key}: {value!r} is out of range; allowed: {_describe_range(lo, hi)}")
        if meta.get("odd") and value % 2 == 0:
            raise ConfigError(f"{key}: {value!r} is not allowed; expected an odd number")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        if "choices" in meta and value not in meta["choices"]:
            raise ConfigError(f"{key}: {value!r} is not allowed; allowed: {', '.join(meta['choices'])}")
        if meta.get("ae_title") and not (0 < len(value.strip()) <= 16 and value.isascii() and "\\" not in value):
            raise ConfigError(f"{key}: {value!r} is not a valid AE title; allowed: 1-16 ASCII characters, no backslash")
        if meta.get("host") and (not value.strip() or value != value.strip() or re.fullmatch(r"[^:]+:\d+", value)):
            raise ConfigError(f"{key}: {value!r} is not allowed; expected a host name or address, without "
                              "spaces or a port (the port is its own key; 0.0.0.0 listens on every interface)")
        if meta.get("factory") and not _FACTORY.match(value):
            raise ConfigError(f"{key}: {value!r} is not allowed; expected module:function, e.g. cfia.processors:pipeline_processor")
        if meta.get("path"):
            return str((base / value).resolve()) if not Path(value).is_absolute() else value
        return value
    raise ConfigError(f"{key}: unsupported type {hint!r}")  # a schema bug, not a user error


def _describe_range(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"{lo} to {hi}"
    return f">= {lo}" if lo is not None else f"<= {hi}"


def to_dict(cfg: Any) -> Any:
    """The effective config as plain data, for `cfia config show` and the start-up log
    (no key holds a secret: TLS keys are named by their files)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, tuple):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg
