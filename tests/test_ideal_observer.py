"""The phantom's record of its draws and the informed observer built on it (cfia.bench.ideal)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from cfia.bench import ideal
from phantom.generate import PhantomOptions, make_one, write_dataset


def _single_masses(opts, seed, count):
    """(index, image) of the single-mass positives among the first `count` images."""
    out = []
    for i in range(count):
        mg = make_one(seed, i, opts)
        if len(mg.draws["placed"]) == 1 and mg.draws["placed"][0][0] != "calcifications":
            out.append((i, mg))
    return out


def _centre(mg):
    _, (r0, c0), profile, _, _ = mg.draws["placed"][0]
    return r0 + profile.shape[0] // 2, c0 + profile.shape[1] // 2


def test_lesion_gain_zero_is_the_same_image_without_its_lesion():
    opts = PhantomOptions(size=(256, 208), positive_fraction=1.0)
    for i in range(4):
        mg, twin = make_one(8, i, opts), make_one(8, i, opts, lesion_gain=0.0)
        assert np.array_equal(mg.pixels, make_one(8, i, opts, lesion_gain=1.0).pixels)
        assert np.array_equal(mg.mask, twin.mask) and mg.mask.any()
        # The display scales each image by its own brightest tissue, so pixels move a little
        # everywhere; the attenuation behind them (texture, noise) is the same away from the lesion.
        with_, without = ideal.residual(mg, mg.pixels), ideal.residual(twin, twin.pixels)
        far = ideal.canonical(mg, mg.breast & ~ndimage.binary_dilation(mg.mask, iterations=12))
        near = ideal.canonical(mg, mg.mask)
        assert np.median(np.abs(with_ - without)[far]) < 0.02 * without[far].std()
        assert (with_ - without)[near].mean() > 0.5 * without[far].std()


@pytest.mark.parametrize("for_processing", [False, True])
def test_draws_undo_the_detector_and_give_the_texture_and_the_mass_in_their_units(for_processing):
    opts = PhantomOptions(size=(512, 416), positive_fraction=1.0, for_processing=for_processing)
    for i, mg in _single_masses(opts, 31, 6)[:3]:
        twin = make_one(31, i, opts, lesion_gain=0.0)
        without = ideal.residual(twin, twin.pixels)
        deep = (mg.draws["anatomy"].depth_mm > 20) & (mg.draws["field_gain"] > 1e-3)
        # Without the mass, what is left is texture: about one unit of the field.
        assert 0.6 < (without[deep] / mg.draws["field_gain"][deep]).std() < 1.6
        # The mass adds its drawn contrast x thickness at its centre (less the detector blur).
        _, _, _, _, contrast = mg.draws["placed"][0]
        c = _centre(mg)
        added = (ideal.residual(mg, mg.pixels) - without)[c]
        expected = contrast * mg.draws["anatomy"].thickness[c]
        assert 0.7 * expected < added < 1.15 * expected, (i, added, expected)


def test_the_observers_prewhitened_responses_have_the_modelled_spread():
    opts = PhantomOptions(size=(256, 208), positive_fraction=1.0)
    i, mg = _single_masses(opts, 12, 8)[0]
    model = ideal.image_model(mg, np.random.default_rng(0), groups=4)
    twin = make_one(12, i, opts, lesion_gain=0.0)
    res = ideal.residual(twin, twin.pixels)
    profile = mg.draws["placed"][0][2]
    template = model.blur * ideal.centred_transform(profile, res.shape)
    for g, (spectrum, scale) in enumerate(zip(model.spectra, model.scales)):
        response = (res.size * np.fft.ifft2(np.conj(template) * np.fft.fft2(res) / spectrum)).real / scale
        z = response[model.group_of == g] / np.sqrt(np.sum(np.abs(template) ** 2 / spectrum))
        assert 0.7 < z.std() < 1.4, g


def test_the_told_observer_finds_masses_and_the_bank_observer_needs_no_shape():
    opts = PhantomOptions(size=(256, 208), positive_fraction=1.0)
    rng = np.random.default_rng(0)
    bank = ideal.mass_bank(8, 240.0 / 256)
    wins = {"told": 0, "bank": 0}
    cases = _single_masses(opts, 14, 16)[:5]
    for i, mg in cases:
        model = ideal.image_model(mg, rng, groups=4)
        pair = ideal.observe_pair(mg, make_one(14, i, opts, lesion_gain=0.0), model, bank, None)
        wins["told"] += pair["observer_told"][0] > pair["observer_told"][1]
        wins["bank"] += pair["observer_bank"][0] > pair["observer_bank"][1]
        assert pair["d_prime"] > 0
    assert len(cases) == 5 and wins["told"] >= 4 and wins["bank"] >= 3, wins


def test_command_reports_by_contrast_and_refuses_a_folder_of_another_seed(tmp_path, capsys):
    opts = PhantomOptions(size=(256, 208))
    write_dataset(tmp_path / "set", 12, 7, opts)  # seed 7: five single-mass positives
    out = tmp_path / "report.json"
    assert ideal.main(["--data", str(tmp_path / "set"), "--seed", "7", "--size", "256x208",
                       "--groups", "2", "--bank", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["single_masses"] == 5 and report["n_normals"] <= 7
    for row in report["by_contrast"].values():
        assert 0.0 <= row["observer_told_paired"] <= 1.0 and 0.0 <= row["observer_bank_paired"] <= 1.0
    assert sum(row["n"] for row in report["by_contrast"].values()) == report["single_masses"]
    with pytest.raises(SystemExit, match="not image"):
        ideal.main(["--data", str(tmp_path / "set"), "--seed", "8", "--size", "256x208"])
