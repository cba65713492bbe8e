"""The part of the source's header that result objects copy, in values highdicom accepts.

highdicom 0.28 copies the Patient and General Study attributes from the source and
validates them, so a header as sites send it stops every result object:
- a Type 2 attribute deleted instead of emptied (de-identified exports): AttributeError;
- a date or time in another format ('1950-01-01', '09:00:00'), an impossible date
  ('19500000'), PatientSex 'f' or 'FEMALE', a person name with two values: ValueError
  or TypeError;
- a Specific Character Set that highdicom's list lacks although the standard has it: an
  empty first value (the default repertoire before ISO 2022 extensions, '\\ISO 2022 IR 87'
  as Japanese sites send it) or 'ISO 2022 IR 149' (Korean): ValueError. pydicom has
  decoded the text already (the sequences' items are decoded in the source's set before
  the switch), so the copy declares UTF-8 (ISO_IR 192), which holds it all;
- a VOI LUT whose data were encoded as US (a list) instead of OW (bytes): TypeError in
  the GSPS; and one of 12 bits per entry, which highdicom copies into the GSPS declared
  as 16 bits, so it would span a sixteenth of the range (a nearly black image; dciodvfy
  error);
- a VOI LUT Sequence beside window values: both are legal in an image (PS3.3 C.11.2),
  but a GSPS's Softcopy VOI LUT holds one of them, and highdicom refuses the source
  (ValueError). The copy keeps the windows, what viewers show first;
- text the objects add (the model's file name) that the source's character set cannot
  hold: written as bytes of another set (dciodvfy error, '?' on read-back). The copy
  declares UTF-8 then.
`result_header` returns the source itself when nothing needs mending, else a copy of its
header (the source is not changed) with each such value put into the standard's form
when that is unambiguous, or emptied (Type 2) when it is not, and the keywords it mended.
"""
from __future__ import annotations

import math
import re
import warnings
from typing import Iterable

import numpy as np
from pydicom.charset import convert_encodings, decode_bytes, encode_string, python_encoding
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import DA, TM

import highdicom as hd

# Type 2 attributes of the Patient and General Study modules that highdicom copies.
TYPE2_FROM_SOURCE = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                     "ReferringPhysicianName", "AccessionNumber", "StudyID")
DATES, TIMES, NAMES = ("PatientBirthDate", "StudyDate"), ("StudyTime",), ("PatientName", "ReferringPhysicianName")


def result_header(source: Dataset, texts: Iterable[str] = ()) -> tuple[Dataset, list[str]]:
    """`texts`: what the objects will write besides the source's own values."""
    mended: dict[str, object] = {keyword: None for keyword in TYPE2_FROM_SOURCE if keyword not in source}
    for keyword in DATES + TIMES:
        value = str(source.get(keyword, "") or "")
        if value and not (_is_date(value) if keyword in DATES else _is_time(value)):
            mended[keyword] = _date(value) if keyword in DATES else _time(value)
    sex = str(source.get("PatientSex", "") or "")
    if sex and not _valid(hd.PatientSexValues, sex):
        mended["PatientSex"] = sex.strip().upper()[:1] if sex.strip().upper()[:1] in ("M", "F", "O") else None
    charset = source.get("SpecificCharacterSet")
    if not _charset_accepted(charset) or not _charset_holds(charset, texts):
        mended["SpecificCharacterSet"] = "ISO_IR 192"
    for keyword in NAMES:
        if isinstance(source.get(keyword), MultiValue):
            mended[keyword] = source[keyword].value[0]  # the first of several names
    dropped = _voi_dropped(source) + _rescale_dropped(source)
    luts = None if "VOILUTSequence" in dropped else _softcopy_luts(source)
    if not mended and luts is None and not dropped:
        return source, []
    copy = shallow_copy(source)
    if "SpecificCharacterSet" in mended:  # the sequences' text, still the source's bytes, read in its set first
        for element in _decoded_sequences(source):
            copy[element.tag] = element
    if luts is not None:
        mended["VOILUTSequence"] = luts
    for keyword, value in mended.items():
        if keyword in copy:
            del copy[keyword]  # a new element: setting the shared one's value would change the source
        setattr(copy, keyword, value)
    for keyword in dropped:
        del copy[keyword]
    return copy, sorted(set(mended) | set(dropped))


def _voi_dropped(source: Dataset) -> list[str]:
    """VOI attributes a GSPS cannot carry as they are: windows highdicom cannot write (empty, a
    centre without a width, not as many widths as centres, a value that is no finite number, a
    width not above 0), or a LUT beside usable windows (one of the two). A bad window would
    otherwise fail the GSPS, and with it every object of the image."""
    window = [k for k in ("WindowCenter", "WindowWidth", "VOILUTFunction", "WindowCenterWidthExplanation")
              if k in source]
    if ("WindowCenter" in source or "WindowWidth" in source) and not _usable_windows(source):
        return window
    if "VOILUTSequence" in source and "WindowCenter" in source:
        return ["VOILUTSequence"]
    return []


def _usable_windows(source: Dataset) -> bool:
    centres, widths = _numbers(source, "WindowCenter"), _numbers(source, "WindowWidth")
    return bool(centres) and bool(widths) and len(centres) == len(widths) and min(widths) > 0


def _rescale_dropped(source: Dataset) -> list[str]:
    """A Modality LUT's rescale that is empty or no finite number (read as absent, as
    cfia.dicom_io reads it): highdicom cannot write it into the GSPS."""
    present = [k for k in ("RescaleSlope", "RescaleIntercept") if k in source]
    if all(len(_numbers(source, k) or ()) == 1 for k in present):
        return []
    return [k for k in ("RescaleSlope", "RescaleIntercept", "RescaleType") if k in source]


def _numbers(source: Dataset, keyword: str) -> list[float] | None:
    """The keyword's values as finite numbers; None when absent, empty or any is not one."""
    try:
        value = source.get(keyword)
        values = [float(v) for v in (value if isinstance(value, MultiValue) else [value])]
    except (TypeError, ValueError, OverflowError):
        return None
    return values if values and all(math.isfinite(v) for v in values) else None


def _valid(kind, value: str) -> bool:
    try:
        kind(value)
    except (ValueError, TypeError):
        return False
    return True


# highdicom refuses a multi-valued set whose first value is one of these (ValueError).
MULTI_BYTE_EXTENSIONS = ("ISO 2022 IR 87", "ISO 2022 IR 159", "ISO 2022 IR 149")
# ... and one holding this (GB2312 is not among its code extensions).
NOT_AN_EXTENSION_TO_HIGHDICOM = "ISO 2022 IR 58"


def _charset_accepted(value) -> bool:
    """Whether highdicom 0.28 takes the set as it is: each value one it knows; one ISO 2022
    set alone refused; several values (real headers write 'ISO_IR 100\\ISO 2022 IR 144',
    which pydicom reads) only if all are ISO 2022 sets, the first not a multi-byte one."""
    if value is None:
        return True
    values = [str(v) for v in value] if isinstance(value, MultiValue) else [str(value)]
    if not all(_valid(hd.SpecificCharacterSetValues, v) for v in values):
        return False
    if len(values) == 1:
        return not values[0].startswith("ISO 2022")
    return (all(v.startswith("ISO 2022") and v != NOT_AN_EXTENSION_TO_HIGHDICOM for v in values)
            and values[0] not in MULTI_BYTE_EXTENSIONS)


def _charset_holds(charset, texts: Iterable[str]) -> bool:
    """Whether pydicom's writer can write every text in `charset` (one set, not the default
    repertoire; an ISO 2022 set with extensions is taken to hold ASCII only). Its own
    encoder decides: Python's codec for a set can hold more (shift_jis for ISO_IR 13)."""
    texts = [t for t in texts if not t.isascii()]
    if not texts:
        return True
    values = list(charset) if isinstance(charset, MultiValue) else [charset]
    if len(values) != 1 or values[0] in (None, "", "ISO_IR 6") or values[0] not in python_encoding:
        return False  # the default repertoire is ASCII
    encodings = convert_encodings(values)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydicom warns, and writes '?', where it cannot encode
        try:
            return all(decode_bytes(encode_string(t, encodings), encodings, set()) == t for t in texts)
        except (UnicodeError, ValueError, UserWarning):
            return False


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


def shallow_copy(ds: Dataset, without: tuple[int, ...] = ()) -> Dataset:
    """A new element dict holding the same elements (but the tags `without`) and file meta:
    adding or deleting elements leaves `ds` as it is (replace an element, never set a
    shared one's value)."""
    copy = Dataset({tag: ds[tag] for tag in ds.keys() if tag not in without})
    if hasattr(ds, "file_meta"):
        copy.file_meta = ds.file_meta
    return copy


def _decoded_sequences(source: Dataset) -> Dataset:
    """Copies of the source's sequences with their text decoded in the source's character set.
    A shallow copy shares the items, which pydicom decodes when first read, in the set of the
    dataset holding them then: under the copy's UTF-8 a Japanese code meaning read back as
    escape sequences, Latin-1 as U+FFFD."""
    import copy as copying

    held = Dataset()
    if "SpecificCharacterSet" in source:
        held.SpecificCharacterSet = source.SpecificCharacterSet
    for tag in source.keys():
        if source[tag].VR == "SQ":
            held[tag] = copying.deepcopy(source[tag])
    held.decode()
    if "SpecificCharacterSet" in held:
        del held.SpecificCharacterSet
    return held


def _softcopy_luts(source: Dataset):
    """A copy of the VOI LUT Sequence as a GSPS can carry it, when any item needs mending;
    None when none does. Each item's data become little-endian 16-bit bytes (OW); an item
    of other than 8 or 16 bits per entry (a Softcopy VOI LUT allows only those) is rescaled
    to 16 bits and declared so: the same display as the source's."""
    items = list(source.get("VOILUTSequence", []))
    listed = [isinstance(item.get("LUTData"), (list, MultiValue)) for item in items]
    bits = [int(item.LUTDescriptor[2]) for item in items]
    if not any(listed) and all(b in (8, 16) for b in bits):
        return None
    copies = []
    for item, is_list, b in zip(items, listed, bits):
        if not is_list and b in (8, 16):
            copies.append(item)
            continue
        data = np.asarray(list(item.LUTData), "<u2") if is_list else np.frombuffer(bytes(item.LUTData), "<u2")
        new = shallow_copy(item)
        del new.LUTData
        if b not in (8, 16):
            data = np.round(data.astype(np.float64) * 0xFFFF / (2 ** b - 1)).clip(0, 0xFFFF).astype("<u2")
            del new.LUTDescriptor
            new.add_new(0x00283002, "US", [int(item.LUTDescriptor[0]), int(item.LUTDescriptor[1]), 16])
        new.add_new(0x00283006, "OW", data.tobytes())
        copies.append(new)
    return copies
