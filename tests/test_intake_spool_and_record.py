"""What a stored instance becomes: one batch per association (its images form a study), the
job records the image's Study Instance UID, and a refusal is counted under its status in hex
(the `status` label of cfia_store_refused_total)."""
from __future__ import annotations

import errno
from io import BytesIO
from types import SimpleNamespace

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from listener import Intake, JobQueue, Spool, intake as intake_mod

MG = "1.2.840.10008.5.1.4.1.1.1.2"


def _event(assoc, uid: str) -> SimpleNamespace:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MG, uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return SimpleNamespace(assoc=assoc, file_meta=meta, request=SimpleNamespace(DataSet=BytesIO(b"\0" * 16)),
                           context=SimpleNamespace(transfer_syntax=ExplicitVRLittleEndian))


def _intake(tmp_path) -> Intake:
    spool = Spool(tmp_path / "spool").create()
    return Intake(spool, JobQueue(spool.queue_file))


def _ds(study: str) -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID = study
    return ds


def _fields(uid: str) -> dict:
    return {"sop_instance_uid": uid, "sop_class_uid": MG, "calling_ae": "MODALITY"}


class Assoc:
    pass


def test_images_of_one_association_share_a_batch_and_record_their_study(tmp_path):
    intake = _intake(tmp_path)
    one, two = Assoc(), Assoc()
    for assoc, uid in ((one, "1.2.3.1"), (one, "1.2.3.2"), (two, "1.2.3.3")):
        intake_mod._spool(_event(assoc, uid), intake, _ds("1.2.9"), _fields(uid))
    assert intake.batch_of(one) == intake.batch_of(one) != intake.batch_of(two)
    assert intake.queue.close_batch(intake.batch_of(one)) == 2
    job = intake.queue.get(1)
    assert job.study_instance_uid == "1.2.9"


def test_a_refusal_is_counted_under_its_hex_status(tmp_path, monkeypatch):
    intake = _intake(tmp_path)

    def full(data):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(intake.spool, "write_incoming", full)
    answer = intake_mod._spool(_event(Assoc(), "1.2.3.4"), intake, _ds("1.2.9"), _fields("1.2.3.4"))
    assert answer.Status == 0xA700
    assert answer.ErrorComment == "disk full"
    assert dict(intake.counts) == {"refused_0xa700": 1}
