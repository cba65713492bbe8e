"""The part of the source's header that result objects copy, in values highdicom accepts.

highdicom 0.28 copies the Patient and General Study attributes from the source and
validates them, so a header as sites send it stops every result object:
- a Type 2 attribute deleted instead of emptied (de-identified exports): AttributeError;
- a date or time in another format ('1950-01-01', '09:00:00'), an impossible date
  ('19500000'), PatientSex 'f' or 'FEMALE', a person name with two values: ValueError
  or TypeError;
- a VOI LUT whose data were encoded as US (a list) instead of OW (bytes): TypeError in
  the GSPS.
`result_header` returns the source itself when nothing needs mending, else a copy of its
header (the source is not changed) with each such value put into the standard's form
when that is unambiguous, or emptied (Type 2) when it is not, and the keywords it mended.
"""
from __future__ import annotations

import re

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import DA, TM

import highdicom as hd

# Type 2 attributes of the Patient and General Study modules that highdicom copies.
TYPE2_FROM_SOURCE = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                     "ReferringPhysicianName", "AccessionNumber", "StudyID")
DATES, TIMES, NAMES = ("PatientBirthDate", "StudyDate"), ("StudyTime",), ("PatientName", "ReferringPhysicianName")


def result_header(source: Dataset) -> tuple[Dataset, list[str]]:
    mended: dict[str, object] = {keyword: None for keyword in TYPE2_FROM_SOURCE if keyword not in source}
    for keyword in DATES + TIMES:
        value = str(source.get(keyword, "") or "")
        if value and not (_is_date(value) if keyword in DATES else _is_time(value)):
            mended[keyword] = _date(value) if keyword in DATES else _time(value)
    sex = str(source.get("PatientSex", "") or "")
    if sex and not _valid(hd.PatientSexValues, sex):
        mended["PatientSex"] = sex.strip().upper()[:1] if sex.strip().upper()[:1] in ("M", "F", "O") else None
    for keyword in NAMES:
        if isinstance(source.get(keyword), MultiValue):
            mended[keyword] = source[keyword].value[0]  # the first of several names
    luts = _luts_as_bytes(source)
    if not mended and luts is None:
        return source, []
    copy = Dataset({tag: source[tag] for tag in source.keys()})  # new element dict, same elements
    if hasattr(source, "file_meta"):
        copy.file_meta = source.file_meta
    for keyword, value in mended.items():
        if keyword in copy:
            del copy[keyword]  # a new element: setting the shared one's value would change the source
        setattr(copy, keyword, value)
    if luts is not None:
        copy.VOILUTSequence = luts
        mended["VOILUTSequence"] = None
    return copy, sorted(mended)


def _valid(kind, value: str) -> bool:
    try:
        kind(value)
    except (ValueError, TypeError):
        return False
    return True


def _is_date(value: str) -> bool:
    """DA as the standard writes it (pydicom also reads the retired 'YYYY.MM.DD')."""
    return re.fullmatch(r"\d{8}", value) is not None and _valid(DA, value)


def _is_time(value: str) -> bool:
    return re.fullmatch(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?", value.strip()) is not None and _valid(TM, value)


def _date(value: str):
    """'1950-01-01', '1950.01.01', '1950/01/01' -> '19500101'; anything else, empty."""
    digits = re.sub(r"[-./]", "", value.strip())
    return digits if _is_date(digits) else None


def _time(value: str):
    """'09:00:00' -> '090000'; anything else, empty."""
    digits = value.strip().replace(":", "")
    return digits if _is_time(digits) else None


def _luts_as_bytes(source: Dataset):
    """A copy of the VOI LUT Sequence with LUT data as little-endian 16-bit bytes, when
    any item holds them as a list of numbers; None when none does."""
    items = list(source.get("VOILUTSequence", []))
    if not any(isinstance(item.get("LUTData"), (list, MultiValue)) for item in items):
        return None
    copies = []
    for item in items:
        new = Dataset({tag: item[tag] for tag in item.keys()})
        if isinstance(item.get("LUTData"), (list, MultiValue)):
            del new.LUTData
            new.add_new(0x00283006, "OW", np.asarray(list(item.LUTData), "<u2").tobytes())
        copies.append(new)
    return copies
