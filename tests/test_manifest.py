"""cfia/manifest.py: the one reader of a data folder's manifest.csv."""
from __future__ import annotations

import pytest

from cfia.manifest import DataError, read_manifest


def test_every_missing_file_is_listed_one_a_line(tmp_path):
    """A manifest naming missing files stops with all of them, not the first twenty: a site
    with a wrong folder fixes (or scripts against) the whole list at once."""
    rows, expected = [], []
    for i in range(30):  # 30 images, every second one a positive with a mask: 45 files
        mask = f"masks/gone{i:02d}.npy" if i % 2 else ""
        rows.append(f"gone{i:02d}.dcm,{i % 2},{mask}")
        expected += [str(tmp_path / f"gone{i:02d}.dcm")] + ([str(tmp_path / mask)] if mask else [])
    (tmp_path / "manifest.csv").write_text("file,label,mask\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as err:
        read_manifest(tmp_path)
    first, *listed, last = str(err.value).splitlines()
    assert first == f"{tmp_path / 'manifest.csv'} names 45 missing file(s):"
    assert [line.strip() for line in listed] == expected
    # 100,000 of them scrolled the count out of view: it is said again last.
    assert last == f"{tmp_path / 'manifest.csv'}: 45 missing file(s), listed above"
