"""The `cfia` command: one subcommand per task, each with its own --help."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import config as config_mod

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config.yaml"


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def _size(text: str) -> tuple[int, int]:
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ROWSxCOLS such as 1024x832, got {text!r}") from None
    return rows, cols


def load_config(path: str | None) -> config_mod.Config:
    cfg_path = Path(path) if path else DEFAULT_CONFIG
    if path is None and not cfg_path.exists():
        return config_mod.Config()
    return config_mod.load(cfg_path)


def cmd_phantom(args) -> int:
    from tqdm import tqdm

    from phantom.generate import PhantomOptions, write_dataset

    opts = PhantomOptions(
        size=args.size, positive_fraction=args.positive_fraction, bits_stored=args.bits,
        for_processing=args.for_processing, photometric=args.photometric,
        frame_of_reference=args.frame_of_reference, pixel_spacing=args.pixel_spacing,
    )
    try:
        opts.check()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    with tqdm(total=args.count, desc="phantom", unit="img", disable=args.quiet) as bar:
        manifest = write_dataset(Path(args.out), args.count, args.seed, opts, progress=lambda n: bar.update(1))
    print(json.dumps({"manifest": str(manifest), "count": args.count, "seed": args.seed}))
    return 0


def cmd_config_show(args) -> int:
    cfg = load_config(args.config)
    import yaml

    print(yaml.safe_dump(config_mod.to_dict(cfg), sort_keys=False), end="")
    return 0


def cmd_serve(args) -> int:
    from .serve import serve

    return serve(load_config(args.config), args.config)


def cmd_status(args) -> int:
    from listener import JobQueue, Spool

    from . import status

    cfg = load_config(args.config)
    spool = Spool(cfg.spool.folder)
    if not spool.queue_file.exists():
        raise UsageError(f"no job queue at {spool.queue_file}: has cfia serve run with this config?")
    queue = JobQueue(spool.queue_file)
    try:
        snap = status.snapshot(queue)
    finally:
        queue.close()
    serve_info = status.read_serve_info(spool.root)
    if args.json:
        print(json.dumps({"server": serve_info, **snap}, indent=2))
    else:
        print(status.format_text(snap, serve_info))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cfia",
        description="Explain a mammography classifier by counterfactual impact analysis, as a DICOM node.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("phantom", help="generate synthetic MG DICOM mammograms with lesion masks",
                       description="Write N synthetic mammograms (MG DICOM), lesion masks (.npy) and manifest.csv.")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--count", type=int, default=10, help="number of images (default 10)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files (default 0)")
    p.add_argument("--size", type=_size, default=(1024, 832), help="ROWSxCOLS, up to 4096x3328 (default 1024x832)")
    p.add_argument("--positive-fraction", type=float, default=0.5, help="fraction of images with a lesion (default 0.5)")
    p.add_argument("--bits", type=int, default=12, help="BitsStored, 12 to 16 (default 12)")
    p.add_argument("--for-processing", action="store_true", help="write For Processing (raw) instead of For Presentation")
    p.add_argument("--photometric", choices=("MONOCHROME1", "MONOCHROME2"), default="MONOCHROME2")
    p.add_argument("--frame-of-reference", action="store_true", help="add a Frame of Reference module")
    p.add_argument("--pixel-spacing", action="store_true", help="add PixelSpacing besides ImagerPixelSpacing")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_phantom)

    p = sub.add_parser("serve", help="run the DICOM node in the foreground",
                       description="Receive mammograms (C-STORE), explain them in worker processes and send the "
                                   "results to the configured destinations. Stops cleanly on SIGTERM or Ctrl-C.")
    p.add_argument("--config", help=f"config file (default {DEFAULT_CONFIG.name} in the install folder)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("status", help="print queue counts, last errors and throughput",
                       description="Read the job queue in the configured spool folder and print its state.")
    p.add_argument("--config", help=f"config file (default {DEFAULT_CONFIG.name} in the install folder)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("config", help="inspect the configuration", description="Inspect the configuration.")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    s = csub.add_parser("show", help="validate and print the effective config",
                        description="Validate config.yaml and print the effective configuration (secrets hidden).")
    s.add_argument("--config", help=f"config file (default {DEFAULT_CONFIG.name} in the install folder)")
    s.set_defaults(func=cmd_config_show)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, config_mod.ConfigError) as exc:
        print(f"cfia: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
