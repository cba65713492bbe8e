"""C-STORE statuses the listener answers with (PS3.4 B.2.3, PS3.7 C).

Each failure the handler can detect has its own code, so a PACS log says why an
image was refused; the 0xC2xx codes follow pynetdicom's own storescp application.
"""
from __future__ import annotations

from pydicom.dataset import Dataset

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700          # disk full, spool or queue unwritable
SOP_CLASS_MISMATCH = 0xA900        # the dataset is not what its SOP class says
EMPTY_DATASET = 0xC000             # cannot understand: nothing in the dataset
MISSING_IMAGE_ATTRIBUTES = 0xC001  # cannot understand: no Rows/Columns/Bits/PixelData
PIXEL_LENGTH_MISMATCH = 0xC002     # cannot understand: native pixel data of the wrong size
NOT_ENCAPSULATED = 0xC003          # cannot understand: compressed syntax, native pixel data
INVALID_UID = 0xC004               # cannot understand: an instance, series or study UID that is no UID
UNDECODABLE_SYNTAX = 0xC005        # cannot understand: a mammogram in a transfer syntax cfia cannot decode
INSTANCE_MISMATCH = 0xC006         # cannot understand: the dataset's SOP Instance UID is not the request's
TOO_LARGE = 0xC007                 # cannot understand: more rows, columns or frames than a mammogram has
CANNOT_DECODE = 0xC210             # cannot understand: the dataset does not parse
UNEXPECTED_ERROR = 0xC211          # a bug in the handler, caught so it never raises

LO_MAX = 64  # ErrorComment is a Long String


def status(code: int, comment: str = "") -> Dataset:
    """A status dataset; failures carry a short ErrorComment (no patient data)."""
    ds = Dataset()
    ds.Status = code
    if comment:
        ds.ErrorComment = comment[:LO_MAX]
    return ds
