"""The spool's files: mode 0600; a rerun's result folder holds only what it built; a disk-full
write leaves no partial set; a moved spool's files are not taken for orphans; and another
image's dead letter under a reused job id is set aside, not overwritten."""
from __future__ import annotations

import errno
import json
import shutil
import stat

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from listener import spool as spool_mod
from listener.spool import Spool


def _ds(uid: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    ds.SOPInstanceUID = uid
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    return ds


def test_received_images_are_private(tmp_path):
    path = Spool(tmp_path / "spool").create().write_incoming(b"\0" * 132)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_rerun_drops_results_it_no_longer_builds(tmp_path):
    spool = Spool(tmp_path / "spool").create()
    spool.write_results(7, {"binary_seg": _ds("1.2.3"), "gsps": _ds("1.2.4")})
    folder = spool.write_results(7, {"binary_seg": _ds("1.2.3")})
    assert [p.name for p in Spool.result_files(folder)] == ["binary_seg.dcm"]


def test_a_disk_full_write_leaves_no_partial_set(tmp_path, monkeypatch):
    spool = Spool(tmp_path / "spool").create()
    real, calls = spool_mod.write_durably, []

    def second_fails(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(spool_mod, "write_durably", second_fails)
    with pytest.raises(OSError):
        spool.write_results(8, {"binary_seg": _ds("1.2.3"), "gsps": _ds("1.2.4")})
    assert not (spool.results / "8").exists()


def test_a_moved_spools_files_are_not_orphans(tmp_path):
    spool = Spool(tmp_path / "old").create()
    path = spool.write_incoming(b"\0" * 132)
    shutil.move(str(tmp_path / "old"), str(tmp_path / "new"))
    moved = Spool(tmp_path / "new")
    assert moved.orphans({str(path)}) == []


def test_another_images_dead_letter_is_set_aside(tmp_path):
    spool = Spool(tmp_path / "spool").create()
    src1 = spool.write_incoming(b"one")
    spool.move_to_dead_letter(5, src1, None, {"sop_instance_uid": "1.2.1", "reason": "first"})
    src2 = spool.write_incoming(b"two")
    spool.move_to_dead_letter(5, src2, None, {"sop_instance_uid": "1.2.2", "reason": "second"})
    kept = list(spool.dead_letter.glob("5.other-*"))
    assert len(kept) == 1 and (kept[0] / "source.dcm").read_bytes() == b"one"
    assert json.loads((spool.dead_letter / "5" / "reason.json").read_text())["sop_instance_uid"] == "1.2.2"
