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


def cmd_train_classifier(args) -> int:
    import logging
    import shlex

    from .training.classifier import DEFAULT_ARGS, DEFAULT_NETWORK, TrainOptions, evaluate, train
    from .training.data import DataError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        network_args = json.loads(args.network_args) if args.network_args else dict(DEFAULT_ARGS)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--network-args is not valid JSON: {exc}") from None
    try:
        if args.eval_only:
            if not args.model:
                raise UsageError("--eval-only needs --model (a .ts or .pt file)")
            res = evaluate(args.model, args.data, args.input_size, network=args.network,
                           network_args=network_args, cache_dir=args.cache_dir, workers=args.workers,
                           device=args.device, threads=args.threads, progress=not args.quiet)
            print(json.dumps(res))
            return 0
        opts = TrainOptions(
            data=args.data, out=args.out, val_data=args.val_data or [], epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, seed=args.seed, input_size=args.input_size,
            network=args.network or DEFAULT_NETWORK, network_args=network_args, resume=args.resume,
            stop_after=args.stop_after,
            device=args.device, threads=args.threads, workers=args.workers, cache_dir=args.cache_dir,
            augment=not args.no_augment, progress=not args.quiet, lesion_weight=args.lesion_weight,
            command="cfia " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        )
        meta = train(opts)
        final = {"selected": meta["selected"], "out": args.out}
        if args.val_data:
            final["held_out"] = evaluate(str(Path(args.out) / "classifier.ts"), args.val_data, args.input_size,
                                         cache_dir=args.cache_dir, workers=args.workers, device="cpu",
                                         threads=args.threads, progress=False)
        print(json.dumps(final))
        return 0
    except (DataError, ValueError) as exc:
        raise UsageError(str(exc)) from None


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

    p = sub.add_parser("train", help="train a model", description="Train one of cfia's models.")
    tsub = p.add_subparsers(dest="train_command", required=True, metavar="MODEL")
    t = tsub.add_parser("classifier", help="train (or evaluate) the default mammogram classifier",
                        description="Train the default classifier on manifest.csv folders (cfia phantom output), "
                                    "checkpointing every epoch; or, with --eval-only, report AUC/accuracy of a "
                                    "trained model on held-out folders.")
    t.add_argument("--data", required=True, nargs="+", help="data folder(s) with manifest.csv")
    t.add_argument("--val-data", nargs="+", help="held-out folder(s): per-epoch validation, model selection, final report")
    t.add_argument("--out", default="models", help="output folder (default models/)")
    t.add_argument("--epochs", type=int, default=30, help="epochs (default 30)")
    t.add_argument("--batch-size", type=int, default=32, help="batch size (default 32)")
    t.add_argument("--lr", type=float, default=2e-3, help="peak learning rate, cosine schedule (default 2e-3)")
    t.add_argument("--seed", type=int, default=0, help="random seed; same seed, same weights (default 0)")
    t.add_argument("--input-size", type=_size, default=(384, 256), help="ROWSxCOLS network input (default 384x256)")
    t.add_argument("--network", help="network class: MammoNet (default) or a monai.networks.nets class")
    t.add_argument("--network-args", help="network constructor arguments as JSON")
    t.add_argument("--resume", action="store_true", help="continue from OUT/classifier.ckpt")
    t.add_argument("--stop-after", type=int, help="end this run after N epochs (checkpointed); --resume continues")
    t.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    t.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    t.add_argument("--workers", type=int, default=2, help="preprocessing processes (default 2)")
    t.add_argument("--cache-dir", help="preprocessed-image cache (default DATA/.cfia-cache)")
    t.add_argument("--no-augment", action="store_true", help="train without augmentation")
    t.add_argument("--lesion-weight", type=float, default=1.0,
                   help="weight of the lesion-mask deep supervision (MammoNet; 0 = labels only; default 1)")
    t.add_argument("--eval-only", action="store_true", help="only evaluate --model on --data")
    t.add_argument("--model", help="--eval-only: model file (.ts TorchScript, or .pt state dict)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train_classifier)

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
