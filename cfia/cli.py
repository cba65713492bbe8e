"""The `cfia` command: one subcommand per task, each with its own --help."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import sys
import tempfile
from pathlib import Path

from . import config as config_mod
from . import logs
from .config import METHODS
from .install import SHIPPED_CONFIG

DEFAULT_CONFIG = SHIPPED_CONFIG


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def _size(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROWSxCOLS such as 1024x832, got {text!r}") from None
    if min(rows, cols) < 8:  # 0 crashes the network, a negative size skips every image
        raise argparse.ArgumentTypeError(f"rows and columns must be at least 8, got {text!r}")
    return rows, cols


def _probability(text: str) -> float:
    """An argparse type: a probability in [0, 1] (a call threshold: NaN compared false, so every
    image was called, and 50 meant for 50 % called none)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability such as 0.5, got {text!r}") from None
    if not 0 <= value <= 1:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"must lie between 0 and 1, got {text}")
    return value


def _positive(text: str) -> int:
    """An argparse type: an integer of at least 1 (epochs, batch sizes, counts)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # something was written there after all: it stays
        pass


def _output_folder(path: str, flag: str = "--out", create: bool = True) -> Path:
    """Create (or, create=False, only check) an output folder before the work: a bad
    --out costs no minutes."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{flag} {out}: is a file, not a folder")
    try:
        if create:
            out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{flag} {out}: cannot create the output folder ({exc.strerror})") from None
    if create:
        try:  # a folder that exists but cannot be written (permissions, a read-only mount)
            tempfile.TemporaryFile(dir=out).close()
        except OSError as exc:
            raise UsageError(f"{flag} {out}: cannot write in the output folder ({exc.strerror})") from None
    return out


def _check_creatable(out: Path, *also: Path) -> None:
    """Before the work: --out's folder made and each file creatable in it (a name longer
    than the file system's NAME_MAX, a folder that cannot be written); an earlier run's file
    is left as it is, to be replaced at the end."""
    _output_folder(str(out.parent))
    for path in (out, *also):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        except OSError as exc:
            raise UsageError(f"--out {out}: cannot create {path.name} ({exc.strerror})") from None
        os.close(fd)
        os.unlink(path)


def config_file(path: str | None) -> Path | None:
    """The file a command reads: the given one, else the shipped one; None when there is
    none (the built-in defaults)."""
    if path:
        return Path(path)
    return DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None


def load_config(path: str | None) -> config_mod.Config:
    source = config_file(path)
    return config_mod.Config() if source is None else config_mod.load(source)


def cmd_phantom(args) -> int:
    from tqdm import tqdm

    from phantom.generate import PhantomOptions, check_run, write_dataset

    opts = PhantomOptions(
        size=args.size, positive_fraction=args.positive_fraction, bits_stored=args.bits,
        for_processing=args.for_processing, photometric=args.photometric,
        frame_of_reference=args.frame_of_reference, pixel_spacing=args.pixel_spacing, generator=args.generator,
        lesion_kinds=tuple(args.lesion_kinds.split(",")) if args.lesion_kinds else None,
    )
    try:  # every check before the first file: a refused run writes nothing
        opts.check()
        check_run(args.count, args.seed)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _output_folder(args.out)
    with tqdm(total=args.count, desc="phantom", unit="img", disable=args.quiet) as bar:
        manifest = write_dataset(Path(args.out), args.count, args.seed, opts, progress=lambda n: bar.update(1))
    print(json.dumps({"manifest": str(manifest), "count": args.count, "seed": args.seed}))
    return 0


def _pipeline(cfg, methods=()):
    """The loaded models; they must serve each of `methods` too (gradcam's layer), so a
    method they cannot serve fails before any image."""
    from .pipeline import Pipeline

    try:
        pipeline = Pipeline(cfg)
        for m in methods:
            pipeline.explainer(m.partition("@")[0])
    except (ValueError, FileNotFoundError) as exc:  # a model that does not load or fit
        raise UsageError(str(exc)) from None
    return pipeline


CALL_THRESHOLD = config_mod.CALL_THRESHOLD  # cfia explain; cfia evaluate's default


def _warn_no_objects(file: str, why: str) -> None:
    print(f"cfia: warning: {file}: no DICOM result objects ({why}); writing saliency.npy and overlay.png only",
          file=sys.stderr)


def _remove_earlier_objects(out: Path, written: dict) -> None:
    """Result objects an earlier run left in --out that this one did not write (its image had
    none, or fewer outputs are on): beside this image's maps they would stand for it, though
    they may be another patient's."""
    from dicom_out import OBJECT_TYPES

    earlier = [out / f"{kind}.dcm" for kind in OBJECT_TYPES if kind not in written and (out / f"{kind}.dcm").is_file()]
    for path in earlier:
        path.unlink()
    if earlier:
        print(f"cfia: warning: --out {out}: removed {len(earlier)} result object(s) an earlier run left there "
              f"({', '.join(p.name for p in earlier)}), not this image's", file=sys.stderr)


def cmd_explain(args) -> int:
    import numpy as np

    from dicom_out import UnsupportedSource

    from explain.counterfactual import NoGradient

    from . import overlay
    from .dicom_io import ImageReadError, from_dataset, read_dataset
    from .pipeline import presented

    cfg = load_config(args.config)
    if args.method:  # the method explained is the config's for the pipeline's checks and the result UIDs
        cfg = dataclasses.replace(cfg, explainer=dataclasses.replace(cfg.explainer, method=args.method))
    try:
        source = read_dataset(args.file)
        src = from_dataset(source, args.file)
    except ImageReadError as exc:
        raise UsageError(str(exc)) from None
    no_objects = _why_no_result_objects(source)
    if no_objects:  # e.g. a Secondary Capture mammogram (CBIS-DDSM): the maps are still worth having
        _warn_no_objects(args.file, no_objects)
    made = not Path(args.out).exists()
    out = _output_folder(args.out)
    try:
        pipeline = _pipeline(cfg)
        found = pipeline.explain(src, cfg.explainer.method)
    except BaseException as exc:  # a refusal or a crash: no empty folder left behind as if it were a result
        if made:
            _remove_if_empty(out)
        if isinstance(exc, NoGradient):
            raise UsageError(f"{args.file}: {exc}") from None
        raise
    result = presented(found)  # what the objects show: no region for a negative call
    objects = {}
    if not no_objects:
        try:
            objects = pipeline.result_objects(source, result)
        except UnsupportedSource as exc:  # a header the builders cannot carry: the maps are written
            no_objects = str(exc)
            _warn_no_objects(args.file, no_objects)
    try:  # e.g. a folder named saliency.npy in --out, or the disk full
        np.save(out / "saliency.npy", result.saliency)
        outputs = [str(out / "saliency.npy"), str(overlay.save(
            out / "overlay.png", result.display, result.saliency, result.region, aspect=src.pixel_aspect,
            caption=overlay.described(result)))]
        for kind, ds in objects.items():
            ds.save_as(out / f"{kind}.dcm", enforce_file_format=True)
            outputs.append(str(out / f"{kind}.dcm"))
        _remove_earlier_objects(out, objects)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write {exc.filename or 'the outputs'} ({exc.strerror})") from None
    line = _explained_line(result, found, outputs, no_objects)
    _warn_explained(args.file, result, found, line, cfg.explainer)
    print(json.dumps(line))
    return 0


def _why_no_result_objects(source) -> str | None:
    from dicom_out import UnsupportedSource, check_source

    try:
        check_source(source)
    except UnsupportedSource as exc:
        return str(exc)
    return None


def _explained_line(result, found, outputs: list[str], no_objects: str) -> dict:
    """`cfia explain`'s JSON line: what was shown (`result`, as presented) and, where its region
    was withheld, the method's own (`found`)."""
    line = {
        "method": result.method, "score": round(result.score, 6),
        "score_after_deletion": round(result.score_after_deletion, 6), "passes": result.passes,
        "region_forwards": result.region_forwards,
        "seconds": round(result.seconds, 3), "region_pixels": int(result.region.sum()), "outputs": outputs,
    }
    if no_objects:
        line["dicom_objects_skipped"] = no_objects
    if result.caveat:
        line["caveat"] = result.caveat
    if result.withheld:  # what the method's own region was, and what deleting it did
        line.update(region_withheld=result.withheld, method_region_pixels=int(found.region.sum()),
                    method_score_after_deletion=round(found.score_after_deletion, 6))
    # A positive call that survives the region's deletion does not rest on that region
    # (e.g. evidence spread over tissue unlike the training data): say so, not only in numbers.
    # No region (e.g. IG's scattered pixels, all below min_region_pixels): nothing was deleted.
    line["call_survives_deletion"] = (bool(min(result.score, result.score_after_deletion) >= CALL_THRESHOLD)
                                      if result.region.any() else None)
    return line


def _warn_explained(file, result, found, line: dict, explainer) -> None:
    """One warning on stderr where a positive call gets no region, or one that does not hold it;
    another for a caveat on the call itself (an implant in view)."""
    from .pipeline import WITHHELD_EMPTY_MAP, WITHHELD_NOT_LOWER

    if result.caveat:
        print(f"cfia: warning: {file}: {result.caveat}", file=sys.stderr)
    if result.withheld == WITHHELD_NOT_LOWER:
        print(f"cfia: warning: {file}: no salient region: replacing the {result.method} region did not lower "
              f"the score (p {found.score:.2f} -> {found.score_after_deletion:.2f}): it holds none of the evidence",
              file=sys.stderr)
    elif result.withheld == WITHHELD_EMPTY_MAP:
        hint = ("; for a model with several output logits, explainer.baseline_score: log_odds explains the "
                "class's log-odds, as cf does, instead of its own logit"
                if result.method in ("gradcam", "occlusion", "ig") and explainer.baseline_score == "logit" else "")
        print(f"cfia: warning: {file}: no salient region: the {result.method} map is empty: nothing in the image "
              f"raises the explained score as the method measures it{hint}", file=sys.stderr)
    elif not result.region.any() and result.score >= CALL_THRESHOLD:
        print(f"cfia: warning: {file}: no salient region: no part of the {result.method} map above its "
              "threshold is as large as explainer.min_region_pixels", file=sys.stderr)
    elif line["call_survives_deletion"]:
        print(f"cfia: warning: {file}: still called positive (p {result.score_after_deletion:.2f}) with the "
              "salient region replaced: the region does not hold all of the classifier's evidence", file=sys.stderr)


def cmd_evaluate(args) -> int:
    from tqdm import tqdm

    from . import evaluate as ev

    cfg = load_config(args.config)
    methods = _evaluated_methods(args.methods)
    alter = _alteration(args.alter) if args.alter else None
    out = Path(args.out)
    if out.suffix.lower() == ".png" or os.path.isdir(out):  # isdir: a name too long is no folder, said below
        raise UsageError(f"--out {out}: the report's JSON file (its figure goes beside it as .png)")
    figure = ev.figure_path(out)
    _check_creatable(out, figure)
    pipeline = _pipeline(cfg, methods)
    if args.passes is not None:
        pipeline = ev.with_passes(pipeline, args.passes)
    from .manifest import DataError, read_manifest

    try:
        total = sum(1 for r in read_manifest(args.data) if r.label == 1)
    except DataError as exc:
        raise UsageError(f"--data {args.data}: {exc}") from None
    command = args.command_line

    def checkpoint(partial):
        if not partial["cases"]:  # the run has started (its data passed the checks): drop the earlier figure
            figure.unlink(missing_ok=True)
        ev.write_report(partial, out, command)

    # With --limit the run ends after that many positive calls, however many images it scans:
    # the bar counts calls then, not scanned images.
    calls = args.limit is not None
    with tqdm(total=min(total, args.limit) if calls else total, desc="evaluate",
              unit="call" if calls else "img") as bar:
        def progress(name, p):
            if not calls or p >= args.threshold:
                bar.update(1)

        try:
            report, rows = ev.evaluate(pipeline, Path(args.data), methods, args.limit, args.threshold,
                                       progress=progress, checkpoint=checkpoint, alter=alter)
        except DataError as exc:
            raise UsageError(f"--data {args.data}: {exc}") from None
        except KeyboardInterrupt:  # each case was written as it was done
            raise UsageError(f"stopped; the cases done so far are in {out} (\"complete\": false), "
                             "a new run starts over") from None
        if bar.n < bar.total:  # the folder held fewer positive calls than --limit
            bar.total = bar.n
            bar.refresh()
    ev.write_report(report, out, command)
    _print_evaluation(report, out, f"figure {figure}" if ev.save_figure(rows, figure) else "no figure (no case)")
    return 0


def _evaluated_methods(text: str) -> list[str]:
    """--methods: known methods, each optionally with its own pass budget (cf@300)."""
    methods = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in methods if not re.fullmatch(rf"({'|'.join(METHODS)})(@[1-9][0-9]*)?", m)]
    if bad or not methods:
        raise UsageError(f"--methods: {','.join(bad) or repr(text)} not allowed; allowed: "
                         f"{','.join(METHODS)}, each optionally @PASSES (e.g. cf@300)")
    return methods


def _alteration(name: str):
    """--alter: one of the robustness bench's alterations that keep the pixel grid, so the
    lesion masks stay as they are."""
    from .bench.robustness import SAME_GRID

    named = {key.replace(" ", "-"): f for key, f in SAME_GRID.items()}
    if name not in named:
        raise UsageError(f"--alter: {name!r} is not one of {', '.join(named)}")
    return named[name]


def _print_evaluation(report: dict, out: Path, figure_note: str) -> None:
    from . import evaluate as ev

    print(ev.table(report["summary"]))
    if report.get("summary_by_kind"):
        print(ev.table_by_kind(report["summary_by_kind"]))
    if report.get("paired"):
        print(ev.table_paired(report["paired"]))
    without = report["called_without_lesion"]
    print(f"{len(without)} of {report['n_positive_called']} still called positive once their true lesion is "
          f"inpainted (the call does not rest on the lesion){': ' + ', '.join(without) if without else ''}")
    print(f"{report['n_positive_called']} of the {report['n_scanned']} positives scanned called positive "
          f"({report['n_positive']} in the folder); report {out}, {figure_note}")


def cmd_config_show(args) -> int:
    cfg = load_config(args.config)
    import yaml

    print(yaml.safe_dump(config_mod.to_dict(cfg), sort_keys=False), end="")
    missing = config_mod.missing_model_files(cfg)
    if missing:  # a copied config's relative model paths now point next to the copy
        raise UsageError("model file(s) not found: " + "; ".join(missing))
    return 0


def cmd_serve(args) -> int:
    from .serve import serve
    from .workers import EXIT_CONFIG

    try:
        cfg = load_config(args.config)
    except config_mod.ConfigError as exc:  # 78, not 2: systemd must not restart a wrong config
        print(f"cfia: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    source = config_file(args.config)
    return serve(cfg, str(source) if source else None)


def _check_queue_file(spool) -> None:
    """One line, exit 2, when the spool has no queue or cannot be looked into: the unit
    makes the spool 0700 for its own user, so an operator's own account cannot; or when the
    queue's full path is too long for SQLite."""
    from .files import sqlite_path_problem

    too_long = sqlite_path_problem(spool.queue_file)
    if too_long:
        raise UsageError(f"cannot read the job queue {too_long}: choose a shorter spool.folder")
    try:
        there = spool.queue_file.exists()
    except OSError as exc:
        raise UsageError(f"cannot read the job queue {spool.queue_file}: {exc.strerror or exc} "
                         "(run as the node's user, e.g. sudo -u cfia)") from None
    if not there:
        raise UsageError(f"no job queue at {spool.queue_file}: has cfia serve run with this config?")


def cmd_status(args) -> int:
    import sqlite3

    from listener import JobQueue, Spool

    from . import status

    cfg = load_config(args.config)
    spool = Spool(cfg.spool.folder)
    _check_queue_file(spool)
    try:  # read-only: status must work on a spool it cannot write (read-only file system, other user)
        queue = JobQueue(spool.queue_file, read_only=True)
        try:
            snap = status.snapshot(queue)
        finally:
            queue.close()
    except (OSError, sqlite3.Error) as exc:
        raise UsageError(f"cannot read the job queue {spool.queue_file}: {exc}") from None
    serve_info = status.read_serve_info(spool.root)
    if args.json:
        print(json.dumps({"server": serve_info, **snap}, indent=2))
    else:
        print(status.format_text(snap, serve_info))
    return 0


def cmd_requeue(args) -> int:
    import sqlite3

    from listener import JobQueue, Spool

    from .requeue import RequeueError, requeue

    cfg = load_config(args.config)
    spool = Spool(cfg.spool.folder)
    _check_queue_file(spool)
    if bool(args.jobs) == args.all_failed:
        raise UsageError("name the job ids to requeue, or --all-failed (not both)")
    problems = 0
    try:  # a spool that cannot be written (read-only file system): one line, exit 2
        queue = JobQueue(spool.queue_file)
        try:
            for job_id in queue.failed_ids() if args.all_failed else args.jobs:
                try:
                    done = requeue(spool, queue, job_id)
                    print(f"job {done.job_id} requeued (SOP Instance UID {done.sop_instance_uid}); "
                          f"old reason kept in {done.reason_kept}")
                except RequeueError as exc:
                    problems += 1
                    print(f"cfia requeue: {exc}", file=sys.stderr)
        finally:
            queue.close()
    except (OSError, sqlite3.Error) as exc:
        raise UsageError(f"cannot requeue in the spool {spool.root}: {exc}") from None
    return 2 if problems else 0


def cmd_demo(args) -> int:
    from . import demo

    try:  # bad input (size, --out, config) fails in run() before anything starts
        demo.run(Path(args.out), Path(args.config) if args.config else None, args.size, args.seed, args.timeout)
    except demo.DemoError as exc:
        raise UsageError(f"demo failed: {exc}") from None
    return 0


def _version() -> str:
    from importlib import metadata
    try:
        return metadata.version("cfia")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cfia",
        description="Explain a mammography classifier by counterfactual impact analysis, as a DICOM node.",
    )
    from .training.commands import add_train

    parser.add_argument("--version", action="version", version=f"cfia {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_phantom(sub)
    _add_explain(sub)
    _add_evaluate(sub)
    add_train(sub)
    _add_serve(sub)
    _add_demo(sub)
    _add_status(sub)
    _add_requeue(sub)
    _add_config(sub)
    return parser


def _add_phantom(sub) -> None:
    p = sub.add_parser("phantom", help="generate synthetic MG DICOM mammograms with lesion masks",
                       description="Write N synthetic mammograms (MG DICOM), lesion masks (.npy) and manifest.csv.")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--count", type=int, default=10, help="number of images, 1 to 100000 (default 10)")
    p.add_argument("--seed", type=int, default=0,
                   help="random seed, 0 to 4294967295; same seed, same files (default 0)")
    p.add_argument("--size", type=_size, default=(1024, 832),
                   help="ROWSxCOLS, 64x64 up to 4096x3328, columns/rows 0.5 to 2 (default 1024x832)")
    p.add_argument("--positive-fraction", type=float, default=0.5, help="fraction of images with a lesion (default 0.5)")
    p.add_argument("--bits", type=int, default=12, help="BitsStored, 12 to 16 (default 12)")
    p.add_argument("--for-processing", action="store_true", help="write For Processing (raw) instead of For Presentation")
    p.add_argument("--photometric", choices=("MONOCHROME1", "MONOCHROME2"), default="MONOCHROME2")
    p.add_argument("--frame-of-reference", action="store_true", help="add a Frame of Reference module")
    p.add_argument("--pixel-spacing", action="store_true",
                   help="add PixelSpacing (corrected for the magnification) besides ImagerPixelSpacing")
    p.add_argument("--generator", choices=("standard", "compartments", "trabecular"), default="standard",
                   help="standard (what the shipped models trained on); compartments and trabecular: a second and a "
                        "third generator with other texture, outline and detector models (the second also other "
                        "lesions), for testing on images a model has never seen")
    p.add_argument("--lesion-kinds", default=None, metavar="K1,K2",
                   help="draw only these lesion kinds (default: all of the generator's own); standard: circumscribed, "
                        "spiculated, calcifications; compartments: lobulated, ill-defined, distortion, "
                        "linear-calcifications; trabecular: all seven; every generator draws any of them")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_phantom)


def _add_explain(sub) -> None:
    p = sub.add_parser("explain", help="explain one mammogram (DICOM file)",
                       description="Explain the classifier's score for one mammogram: writes saliency.npy, "
                                   "overlay.png and the enabled DICOM result objects; prints one JSON line.")
    p.add_argument("file", help="an MG DICOM file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--method", choices=METHODS, default=None,
                   help="explanation method (default: explainer.method in the config)")
    p.add_argument("--config", help="config file (default: config.yaml in the install folder)")
    p.set_defaults(func=cmd_explain)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="measure explanation methods on a phantom folder",
                       description="On a `cfia phantom` folder, explain every image the classifier calls positive "
                                   "with each method and score the maps against the lesion masks.")
    p.add_argument("--data", required=True, help="folder with manifest.csv (as written by cfia phantom)")
    p.add_argument("--methods", default="cf,blur,gradcam,occlusion,ig",
                   help="comma-separated methods; METHOD@N runs it with N passes (e.g. cf,cf@300)")
    p.add_argument("--out", required=True, help="report JSON path (a PNG figure is written beside it)")
    p.add_argument("--limit", type=_positive, default=None, help="stop after this many positive-called images")
    p.add_argument("--threshold", type=_probability, default=CALL_THRESHOLD,
                   help="probability that counts as positive, 0 to 1 (default %(default)s; 0 counts every image)")
    p.add_argument("--passes", type=_positive, default=None, help="override explainer.max_passes")
    p.add_argument("--alter", help="change every image first, as another acquisition might: e.g. gamma-1.4, "
                                   "noise-0.1-sd, half-resolution, burned-in-label; any alteration of "
                                   "cfia.bench.robustness that keeps the image's grid (a wrong name lists them)")
    p.add_argument("--config", help="config file (default: config.yaml in the install folder)")
    p.set_defaults(func=cmd_evaluate)


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="run the DICOM node in the foreground",
                       description="Receive mammograms (C-STORE), explain them in worker processes and send the "
                                   "results to the configured destinations. Stops cleanly on SIGTERM or Ctrl-C.")
    p.add_argument("--config", help=f"config file (default {DEFAULT_CONFIG.name} in the install folder)")
    p.set_defaults(func=cmd_serve)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="the whole node end to end on loopback, with the shipped models",
                       description="Generate a synthetic mammogram with a lesion, start cfia serve (free port, "
                                   "temporary spool), push the image with C-STORE, receive the result objects into "
                                   "OUT, write OUT/overlay.png and OUT/summary.json, print what happened, stop.")
    p.add_argument("--out", default="demo-out", help="output folder (default ./demo-out)")
    p.add_argument("--config", help="base config; ports, spool and destinations are the demo's "
                                    "(default: config.yaml in the install folder)")
    p.add_argument("--size", type=_size, default=(1024, 832), help="phantom ROWSxCOLS (default 1024x832)")
    p.add_argument("--seed", type=int, default=None, help="phantom seed (default: the demo's own)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the results (default 900)")
    p.set_defaults(func=cmd_demo)


def _add_status(sub) -> None:
    p = sub.add_parser("status", help="print queue counts, last errors and throughput",
                       description="Read the job queue in the configured spool folder and print its state.")
    p.add_argument("--config", help=f"config file (default {DEFAULT_CONFIG.name} in the install folder)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_status)


def _add_requeue(sub) -> None:
    p = sub.add_parser("requeue", help="send failed jobs back from the dead-letter folder to the queue",
                       description="Requeue failed jobs (see `cfia status` and spool/dead-letter/) once their "
                                   "cause is fixed; a running cfia serve picks them up.")
    p.add_argument("jobs", nargs="*", type=int, metavar="JOB_ID", help="job ids (from cfia status or dead-letter/)")
    p.add_argument("--all-failed", action="store_true", help="every failed job")
    p.add_argument("--config", help=f"config file (default {DEFAULT_CONFIG.name} in the install folder)")
    p.set_defaults(func=cmd_requeue)


def _add_config(sub) -> None:
    p = sub.add_parser("config", help="inspect the configuration", description="Inspect the configuration.")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    s = csub.add_parser("show", help="validate and print the effective config",
                        description="Validate config.yaml and print the effective configuration (secrets hidden).")
    s.add_argument("--config", help=f"config file (default {DEFAULT_CONFIG.name} in the install folder)")
    s.set_defaults(func=cmd_config_show)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # What a report records as its command: the arguments given, also when called in-process.
    args.command_line = "cfia " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    try:
        if args.func is cmd_serve:  # its log captures warnings, withheld there
            return args.func(args)
        with logs.withheld_warnings():
            return args.func(args)
    except (UsageError, config_mod.ConfigError) as exc:
        print(f"cfia: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # `python -m cfia.cli`: run the imported module's main, not this __main__ copy's, so the
    # UsageError that cfia.training.commands raises (cfia.cli's) is the one main catches.
    from cfia.cli import main as _main

    sys.exit(_main())
