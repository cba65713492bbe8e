"""Try cfia against Orthanc by hand: Debian's Orthanc and `cfia serve`, wired to each other
on loopback (free ports), until Ctrl-C. See tests/orthanc/README.md.

    python -m tests.orthanc.run                               # start, print URLs, wait
    python -m tests.orthanc.run --upload my-mammograms/       # also upload, push, wait for results
    python -m tests.orthanc.run --upload a.dcm --once         # ... then stop
    python -m tests.orthanc.run --config my-config.yaml       # your models / explainer settings

Run from the repository root. cfia's listener, destinations and spool are the harness's;
everything else (models, explainer, outputs) comes from --config (default: config.yaml).
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.harness.cfia_orthanc import CfiaOrthanc
from tests.harness.orthanc import OrthancError, available


def _files(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for p in map(Path, paths):
        found += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    return found


def upload_and_push(stack: CfiaOrthanc, files: list[Path], timeout: float) -> int:
    """Upload each DICOM file to Orthanc, push the mammograms to cfia, wait for the results."""
    studies: dict[str, int] = {}
    instances = []
    for path in files:
        try:
            answer = stack.orthanc.store(path)
        except OrthancError as exc:
            print(f"  {path}: not stored by Orthanc ({str(exc)[:120]})")
            continue
        tags = stack.orthanc.get_json(f"/instances/{answer['ID']}/simplified-tags")
        if tags.get("Modality") != "MG":
            print(f"  {path}: stored, not a mammogram (Modality {tags.get('Modality')!r}): not pushed")
            continue
        instances.append(answer["ID"])
        studies[answer["ParentStudy"]] = studies.get(answer["ParentStudy"], 0) + 1
    if not instances:
        print("nothing to push")
        return 1
    started = time.monotonic()
    before = {s: len(stack.study_instances(s)) for s in studies}
    print(f"pushing {len(instances)} mammogram(s) from Orthanc to cfia ({stack.cfia_ae}) ...")
    stack.push_to_cfia(instances)
    per_image = len(stack.node.enabled_outputs)
    for study, n in studies.items():
        got = stack.wait_results(study, before[study] + n * per_image, timeout)
        print(f"  study {study}: {len(got)} instances after {time.monotonic() - started:.1f} s: "
              f"{stack.orthanc.rest_url}/app/explorer.html#study?uuid={study}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.orthanc.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", help="cfia base config (default: config.yaml in the repository)")
    ap.add_argument("--upload", nargs="*", default=[], help="DICOM files or folders to upload and push to cfia")
    ap.add_argument("--once", action="store_true", help="stop after the uploaded images' results arrived")
    ap.add_argument("--timeout", type=float, default=900, help="seconds to wait for results (default 900)")
    ap.add_argument("--workdir", help="keep cfia's config, spool and log here (default: a temporary folder)")
    args = ap.parse_args(argv)
    why = available()
    if why:
        print(why, file=sys.stderr)
        return 1
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with tempfile.TemporaryDirectory(prefix="cfia-orthanc-run-") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        with CfiaOrthanc(workdir, base_config=Path(args.config) if args.config else None) as stack:
            print(json.dumps(stack.describe(), indent=2))
            print(f"Orthanc Explorer: {stack.orthanc.rest_url}/app/explorer.html -> Upload, then a study "
                  f"-> 'Send to DICOM modality' -> cfia; results arrive in the same study.")
            print(f"Or push from a workstation: AE {stack.cfia_ae}, host 127.0.0.1, port {stack.node.port}.")
            rc = 0
            if args.upload:
                rc = upload_and_push(stack, _files(args.upload), args.timeout)
                if args.once:
                    return rc
            print("running; Ctrl-C stops Orthanc and cfia")
            while not stop.wait(1.0):
                stack.node.check_alive()
            return rc


if __name__ == "__main__":
    sys.exit(main())
