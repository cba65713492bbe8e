"""cf against each baseline, image by image, from saved `cfia evaluate` reports.

    python -m cfia.bench.compare docs/evaluation-report.json [--reference cf] [--json OUT]
    python -m cfia.bench.compare REPORT [REPORT ...] --against blur

The same paired comparison `cfia evaluate` prints (mean difference, bootstrap 95 %
interval, images ahead / level / behind), for a report written before it existed or
with another reference method; nothing is explained again. With `--against`, one row
per report: both methods' means and the reference minus the other on pointing, energy
and IoU, so several sets (other acquisitions, other generators) read as one table.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from ..evaluate import paired, table_paired
from . import check_output, refuse

ROW_METRICS = ("pointing_game", "energy_inside", "iou")


def _load(path: str) -> dict:
    report = json.loads(open(path).read())
    missing = [k for k in ("methods", "cases") if k not in report]
    if missing:
        raise KeyError(", ".join(missing))
    return report


def _interval(d: dict) -> str:
    """Mean and 95 % interval, in bold when the interval is clear of zero at the shown precision."""
    lo, hi = d["ci95"]
    text = f"{d['mean']:+.3f} ({lo:+.3f} .. {hi:+.3f})"
    return f"**{text}**" if lo >= 0.0005 or hi <= -0.0005 else text


def table_rows(reports: dict[str, dict], pairs_by_report: dict[str, dict], reference: str, against: str) -> str:
    """One row per report: calls, calls not resting on their lesion, each method's pointing /
    energy / IoU, and reference minus `against` (its `paired` result) with its interval per metric."""
    head = ["report", "calls", "not on the lesion", reference, against] + [f"{reference} minus {against}: {k}"
                                                                          for k in ROW_METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, report in reports.items():
        cases = report["cases"]
        pairs = pairs_by_report[name][against]
        survive = set(report.get("called_without_lesion", []))
        means = {m: " / ".join(f"{np.nanmean([c['methods'][m][k] for c in cases]):.3f}" for k in ROW_METRICS)
                 for m in (reference, against)}
        lines.append(f"| {name} | {len(cases)} | {sum(c.get('file') in survive for c in cases)} | "
                     f"{means[reference]} | {means[against]} | "
                     + " | ".join(_interval(pairs[k]) for k in ROW_METRICS) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cfia.bench.compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="+", metavar="report", help="report JSONs written by cfia evaluate")
    ap.add_argument("--reference", default="cf", help="the method compared against every other (default cf)")
    ap.add_argument("--against", help="one row per report: the reference against this method only")
    ap.add_argument("--json", help="write the comparison here as JSON")
    args = ap.parse_args(argv)
    if len(args.reports) > 1 and not args.against:
        print("error: several reports need --against METHOD (one row per report)", file=sys.stderr)
        return 2
    if args.against == args.reference:
        return refuse(f"--against {args.against}: that is the reference method; name another one")
    check_output(args.json, "--json")
    reports = {}
    needed = [args.reference, args.against] if args.against else [args.reference]
    for path in args.reports:
        try:
            reports[path] = _load(path)
        except (OSError, ValueError, KeyError) as exc:
            print(f"error: {path}: not a cfia evaluate report ({exc})", file=sys.stderr)
            return 2
        methods, cases = reports[path]["methods"], reports[path]["cases"]
        if any(m not in methods for m in needed) or len(methods) < 2 or not cases:
            print(f"error: {path}: {' and '.join(map(repr, needed))} and at least one other method with cases "
                  f"are needed; the report has {methods} and {len(cases)} case(s)", file=sys.stderr)
            return 2
    if args.against:
        result = {p: paired(r["cases"], needed, args.reference) for p, r in reports.items()}
        print(table_rows(reports, result, args.reference, args.against))
    else:
        report = reports[args.reports[0]]
        result = paired(report["cases"], report["methods"], args.reference)
        print(table_paired(result, args.reference))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
