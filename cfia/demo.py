"""`cfia demo`: the whole node, end to end, on loopback, with the shipped models.

1. a synthetic mammogram with a lesion (the phantom generator) -> OUT/source.dcm
2. a storage SCP (pynetdicom, this process) on a free port, writing into OUT/
3. the real `cfia serve` in a child process (cfia.local_node): the shipped config with
   loopback, a port the OS picks, a temporary spool, the receiver as the destination
4. one C-STORE of the mammogram to the node's AE title
5. wait for every enabled result object to arrive, stop the node and the receiver
6. OUT/overlay.png from what came back (FRACTIONAL SEG or Parametric Map = saliency,
   BINARY SEG = salient region), the phantom's true lesion outlined in green, and
   OUT/summary.json; a short report on stdout.

Nothing leaves loopback; the temporary spool is deleted; the node's processes are
stopped (SIGTERM, then the process group is killed) whatever happens: an error, Ctrl-C,
or a SIGTERM / SIGHUP to the demo (the demo then exits with 128 + the signal's number).
A size out of range, an output path that is a file or a base config that cannot be read
is an error before anything starts.
"""
from __future__ import annotations

import contextlib
import json
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from dicom_out.geometry import pixel_spacing

from . import config as config_mod
from .local_node import LocalNode, NodeError, wait_for

SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
PARAMETRIC_MAP = "1.2.840.10008.5.1.4.1.1.30"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
GSPS = "1.2.840.10008.5.1.4.1.1.11.1"
RECEIVER_AE = "DEMO_OUT"
CALLING_AE = "WORKSTATION"
# Files the demo writes into OUT; only these are replaced on a rerun (nothing else in OUT is touched).
LOG_NAME = "serve.log"  # the node's log, copied out of its temporary folder
OUTPUT_FILES = ("source.dcm", "fractional_seg.dcm", "binary_seg.dcm", "parametric_map.dcm", "sr.dcm", "gsps.dcm",
                "overlay.png", "summary.json", "lesion.npy", LOG_NAME)

DEFAULT_SIZE = (1024, 832)
DEFAULT_SEED = 7   # a circumscribed mass the shipped classifier calls positive (score 0.65, stage 5)


class DemoError(RuntimeError):
    pass


def object_type(ds: Dataset) -> str:
    """cfia's name for a result object, from its SOP class (and SEG type)."""
    sop = str(ds.SOPClassUID)
    if sop == SEGMENTATION:
        return "binary_seg" if str(ds.get("SegmentationType", "")) == "BINARY" else "fractional_seg"
    return {PARAMETRIC_MAP: "parametric_map", COMPREHENSIVE_3D_SR: "sr", GSPS: "gsps"}.get(
        sop, f"other_{ds.SOPInstanceUID}")


class Receiver:
    """A destination on loopback: a pynetdicom storage SCP writing OUT/<object type>.dcm."""

    def __init__(self, out: Path, ae_title: str = RECEIVER_AE):
        from pynetdicom import AE, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        self.out = out
        self.ae_title = ae_title
        self.received: dict[str, Path] = {}
        self.arrival: dict[str, float] = {}
        self._lock = threading.Lock()
        ae = AE(ae_title=ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        ae.add_supported_context(Verification)
        self._server = ae.start_server(("127.0.0.1", 0), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        self.port = self._server.server_address[1]

    def _on_store(self, event) -> int:
        try:
            ds = event.dataset
            ds.file_meta = event.file_meta
            kind = object_type(ds)
            path = self.out / f"{kind}.dcm"
            ds.save_as(path, enforce_file_format=True)
        except Exception:  # a handler never raises: answer "cannot understand"
            return 0xC211
        with self._lock:
            self.received[kind] = path
            self.arrival[kind] = time.monotonic()
        return 0x0000

    def snapshot(self) -> dict[str, Path]:
        with self._lock:
            return dict(self.received)

    def stop(self) -> None:
        self._server.shutdown()


def push(host: str, port: int, ds: Dataset, called_ae: str, calling_ae: str = CALLING_AE) -> int:
    """One C-STORE over one association; returns the status (raises DemoError if refused)."""
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        raise DemoError(f"the node at {host}:{port} ({called_ae}) did not accept the association")
    try:
        reply = assoc.send_c_store(ds)
    finally:
        assoc.release()
    if "Status" not in reply:
        raise DemoError("no answer to the C-STORE")
    return int(reply.Status)


@dataclass
class Phantom:
    dataset: Dataset
    lesion: np.ndarray
    laterality: str
    view: str
    lesions: list = field(default_factory=list)


def phantom_options(size: tuple[int, int], seed: int = DEFAULT_SEED):
    """The phantom generator's options for the demo's image; DemoError quoting a size or
    seed out of range."""
    from phantom.generate import PhantomOptions, check_run

    opts = PhantomOptions(size=tuple(size), positive_fraction=1.0)
    try:
        opts.check()
        check_run(1, seed)
    except ValueError as exc:  # "size 16x16 is out of range; allowed: 64x64 to ..."
        raise DemoError(str(exc)) from None
    return opts


def make_phantom(size: tuple[int, int], seed: int) -> Phantom:
    from phantom.dicom import to_dataset
    from phantom.generate import make_one

    try:
        mg = make_one(seed, 0, phantom_options(size, seed))
    except RuntimeError as exc:  # a size in range but too narrow for the lesion, e.g. 4096x64
        raise DemoError(f"{exc} at size {size[0]}x{size[1]}: try another size or seed") from None
    ds = to_dataset(mg, f"cfia-demo:{seed}:{size[0]}x{size[1]}", 7000 + seed)
    return Phantom(ds, mg.mask, mg.laterality, mg.view, list(mg.lesions))


# -- reading the results back ---------------------------------------------------------

def saliency_from(objects: dict[str, Path]) -> tuple[Optional[np.ndarray], str]:
    """The saliency in [0,1] from the FRACTIONAL SEG, else the Parametric Map."""
    if "fractional_seg" in objects:
        ds = pydicom.dcmread(objects["fractional_seg"])
        frame = np.asarray(ds.pixel_array, np.float32)
        return np.clip(frame / float(ds.MaximumFractionalValue), 0, 1), "fractional_seg"
    if "parametric_map" in objects:
        ds = pydicom.dcmread(objects["parametric_map"])
        return np.clip(np.asarray(ds.pixel_array, np.float32), 0, 1), "parametric_map"
    return None, ""


def region_from(objects: dict[str, Path], saliency: Optional[np.ndarray], threshold: float) -> Optional[np.ndarray]:
    if "binary_seg" in objects:
        return np.asarray(pydicom.dcmread(objects["binary_seg"]).pixel_array) > 0
    return None if saliency is None else saliency >= threshold


def sr_scores(path: Path) -> dict[str, float]:
    """The classifier score and the score after deletion from the TID 1500 SR (cfia's
    local codes SCORE and SCOREDEL)."""
    names = {"SCORE": "score", "SCOREDEL": "score_after_deletion"}
    found: dict[str, float] = {}

    def walk(items) -> None:
        for item in items:
            if item.get("ValueType") == "NUM":
                code = str(item.ConceptNameCodeSequence[0].CodeValue)
                if code in names:
                    found[names[code]] = float(item.MeasuredValueSequence[0].NumericValue)
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(pydicom.dcmread(path).get("ContentSequence", []))
    return found


def describe_region(region: np.ndarray, saliency: Optional[np.ndarray], lesion: np.ndarray,
                    spacing_mm: float) -> dict:
    from scipy import ndimage

    from explain import metrics

    labels, n = ndimage.label(region)
    info: dict = {"components": int(n), "pixels": int(region.sum()),
                  "area_mm2": round(float(region.sum()) * spacing_mm**2, 1),
                  "fraction_inside_lesion": round(float((region & lesion).sum() / max(region.sum(), 1)), 3),
                  "lesion_pixels_covered": round(float((region & lesion).sum() / max(lesion.sum(), 1)), 3)}
    if n:
        sizes = ndimage.sum(region, labels, range(1, n + 1))
        largest = labels == (int(np.argmax(sizes)) + 1)
        rows, cols = np.nonzero(largest)
        info["largest"] = {"rows": [int(rows.min()), int(rows.max())], "columns": [int(cols.min()), int(cols.max())],
                           "pixels": int(largest.sum())}
    if saliency is not None:
        peak = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
        info["peak"] = [int(peak[0]), int(peak[1])]
        info["peak_on_lesion"] = bool(metrics.pointing_game(saliency, lesion))
        info["energy_inside_lesion"] = round(float(metrics.energy_inside(saliency, lesion)), 3)
    return info


def write_overlay(path: Path, source: Path, saliency: np.ndarray, region: np.ndarray, lesion: np.ndarray,
                  caption: str | None = None) -> Path:
    from . import overlay
    from .dicom_io import read_file
    from .pipeline import display_image

    src = read_file(source)
    return overlay.save(path, display_image(src), saliency, region, lesion=lesion, caption=caption,
                        aspect=src.pixel_aspect)


def overlay_caption(method: str, scores: dict[str, float], region: np.ndarray, from_node: bool) -> str | None:
    """The caption `cfia explain` writes, from the SR's scores as the node wrote them; none
    without the SR, nor for a region the demo drew itself from the map (no BINARY SEG came
    back: it may be one the node withheld, and the SR's "after" is not its)."""
    from . import overlay
    from .pipeline import WITHHELD_NEGATIVE

    if "score" not in scores or not from_node:
        return None
    negative = scores["score"] < config_mod.CALL_THRESHOLD
    after = scores.get("score_after_deletion") if region.any() and not negative else None
    return overlay.caption(method, scores["score"], after, WITHHELD_NEGATIVE if negative else "")


# -- the demo -------------------------------------------------------------------------

def run(out: Path = Path("demo-out"), config: Optional[Path] = None, size: tuple[int, int] = DEFAULT_SIZE,
        seed: Optional[int] = None, timeout: float = 900.0, say: Callable[[str], None] = print) -> dict:
    """The demo (module docstring). Before anything starts: DemoError for a size out of range
    or an output path that is not a folder; ConfigError for a base config that cannot be read
    or is invalid (no fallback to the defaults when `config` is given)."""
    started = time.monotonic()
    seed = DEFAULT_SEED if seed is None else seed
    phantom_options(size, seed)
    if config is not None:
        config_mod.load(Path(config))
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DemoError(f"{out}: is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoError(f"{out}: cannot create the output folder ({exc.strerror})") from None
    for name in OUTPUT_FILES:
        (out / name).unlink(missing_ok=True)

    with StopSignals() as stop_signals:
        say(f"cfia demo: everything on loopback; results into {out}/")
        ph, source = _write_source(out, size, seed, say)
        done = _run_node(out, ph, config, timeout, say, stop_signals)
        summary = _summarise(out, ph, source, done, size, seed, say)
    summary["seconds"]["total"] = round(time.monotonic() - started, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    say(f"  done in {summary['seconds']['total']:.1f} s; summary: {out / 'summary.json'}")
    return summary


class StopSignals:
    """While in effect, SIGTERM and SIGHUP end the demo as Ctrl-C does: SystemExit(128 +
    the signal) is raised in the main thread, so every `finally` stops the node (in a
    session of its own, it gets no signal sent to the demo's process group) and removes
    the temporary folder. Inside `held()` (the clean-up) a signal is noted and raised
    when the clean-up is done; a second signal while stopping is ignored. The previous
    handlers are restored on leaving. Outside the main thread (where Python cannot set
    handlers) it does nothing."""

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._holding = False
        self._pending: Optional[int] = None
        self._previous: dict = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: not set from Python
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:
            return  # already stopping: a second signal must not cut the clean-up short
        self.received = signum
        if self._holding:
            self._pending = signum
            return
        raise SystemExit(128 + signum)

    @contextlib.contextmanager
    def held(self):
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        if self._pending is not None:
            signum, self._pending = self._pending, None
            raise SystemExit(128 + signum)


@dataclass
class NodeRun:
    """What one run of the node left behind: its effective config and the objects received."""
    config: dict
    ae_title: str
    objects: dict[str, Path]
    seconds: dict[str, float]


def _lesion_kinds(ph: Phantom) -> str:
    return ", ".join(sorted({str(l[0]) for l in ph.lesions})) or "lesion"


def _write_source(out: Path, size: tuple[int, int], seed: int, say: Callable[[str], None]) -> tuple[Phantom, Path]:
    """Step 1: the synthetic mammogram (OUT/source.dcm) and its true lesion (OUT/lesion.npy)."""
    ph = make_phantom(size, seed)
    source = out / "source.dcm"
    ph.dataset.save_as(source, enforce_file_format=True)
    np.save(out / "lesion.npy", ph.lesion)
    rows, cols = np.nonzero(ph.lesion)
    say(f"  1. synthetic mammogram {size[0]}x{size[1]} ({ph.laterality} {ph.view}, seed {seed}) with a lesion "
        f"({_lesion_kinds(ph)}) at rows {rows.min()}-{rows.max()}, columns {cols.min()}-{cols.max()}: {source}")
    return ph, source


def _run_node(out: Path, ph: Phantom, config: Optional[Path], timeout: float,
              say: Callable[[str], None], stop_signals: Optional[StopSignals] = None) -> NodeRun:
    """Steps 2-6: receiver and node up, one push, wait for every enabled object, both down."""
    receiver = node = workdir = None
    try:
        workdir = Path(tempfile.mkdtemp(prefix="cfia-demo-"))
        receiver = Receiver(out)
        say(f"  2. receiver {receiver.ae_title} on 127.0.0.1:{receiver.port} (pynetdicom storage SCP) -> {out}/")
        node = LocalNode(workdir, overrides={
            "destinations": [{"name": "demo-out", "ae_title": receiver.ae_title, "host": "127.0.0.1",
                              "port": receiver.port}],
            "return_to_sender": {},
            "workers": {"count": 1, "processor": "cfia.processors:pipeline_processor"},
            "listener": {"study_quiet_seconds": 2, "allowed_calling_ae_titles": []},
            "logging": {"format": "text", "level": "INFO"},
        }, base_config=config)
        _check_models(node.config)
        t0 = time.monotonic()
        node.start()
        expected = node.enabled_outputs
        say(f"  3. node: cfia serve (pid {node.info['pid']}), AE {node.ae_title} on 127.0.0.1:{node.port}, "
            f"classifier {Path(node.config['models']['classifier']['path']).name}, "
            f"inpainter {node.config['models']['inpainter']['kind']}, "
            f"method {node.config['explainer']['method']}, spool {node.spool} (log kept as {out / LOG_NAME})")

        t_push = time.monotonic()
        status = push("127.0.0.1", node.port, ph.dataset, node.ae_title)
        ack = time.monotonic() - t_push
        if status != 0x0000:
            raise DemoError(f"the node answered the C-STORE with status {status:#06x}")
        say(f"  4. C-STORE {CALLING_AE} -> {node.ae_title}: status 0x0000 in {ack * 1000:.0f} ms; explaining ...")

        def arrived():
            node.check_alive()
            letters = node.dead_letters()
            if letters:
                raise DemoError(f"the job failed: {letters[0].get('reason')}")
            return set(expected) <= set(receiver.snapshot())

        wait_for(arrived, timeout, f"the {len(expected)} result objects", interval=0.2)
        results_s = time.monotonic() - t_push
        objects = receiver.snapshot()
        say(f"  5. {len(objects)} result objects back in {results_s:.1f} s after the push:")
        for kind in expected:
            ds = pydicom.dcmread(objects[kind], stop_before_pixels=True)
            say(f"       {objects[kind].name:<20} {ds.SOPClassUID.name:<45} series {ds.SeriesNumber}: "
                f"{ds.SeriesDescription}")
        rc = node.stop()
        say(f"  6. node stopped (exit {rc}), receiver stopped")
        return NodeRun(node.config, node.ae_title, objects, {
            "c_store_ack": round(ack, 3), "push_to_all_results": round(results_s, 1),
            "node_start_to_stop": round(time.monotonic() - t0, 1)})
    except NodeError as exc:
        raise DemoError(str(exc)) from None
    except TimeoutError as exc:
        raise DemoError(f"{exc}\n{node.log_tail() if node else ''}") from None
    finally:
        with stop_signals.held() if stop_signals else contextlib.nullcontext():
            if node is not None:
                node.stop()
                _keep_log(node, out)
            if receiver is not None:
                receiver.stop()
            if workdir is not None:
                shutil.rmtree(workdir, ignore_errors=True)


def _keep_log(node: LocalNode, out: Path) -> None:
    """The node's log outlives its temporary folder: the one place to look when a run went wrong."""
    try:
        shutil.copyfile(node.log_path, out / LOG_NAME)
    except OSError:
        pass  # no log yet (the node never started) or the output folder is gone


def _summarise(out: Path, ph: Phantom, source: Path, done: NodeRun, size: tuple[int, int], seed: int,
               say: Callable[[str], None]) -> dict:
    """What came back, read from the objects themselves: scores, region, overlay."""
    objects = done.objects
    explainer = config_mod.from_dict(done.config).explainer
    saliency, saliency_from_obj = saliency_from(objects)
    region = region_from(objects, saliency, explainer.map_region_threshold(explainer.method))
    rows, cols = np.nonzero(ph.lesion)
    summary = {
        "source": str(source), "size": list(size), "seed": seed, "laterality": ph.laterality, "view": ph.view,
        "lesion": {"kinds": _lesion_kinds(ph), "pixels": int(ph.lesion.sum()),
                   "rows": [int(rows.min()), int(rows.max())], "columns": [int(cols.min()), int(cols.max())]},
        "node": {"ae_title": done.ae_title, "classifier": str(Path(done.config["models"]["classifier"]["path"])),
                 "method": done.config["explainer"]["method"], "max_passes": done.config["explainer"]["max_passes"]},
        "objects": {k: str(v) for k, v in objects.items()},
        "seconds": dict(done.seconds),
    }
    scores = sr_scores(objects["sr"]) if "sr" in objects else {}
    if scores:
        summary.update({k: round(v, 4) for k, v in scores.items()})
        say(f"  classifier score (lesion class): {summary.get('score', float('nan')):.4f}; after replacing the "
            f"salient region with inpainted healthy tissue: {summary.get('score_after_deletion', float('nan')):.4f}")
    if region is not None:
        spacing_mm = pixel_spacing(ph.dataset)[0][0]  # in the breast, as the result objects state it
        summary["region"] = describe_region(region, saliency, ph.lesion, spacing_mm)
        _say_region(summary["region"], say)
    if saliency is not None and region is not None:
        caption = overlay_caption(summary["node"]["method"], scores, region, "binary_seg" in objects)
        overlay_path = write_overlay(out / "overlay.png", source, saliency, region, ph.lesion, caption)
        summary["overlay"] = str(overlay_path)
        say(f"  overlay: {overlay_path} (saliency from the {saliency_from_obj}: red to yellow; salient region: "
            f"cyan outline; the phantom's true lesion: green outline)")
    return summary


def _say_region(r: dict, say: Callable[[str], None]) -> None:
    where = ""
    if "largest" in r:
        lg = r["largest"]
        where = f"; largest at rows {lg['rows'][0]}-{lg['rows'][1]}, columns {lg['columns'][0]}-{lg['columns'][1]}"
    say(f"  salient region: {r['pixels']} px ({r['area_mm2']} mm²) in {r['components']} component(s){where}; "
        f"{r['fraction_inside_lesion']:.0%} of it on the true lesion, {r['lesion_pixels_covered']:.0%} of the "
        f"lesion covered")
    if "peak" in r:
        say(f"  saliency peak at row {r['peak'][0]}, column {r['peak'][1]}: "
            f"{'on' if r['peak_on_lesion'] else 'NOT on'} the true lesion; "
            f"{r['energy_inside_lesion']:.0%} of the map's energy inside it")


def _check_models(cfg: dict) -> None:
    clf = cfg["models"]["classifier"]
    if clf["kind"] == "torchscript" and not Path(clf["path"]).is_file():
        raise DemoError(f"no classifier at {clf['path']} (models.classifier.path): the demo needs the shipped "
                        f"models/classifier.ts or your own (see README, 'Your own classifier')")
    inp = cfg["models"]["inpainter"]
    if inp["kind"] == "learned" and not Path(inp["path"]).is_file():
        raise DemoError(f"no inpainter at {inp['path']} (models.inpainter.path)")
