"""The result objects' own dates and times in the source's time zone.

A source may say in which zone its dates and times are (TimezoneOffsetFromUTC, PS3.3
C.12.1.1: it applies to every DA, TM and offset-free DT of the instance). The results copy
the source's StudyDate and StudyTime, while highdicom stamps their creation with the node's
clock in the node's zone: a node in UTC (a container's default) explaining a +0900 source
would mix two zones under no declared offset. So a result of such a source declares the
source's offset and its creation times are moved into it.
"""
from __future__ import annotations

import datetime as dt
import re

from pydicom.dataset import Dataset

# Top-level dates and times highdicom sets from its clock.
CREATION_PAIRS = (("InstanceCreationDate", "InstanceCreationTime"), ("ContentDate", "ContentTime"),
                  ("PresentationCreationDate", "PresentationCreationTime"))
ACQUISITION_EQUIPMENT = "109101"  # DCM: its ContributionDateTime is the source's own, in its zone already
_OFFSET = re.compile(r"^([+-])(\d\d)(\d\d)$")


def in_source_time_zone(result: Dataset, source: Dataset, now: dt.datetime | None = None) -> None:
    """Move `result`'s creation times from the node's zone into the source's, in place."""
    offset = source_offset(source)
    if offset is None:
        return
    local = (now or dt.datetime.now().astimezone()).utcoffset() or dt.timedelta(0)
    shift = offset - local
    result.TimezoneOffsetFromUTC = str(source.TimezoneOffsetFromUTC).strip()
    for date_key, time_key in CREATION_PAIRS:
        if date_key in result and time_key in result:
            moved = _parse(str(result[date_key].value) + str(result[time_key].value)) + shift
            result[date_key].value, result[time_key].value = moved.strftime("%Y%m%d"), moved.strftime("%H%M%S.%f")
    for item in result.get("ContributingEquipmentSequence", []):
        purpose = item.get("PurposeOfReferenceCodeSequence", [None])[0]
        value = str(item.get("ContributionDateTime", "") or "")
        if purpose is not None and purpose.CodeValue != ACQUISITION_EQUIPMENT and value and not re.search(r"[+-]\d{4}$", value):
            item.ContributionDateTime = (_parse(value) + shift).strftime("%Y%m%d%H%M%S.%f")


def source_offset(source: Dataset) -> dt.timedelta | None:
    """The source's TimezoneOffsetFromUTC ("+hhmm" / "-hhmm"); None when absent or malformed."""
    match = _OFFSET.match(str(source.get("TimezoneOffsetFromUTC", "") or "").strip())
    if not match:
        return None
    sign, hours, minutes = match.groups()
    if int(hours) > 14 or int(minutes) > 59:
        return None
    return (1 if sign == "+" else -1) * dt.timedelta(hours=int(hours), minutes=int(minutes))


def _parse(value: str) -> dt.datetime:
    """A DA+TM or DT value without offset: YYYYMMDD[HH[MM[SS[.F]]]]."""
    whole, _, fraction = value.partition(".")
    stamp = dt.datetime.strptime(whole.ljust(14, "0")[:14], "%Y%m%d%H%M%S")
    return stamp + dt.timedelta(microseconds=int((fraction + "000000")[:6]) if fraction else 0)
