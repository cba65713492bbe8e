"""The paired comparison tables the docs quote (python -m cfia.bench.compare,
cfia.evaluate.paired): a reference clearly behind is shown in bold as one clearly ahead is; the
interval is the 95 % one (2.5th to 97.5th percentile of the bootstrap means, cases resampled
with the seed's draws)."""
from __future__ import annotations

import json
import math

import numpy as np

from cfia.bench import compare
from cfia.evaluate import PAIRED_METRICS, paired


def _cases(ref, other):
    return [{"file": f"img{i}.dcm", "methods": {"cf": {k: a for k in PAIRED_METRICS},
                                                 "blur": {k: b for k in PAIRED_METRICS}}}
            for i, (a, b) in enumerate(zip(ref, other))]


def _rows(tmp_path, capsys, cases):
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"methods": ["cf", "blur"], "cases": cases}))
    assert compare.main([str(report), "--against", "blur"]) == 0
    return [r for r in capsys.readouterr().out.splitlines() if r.startswith(f"| {tmp_path}")]


def test_a_reference_clearly_behind_is_shown_in_bold(tmp_path, capsys):
    blur = np.random.default_rng(3).uniform(0.3, 0.6, 40)
    row, = _rows(tmp_path, capsys, _cases(blur - 0.05, blur))
    assert row.count("**-0.050 (") == 3


def test_the_interval_is_the_central_95_percent_of_the_bootstrap_means():
    rng = np.random.default_rng(5)
    blur = rng.uniform(0.2, 0.6, 30)
    cf = blur + rng.normal(0.02, 0.05, 30)
    got = paired(_cases(cf, blur), ["cf", "blur"], resamples=20000, seed=0)["blur"]["iou"]
    d = cf - blur
    # A reference from ten times the draws, drawn apart: not the same draws, the same interval
    # (a 90 % one lies 0.003 inside it here; resampling noise stays within 0.001).
    boot = d[np.random.default_rng(123).integers(0, d.size, size=(200000, d.size))].mean(axis=1)
    assert math.isclose(got["ci95"][0], float(np.percentile(boot, 2.5)), abs_tol=1e-3)
    assert math.isclose(got["ci95"][1], float(np.percentile(boot, 97.5)), abs_tol=1e-3)
