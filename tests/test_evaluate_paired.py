"""The paired comparison of `cfia evaluate` (pure arithmetic on saved cases)."""
import json

import numpy as np

from cfia.bench import compare
from cfia.evaluate import PAIRED_METRICS, paired


def _cases(cf_iou, blur_iou):
    def scores(iou):
        return {k: iou for k in PAIRED_METRICS}
    return [{"methods": {"cf": scores(a), "blur": scores(b)}} for a, b in zip(cf_iou, blur_iou)]


def test_paired_difference_counts_and_interval():
    rng = np.random.default_rng(0)
    blur = rng.uniform(0.2, 0.6, 60)
    cf = blur + 0.05 + rng.normal(0, 0.01, 60)  # ahead on every image
    got = paired(_cases(cf, blur), ["cf", "blur"])["blur"]["iou"]
    assert abs(got["mean"] - float(np.mean(cf - blur))) < 1e-12
    assert (got["ahead"], got["level"], got["behind"], got["n"]) == (60, 0, 0, 60)
    assert 0.0 < got["ci95"][0] < got["mean"] < got["ci95"][1]
    assert abs(got["se"] - float(np.std(cf - blur, ddof=1) / np.sqrt(60))) < 1e-12


def test_paired_interval_straddles_zero_when_methods_tie():
    rng = np.random.default_rng(1)
    blur = rng.uniform(0.2, 0.6, 80)
    cf = blur + rng.normal(0, 0.05, 80)
    cf[:10] = blur[:10]  # some images level
    got = paired(_cases(cf, blur), ["cf", "blur"])["blur"]["iou"]
    assert got["level"] == 10 and got["ahead"] + got["behind"] == 70
    assert got["ci95"][0] < 0.0 < got["ci95"][1]


def test_compare_command_reads_a_saved_report(tmp_path, capsys):
    report = tmp_path / "r.json"
    report.write_text(json.dumps({"methods": ["cf", "blur"], "cases": _cases([0.5, 0.4, 0.6], [0.3, 0.4, 0.5])}))
    out = tmp_path / "c.json"
    assert compare.main([str(report), "--json", str(out)]) == 0
    assert "| blur | iou | +0.100 |" in capsys.readouterr().out
    assert json.loads(out.read_text())["blur"]["iou"]["ahead"] == 2
    report.write_text(json.dumps({"methods": ["blur"], "cases": []}))
    assert compare.main([str(report)]) == 2
    (tmp_path / "bad.json").write_text("not json")
    assert compare.main([str(tmp_path / "bad.json")]) == 2
    assert "not a cfia evaluate report" in capsys.readouterr().err


def test_compare_command_gives_one_row_per_report_against_one_method(tmp_path, capsys):
    ahead, level = tmp_path / "ahead.json", tmp_path / "level.json"
    rng = np.random.default_rng(2)
    blur = rng.uniform(0.2, 0.6, 40)
    cases = _cases(blur + 0.05, blur)
    for i, c in enumerate(cases):
        c["file"] = f"img{i}.dcm"
    ahead.write_text(json.dumps({"methods": ["cf", "blur"], "cases": cases,
                                 "called_without_lesion": ["img0.dcm", "img1.dcm", "elsewhere.dcm"]}))
    level.write_text(json.dumps({"methods": ["cf", "blur", "ig"], "cases": _cases(blur, blur)}))
    assert compare.main([str(ahead), str(level), "--against", "blur"]) == 0
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith(f"| {tmp_path}")]
    assert len(rows) == 2
    assert rows[0].split(" | ")[1:3] == ["40", "2"]   # calls; of them, not resting on their lesion
    assert rows[0].count("**+0.050 (") == 3           # ahead on all three, clear of zero
    assert "**" not in rows[1] and rows[1].count("+0.000 (+0.000 .. +0.000)") == 3
    assert compare.main([str(ahead), str(level)]) == 2
    assert "need --against" in capsys.readouterr().err
    assert compare.main([str(ahead), "--against", "ig"]) == 2
    assert "'ig'" in capsys.readouterr().err


def test_a_metric_undefined_on_some_images_is_resampled_at_its_own_size():
    """Differences left after dropping undefined ones (NaN) are resampled with as many
    draws as they are; indices drawn for all the cases and wrapped round gave too narrow
    an interval."""
    cf = [1.0, 0.0, 1.0, 0.0] + [float("nan")] * 4
    blur = [0.0] * 8
    got = paired(_cases(cf, blur), ["cf", "blur"], resamples=20000)["blur"]["iou"]
    # Four draws are all 1 (or all 0) one time in 16, more than the 2.5 % each tail leaves;
    # eight wrapped draws only one time in 256.
    assert got["n"] == 4 and got["ci95"] == [0.0, 1.0]
