"""The `cfia train` subcommands (inpainter, classifier, average): their arguments, the checks
on --out and --resume before a run's minutes, and the one line a run ends with."""
from __future__ import annotations

import gc
import json
import sys
from pathlib import Path

from .. import config as config_mod
from ..cli import UsageError, _output_folder, _positive, _size, load_config


MODEL_FILES = ("classifier.pt", "classifier.ts", "classifier.json")


def _refuse_overwrite(out: Path, names: tuple, replace: bool) -> None:
    """--out defaults to models/: run from the install folder, a new model would replace the
    shipped one (and the node would explain with it). Replaced only when asked to."""
    if replace:
        return
    for name in names:
        if (out / name).exists():
            raise UsageError(f"--out {out}: {out / name} exists; give --force to replace it, or another --out")


def _refuse_fresh_over(ckpt: Path, models: tuple, keep: bool) -> None:
    """A fresh run's first epoch would overwrite an interrupted run's checkpoint: hours of
    training lost to a forgotten --resume. Replaced only when asked to. Checked before the
    model files (_refuse_overwrite): a run ended early (--stop-after) has its model too, and
    only this message names --resume."""
    if keep or not ckpt.is_file():
        return
    model = next((ckpt.parent / name for name in models if (ckpt.parent / name).exists()), None)
    also = f", and {model} exists" if model else ""
    raise UsageError(f"--out {ckpt.parent}: {ckpt} holds an earlier run{_epoch_of(ckpt)}{also}; give --resume to "
                     "continue it, --force to start afresh over it, or another --out")


EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a command stopped by Ctrl-C


def _file_stamp(path: Path):
    """What tells whether a file was (re)written since: a checkpoint is replaced by a rename,
    so its inode changes too (a coarse file-system clock cannot hide it)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _stopped(ckpt: Path, before, resuming: bool) -> int:
    """Ctrl-C during training: one line, not a traceback, naming the checkpoint --resume
    continues from when this run wrote one (or resumed it); another run's, left in --out, is
    not this run's to offer."""
    gc.collect()  # the interrupted run's progress bars close (tqdm does when freed) before this line, not after
    after = _file_stamp(ckpt)
    if after is None or not (resuming or after != before):
        line = "cfia: stopped before this run wrote a checkpoint: nothing of it to resume"
    else:
        line = (f"cfia: stopped; the last checkpoint is {ckpt}{_epoch_of(ckpt)}: "
                "the same command with --resume continues from it")
    print(f"\n{line}", file=sys.stderr)  # a bar left open (or the ^C echoed) may hold the cursor mid-line
    return EXIT_INTERRUPTED


def _epoch_of(ckpt: Path) -> str:
    """' (epoch N)' from a training checkpoint, '' when it cannot be read."""
    import torch

    try:
        return f" (epoch {int(torch.load(ckpt, map_location='cpu', weights_only=True)['epoch'])})"
    except Exception:  # noqa: BLE001 - the message goes out without the epoch
        return ""


def cmd_train_inpainter(args) -> int:
    from .inpainter import TrainOptions, train
    from ..manifest import DataError

    _training_logs()
    out = _output_folder(args.out)
    _refuse_fresh_over(out / "inpainter.ckpt", ("inpainter.pt",), args.force or args.resume)
    _refuse_overwrite(out, ("inpainter.pt",), args.force or args.resume)  # --resume without a checkpoint stops
    opts = TrainOptions(
        epochs=args.epochs, seed=args.seed, crops_per_epoch=args.crops_per_epoch, batch_size=args.batch_size,
        crop_size=args.crop_size, lr=args.lr, lr_decay=args.lr_decay, threads=args.threads, device=args.device, val_crops=args.val_crops,
        aug_texture=args.aug_texture, input_size=args.input_size,
    )
    ckpt = out / "inpainter.ckpt"
    before = _file_stamp(ckpt)
    try:
        report = train(args.data, args.out, opts, val_data=args.val_data, resume=args.resume, progress=not args.quiet)
    except (DataError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    except KeyboardInterrupt:
        report = None  # said out of this block, once the run's frames (and progress bars) are freed
    if report is None:
        return _stopped(ckpt, before, args.resume)
    print(json.dumps({k: report[k] for k in ("model", "sha256", "parameters", "skipped", "heldout")}))
    return 0


def _network_args(args) -> dict:
    """--network-args as a dict; when not given, the default network's, and none for another
    network (an error naming MammoNet's arguments would name none the user gave)."""
    from .classifier import DEFAULT_ARGS, DEFAULT_NETWORK

    default = DEFAULT_ARGS if args.network in (None, DEFAULT_NETWORK) else {}
    try:
        return json.loads(args.network_args) if args.network_args else dict(default)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--network-args is not valid JSON: {exc}") from None


def _evaluate_configured(args, evaluate) -> dict:
    """--eval-only --config: the classifier exactly as the node's config has it (kind, file,
    network, class index, output, input size, intensity handling)."""
    given = [flag for flag, value in (("--model", args.model), ("--network", args.network),
                                      ("--network-args", args.network_args), ("--class-index", args.class_index),
                                      ("--output", args.output)) if value is not None]
    if given:
        raise UsageError(f"--config names the classifier; leave out {', '.join(given)}")
    c = load_config(args.config).models.classifier
    return evaluate(c.path, args.data, c.input_size, kind=c.kind, network=c.network, network_args=c.network_args,
                    cache_dir=args.cache_dir, workers=args.workers, device=args.device, threads=args.threads,
                    progress=not args.quiet, class_index=c.class_index, output=c.output,
                    intensity=dict(in_channels=c.channels, input_range=c.input_range, mean=c.mean, std=c.std))


def _training_logs() -> None:
    """A training run's lines between epochs (loss, the run's time left) on stderr."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def cmd_train_classifier(args) -> int:
    from .classifier import DEFAULT_NETWORK, TrainOptions, evaluate, train
    from ..manifest import DataError

    _training_logs()
    network_args = _network_args(args)
    try:
        if args.eval_only and args.test_data:
            raise UsageError("--test-data goes with training; --eval-only reports on --data")
        if args.eval_only and args.config:
            print(json.dumps(_evaluate_configured(args, evaluate)))
            return 0
        if args.config:
            raise UsageError("--config goes with --eval-only (the classifier as the node reads it)")
        if args.eval_only:
            if not args.model:
                raise UsageError("--eval-only needs --model (a .ts or .pt file) or --config")
            res = evaluate(args.model, args.data, args.input_size, network=args.network,
                           network_args=network_args, cache_dir=args.cache_dir, workers=args.workers,
                           device=args.device, threads=args.threads, progress=not args.quiet,
                           class_index=1 if args.class_index is None else args.class_index,
                           output=args.output or "logits")
            print(json.dumps(res))
            return 0
        if args.class_index is not None or args.output:  # training exports class 1 logits
            raise UsageError("--class-index and --output go with --eval-only (how to read --model)")
        out = _output_folder(args.out)
        # --resume replaces what its own run wrote; without a checkpoint it starts afresh.
        _refuse_fresh_over(out / "classifier.ckpt", MODEL_FILES, args.force or args.resume)
        _refuse_overwrite(out, MODEL_FILES, args.force or (args.resume and (out / "classifier.ckpt").is_file()))
        opts = TrainOptions(
            data=args.data, out=args.out, val_data=args.val_data or [], epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, seed=args.seed, input_size=args.input_size,
            network=args.network or DEFAULT_NETWORK, network_args=network_args, resume=args.resume,
            init=args.init, stop_after=args.stop_after,
            device=args.device, threads=args.threads, workers=args.workers, cache_dir=args.cache_dir,
            augment=not args.no_augment, aug_noise=args.aug_noise,
            aug_noise_corr=args.aug_noise_corr, aug_markers=args.aug_markers,
            aug_texture=args.aug_texture, aug_implant=args.aug_implant, aug_clips=args.aug_clips,
            progress=not args.quiet,
            lesion_weight=args.lesion_weight,
            command=args.command_line,
        )
        ckpt = out / "classifier.ckpt"
        before = _file_stamp(ckpt)
        try:
            if args.test_data:  # reads every image's header: seconds, under Ctrl-C's reach too
                _check_test_data(args)
            meta = train(opts)
            final = {"selected": meta["selected"], "out": args.out, **_final_report(args, evaluate)}
        except KeyboardInterrupt:
            final = None  # said out of this block, once the run's frames (and progress bars) are freed
        if final is None:
            return _stopped(ckpt, before, args.resume)
        print(json.dumps(final))
        return 0
    except (DataError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def _check_test_data(args) -> None:
    """--test-data readable and sharing no image with --data or --val-data (its report would
    hold training or selection figures), before the training's minutes."""
    from ..manifest import DataError, read_manifest
    from .data import check_apart

    try:
        test = [r.path for folder in args.test_data for r in read_manifest(folder)]
    except DataError as exc:
        raise UsageError(f"--test-data: {exc}") from None
    for flag, folders in (("--data", args.data), ("--val-data", args.val_data or [])):
        check_apart([r.path for folder in folders for r in read_manifest(folder)], test, flag, "--test-data",
                    "the held-out report must be held apart from training and selection")


def _final_report(args, evaluate) -> dict:
    """The exported model on --test-data: held out, never trained nor selected on. Without it,
    on --val-data, named for what it is: the epoch was picked on those images, so its figures
    flatter the model."""
    folders = args.test_data or args.val_data
    if not folders:
        return {}
    res = evaluate(str(Path(args.out) / "classifier.ts"), folders, args.input_size, cache_dir=args.cache_dir,
                   workers=args.workers, device="cpu", threads=args.threads, progress=False)
    return {"held_out": res} if args.test_data else {"validation": {**res, "used_for_selection": True}}


def cmd_train_average(args) -> int:
    from .average import average
    from .classifier import DEFAULT_NETWORK

    network_args = _network_args(args)
    # Nothing is written when the models cannot be mixed.
    _refuse_overwrite(_output_folder(args.out, create=False), MODEL_FILES, args.force)
    try:
        meta = average(args.models, args.weights, args.out, args.network or DEFAULT_NETWORK, network_args,
                       args.input_size, command=args.command_line)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(json.dumps({"out": args.out, "averaged_from": meta["averaged_from"]}))
    return 0


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model", description="Train one of cfia's models.")
    tsub = p.add_subparsers(dest="train_command", required=True, metavar="MODEL")
    _add_train_inpainter(tsub)
    _add_train_classifier(tsub)
    _add_train_average(tsub)


def _add_train_inpainter(tsub) -> None:
    t = tsub.add_parser(
        "inpainter", help="train the learned inpainter on lesion-free tissue",
        description="Train the gated-convolution U-Net inpainter on lesion-free crops of the images in --data "
                    "(label-0 images, and positives away from their mask). Writes OUT/inpainter.ckpt each epoch, "
                    "OUT/inpainter.pt and OUT/inpainter.report.json (held-out metrics) at the end.")
    t.add_argument("--data", required=True,
                   help="folder with manifest.csv (file,label; optionally mask,laterality) and MG DICOM")
    t.add_argument("--out", default="models", help="output folder (default models/)")
    t.add_argument("--epochs", type=_positive, default=10, help="epochs (default 10)")
    t.add_argument("--seed", type=int, default=0,
                   help="random seed; same seed and --threads, same weights on CPU (default 0)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/inpainter.ckpt")
    t.add_argument("--force", action="store_true",
                   help="replace an inpainter.pt, or start afresh over an inpainter.ckpt, already in --out")
    t.add_argument("--val-data", help="held-out folder (default: 10%% of --data's images, chosen by seed)")
    t.add_argument("--crops-per-epoch", type=_positive, default=2048, help="crops per epoch (default 2048)")
    t.add_argument("--batch-size", type=_positive, default=8, help="crops per step (default 8)")
    t.add_argument("--crop-size", type=_positive, default=96, help="crop side in pixels (default 96)")
    t.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate of epoch 1 (default 5e-4)")
    t.add_argument("--lr-decay", type=float, default=0.7, help="lr of epoch e = max(lr*decay**e, lr/10) (default 0.7)")
    t.add_argument("--val-crops", type=_positive, default=64, help="held-out crops in the final report (default 64)")
    t.add_argument("--aug-texture", type=float, default=0.0,
                   help="fraction of the crops given extra tissue texture (a power-law field or glandular "
                        "islands, 0.3-2 x the crop's pixel s.d.; default 0)")
    t.add_argument("--input-size", type=_size, default=None,
                   help="ROWSxCOLS: take the crops from the images as the node gives them to the inpainter, "
                        "the classifier's input of this size (e.g. 512x352, the default classifier's: breast "
                        "crop, resize, air zeroed); for detector-size images. Default: the stored pixels, at "
                        "scales 1 and 0.5 (how the shipped inpainter was trained, on 512-row phantoms)")
    t.add_argument("--threads", type=_positive, default=1, help="torch CPU threads (default 1)")
    t.add_argument("--device", default="cpu", help="torch device (default cpu)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train_inpainter)


def _add_train_classifier(tsub) -> None:
    t = tsub.add_parser("classifier", help="train (or evaluate) the default mammogram classifier",
                        description="Train the default classifier on manifest.csv folders (cfia phantom output), "
                                    "checkpointing every epoch; or, with --eval-only, report AUC/accuracy of a "
                                    "trained model on held-out folders.")
    t.add_argument("--data", required=True, nargs="+", help="data folder(s) with manifest.csv")
    t.add_argument("--val-data", nargs="+",
                   help="validation folder(s): per-epoch validation and model selection (best AUC); the final "
                        "report's \"validation\" when no --test-data")
    t.add_argument("--test-data", nargs="+",
                   help="held-out folder(s), used neither for training nor for selection: the final report's "
                        "\"held_out\" (without it there is none)")
    t.add_argument("--out", default="models", help="output folder (default models/)")
    t.add_argument("--epochs", type=_positive, default=30, help="epochs (default 30)")
    t.add_argument("--batch-size", type=_positive, default=32, help="batch size (default 32)")
    t.add_argument("--lr", type=float, default=2e-3, help="peak learning rate, cosine schedule (default 2e-3)")
    t.add_argument("--seed", type=int, default=0,
                   help="random seed; same seed, device type and --threads, same weights (default 0)")
    t.add_argument("--input-size", type=_size, default=config_mod.DEFAULT_CLASSIFIER_INPUT,
                   help="ROWSxCOLS network input (default: the shipped model's, %dx%d)" % config_mod.DEFAULT_CLASSIFIER_INPUT)
    t.add_argument("--network", help="network class: MammoNet (default) or a monai.networks.nets class")
    t.add_argument("--network-args", help="network constructor arguments as JSON")
    t.add_argument("--resume", action="store_true", help="continue from OUT/classifier.ckpt")
    t.add_argument("--force", action="store_true",
                   help="replace a classifier.pt/.ts/.json, or start afresh over a classifier.ckpt, already in --out")
    t.add_argument("--init", help="start from these weights (e.g. models/classifier.pt: fine-tune the default "
                                  "model on your data); optimiser and schedule start fresh")
    t.add_argument("--stop-after", type=_positive, help="end this run after N epochs (checkpointed); --resume continues")
    t.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu")
    t.add_argument("--threads", type=_positive, default=2, help="torch CPU threads (default 2)")
    t.add_argument("--workers", type=_positive, default=2, help="preprocessing processes (default 2)")
    t.add_argument("--cache-dir", help="preprocessed-image cache (default DATA/.cfia-cache)")
    t.add_argument("--no-augment", action="store_true", help="train without augmentation")
    t.add_argument("--aug-noise", type=float, default=0.03,
                   help="largest s.d. of the white noise augmentation adds, on the [0, 1] input (default 0.03)")
    t.add_argument("--aug-noise-corr", type=float, default=0.0,
                   help="fraction of the samples whose added noise is spatially correlated (white noise "
                        "Gaussian-filtered, sigma 0.5-2 input pixels, same s.d.; default 0: all white)")
    t.add_argument("--aug-markers", type=float, default=0.0,
                   help="fraction of the samples given radiopaque skin markers (lead letters, BBs, scar "
                        "lines, saturated, on the skin line; default 0)")
    t.add_argument("--aug-texture", type=float, default=0.0,
                   help="fraction of the samples, of either label, given extra tissue texture inside the "
                        "breast (a power-law field or glandular islands; default 0)")
    t.add_argument("--aug-implant", type=float, default=0.0,
                   help="fraction of the samples, of either label, given a breast implant behind the tissue "
                        "(a bright rounded shape against the chest wall; default 0)")
    t.add_argument("--aug-clips", type=float, default=0.0,
                   help="fraction of the samples, of either label, given 1-3 metal clips inside the breast "
                        "(bars, bent bars, rings, barbells, near saturation; default 0)")
    t.add_argument("--lesion-weight", type=float, default=1.0,
                   help="weight of the lesion-mask deep supervision (MammoNet; 0 = labels only; default 1)")
    t.add_argument("--eval-only", action="store_true", help="only evaluate --model on --data")
    t.add_argument("--model", help="--eval-only: model file (.ts TorchScript, or .pt state dict)")
    t.add_argument("--config", help="--eval-only: evaluate the classifier as this config.yaml has it "
                                    "(kind, file, class index, output, input size, intensity), instead of --model")
    t.add_argument("--class-index", type=int, help="--eval-only: the model's positive class (default 1)")
    t.add_argument("--output", choices=("logits", "probabilities"),
                   help="--eval-only: what the model returns (default logits)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=cmd_train_classifier)


def _add_train_average(tsub) -> None:
    t = tsub.add_parser("average", help="average the weights of fine-tunes of one classifier (WiSE-FT, model soups)",
                        description="Write one classifier whose weights are the weighted mean of several state "
                                    "dicts of the same network, fine-tuned from the same starting weights "
                                    "(e.g. the default model and your fine-tune of it).")
    t.add_argument("--models", required=True, nargs="+",
                   help="state dicts (.pt) or training checkpoints (.ckpt) of one network")
    t.add_argument("--weights", type=float, nargs="+", help="one weight per model, >= 0, summing to 1 (default equal)")
    t.add_argument("--out", required=True, help="output folder: classifier.pt, .ts and .json")
    t.add_argument("--force", action="store_true", help="replace a classifier.pt/.ts/.json already in --out")
    t.add_argument("--input-size", type=_size, default=config_mod.DEFAULT_CLASSIFIER_INPUT,
                   help="ROWSxCOLS the TorchScript file is traced at (default %dx%d)" % config_mod.DEFAULT_CLASSIFIER_INPUT)
    t.add_argument("--network", help="network class: MammoNet (default) or a monai.networks.nets class")
    t.add_argument("--network-args", help="network constructor arguments as JSON")
    t.set_defaults(func=cmd_train_average)
