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


def test_an_image_listed_twice_with_other_masks_stops_and_alike_is_read(tmp_path):
    """One row a finding, as some datasets export them, would train each row with the image's
    other lesion as healthy tissue: it stops, naming both lines. The same row twice is read."""
    for name in ("a.dcm", "b.dcm", "m1.npy", "m2.npy"):
        (tmp_path / name).write_bytes(b"")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("file,label,mask\na.dcm,1,m1.npy\nb.dcm,0,\n./a.dcm,1,m2.npy\n")
    with pytest.raises(DataError) as err:
        read_manifest(tmp_path)
    assert str(err.value).startswith(f"{manifest} line 2 and {manifest} line 4: {tmp_path / 'a.dcm'} is listed "
                                     "twice with another label or mask;")
    manifest.write_text("file,label,mask\na.dcm,1,m1.npy\na.dcm,0,\n")  # another label
    with pytest.raises(DataError, match="line 2 and .* line 3: .* listed twice with another label or mask"):
        read_manifest(tmp_path)
    manifest.write_text("file,label,mask\na.dcm,1,m1.npy\nb.dcm,0,\na.dcm,1,./m1.npy\n")  # alike: weighs double
    assert [r.path.name for r in read_manifest(tmp_path)] == ["a.dcm", "b.dcm", "a.dcm"]
    # Two --data folders listing one image otherwise stop the training before any pixel is read.
    from cfia.training.data import check_held_apart

    other = tmp_path / "other"
    other.mkdir()
    (other / "manifest.csv").write_text("file,label\n../a.dcm,0\n")
    with pytest.raises(DataError, match=f"{manifest} and {other / 'manifest.csv'}: .*a.dcm is listed twice"):
        check_held_apart([tmp_path, other], [])
