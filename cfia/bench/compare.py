"""cf against each baseline, image by image, from a saved `cfia evaluate` report.

    python -m cfia.bench.compare docs/evaluation-report.json [--reference cf] [--json OUT]

The same paired comparison `cfia evaluate` prints (mean difference, bootstrap 95 %
interval, images ahead / level / behind), for a report written before it existed or
with another reference method; nothing is explained again.
"""
from __future__ import annotations

import argparse
import json
import sys

from ..evaluate import paired, table_paired


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cfia.bench.compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("report", help="a report JSON written by cfia evaluate")
    ap.add_argument("--reference", default="cf", help="the method compared against every other (default cf)")
    ap.add_argument("--json", help="write the comparison here as JSON")
    args = ap.parse_args(argv)
    try:
        report = json.loads(open(args.report).read())
        methods, cases = report["methods"], report["cases"]
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {args.report}: not a cfia evaluate report ({exc})", file=sys.stderr)
        return 2
    if args.reference not in methods or len(methods) < 2 or not cases:
        print(f"error: {args.reference!r} and at least one other method with cases are needed; "
              f"the report has {methods} and {len(cases)} case(s)", file=sys.stderr)
        return 2
    result = paired(cases, methods, args.reference)
    print(table_paired(result, args.reference))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
