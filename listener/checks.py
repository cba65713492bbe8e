"""Cheap header checks for a received mammogram: what the C-STORE handler can afford.

The handler must answer within milliseconds, so it never decodes compressed pixel
data: a 2294x1914 JPEG 2000 takes about a second to decode on one core. It checks the
attributes every decoder needs and, for native (uncompressed) pixel data, that the
length matches them. The worker decodes fully before explaining; an image that fails
there is moved to the dead-letter folder with the decoder's reason.
"""
from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from typing import Optional

from pydicom.dataset import Dataset
from pydicom.uid import UID

from . import statuses

IMAGE_ATTRIBUTES = ("Rows", "Columns", "BitsAllocated", "SamplesPerPixel", "PixelData")
# The largest mammograms are about 4700 x 5900 (CR at 50 um); a header beyond this, on a
# small compressed payload, would make the worker's decoder allocate gigabytes.
MAX_SIDE = 8192
UIDS = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


@dataclass(frozen=True)
class Refusal:
    code: int
    reason: str


def check_mammogram(ds: Dataset, sop_class: str, transfer_syntax: UID,
                    sop_instance: Optional[str] = None) -> Optional[Refusal]:
    """None when the dataset looks like a decodable image of `sop_class` (and, given,
    instance `sop_instance`: the request's), else why not."""
    if len(ds) == 0:
        return Refusal(statuses.EMPTY_DATASET, "empty dataset")
    if not ds.get("SOPClassUID") or not ds.get("SOPInstanceUID"):
        # pydicom parses garbage leniently; a dataset without its identity is garbage
        return Refusal(statuses.CANNOT_DECODE, "no SOP Class/Instance UID: not a DICOM dataset")
    if ds.SOPClassUID != sop_class:
        return Refusal(statuses.SOP_CLASS_MISMATCH, f"dataset SOP class {ds.SOPClassUID} is not the request's")
    bad = [name for name in UIDS if not _is_uid(str(ds.get(name, "") or ""))]
    if bad:  # results derive their UIDs from these, and a peer may cut a long one (dcmtk does, to 64)
        return Refusal(statuses.INVALID_UID, f"{', '.join(bad)} not a valid UID (digits and dots, at most 64)")
    if sop_instance is not None and str(ds.SOPInstanceUID) != sop_instance:
        # The queue keys jobs on the instance: a mismatch would replace another image's job.
        return Refusal(statuses.INSTANCE_MISMATCH, "dataset SOP Instance UID is not the request's")
    missing = [name for name in IMAGE_ATTRIBUTES if ds.get(name) in (None, b"", "")]
    if missing:
        return Refusal(statuses.MISSING_IMAGE_ATTRIBUTES, f"missing {', '.join(missing)}")
    not_whole = [name for name in IMAGE_ATTRIBUTES[:-1] if not _whole_number(ds.get(name))]
    if not_whole:
        return Refusal(statuses.MISSING_IMAGE_ATTRIBUTES, f"{', '.join(not_whole)} not one whole number")
    too_large = too_large_image(ds)
    if too_large:
        return Refusal(statuses.TOO_LARGE, too_large)
    if transfer_syntax.is_encapsulated and not _looks_encapsulated(ds.PixelData):
        return Refusal(statuses.NOT_ENCAPSULATED, "pixel data is not encapsulated")
    refusal = pixel_data_refusal(ds, transfer_syntax)
    if refusal is not None or transfer_syntax.is_encapsulated:
        return refusal
    expected = _native_length(ds)
    actual = len(ds.PixelData)
    # Odd lengths are padded to even, and some writers add a few bytes more, which the
    # decoder drops; more than a row's worth is another image size than the header's.
    if not expected <= actual < expected + max(2, _row_bytes(ds)):
        return Refusal(statuses.PIXEL_LENGTH_MISMATCH, f"pixel data {actual} bytes, expected {expected}")
    return None


def too_large_image(ds: Dataset) -> Optional[str]:
    """Why the header's image size is beyond what cfia reads, or None."""
    try:
        rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        frames = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        return "Rows, Columns or NumberOfFrames is not a number"
    if max(rows, columns) > MAX_SIDE or frames > 1:
        return f"{rows}x{columns}x{frames} pixels; at most one frame of {MAX_SIDE}x{MAX_SIDE}"
    return None


def pixel_data_refusal(ds: Dataset, transfer_syntax: UID) -> Optional[Refusal]:
    """What a decoder would get wrong, found without decoding (here and in cfia.dicom_io for
    files): a codestream declaring more pixels than the header, native data wrapped in items."""
    if transfer_syntax.is_encapsulated:
        larger = larger_codestream(ds)
        return Refusal(statuses.TOO_LARGE, larger) if larger else None
    if ds["PixelData"].is_undefined_length:  # PS3.5 A.4: only compressed data is encapsulated
        return Refusal(statuses.PIXEL_LENGTH_MISMATCH, "encapsulated pixel data under an uncompressed syntax")
    return None


def larger_codestream(ds: Dataset) -> Optional[str]:
    """Why an encapsulated image's codestream declares more pixels than Rows x Columns, or
    None. The decoders believe the codestream: a few kB declaring 24000x24000 made the worker
    allocate gigabytes. JPEG, JPEG-LS and JPEG 2000 say their size; RLE does not."""
    size = codestream_size(_first_fragment(ds.PixelData))
    rows, columns = ds.get("Rows"), ds.get("Columns")
    if not (_whole_number(rows) and _whole_number(columns)):
        return "Rows or Columns is missing or not one whole number"
    if size is not None and (size[0] > rows or size[1] > columns):
        return f"compressed image {size[0]}x{size[1]} pixels, larger than the header's {rows}x{columns}"
    return None


JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  "
J2K_START = b"\xff\x4f\xff\x51"  # SOC, then SIZ (ISO 15444-1 A.5.1)
# JPEG's start-of-frame markers (ISO 10918-1 B.1.1.3: C0-CF but C4, C8, CC) and JPEG-LS's SOF55.
JPEG_SOF = {bytes([0xFF, m]) for m in range(0xC0, 0xD0) if m not in (0xC4, 0xC8, 0xCC)} | {b"\xff\xf7"}


def codestream_size(data: bytes) -> Optional[tuple[int, int]]:
    """(rows, columns) a JPEG, JPEG-LS or JPEG 2000 codestream's header declares; None when
    it is none of these, is cut short, or leaves its height to later (JPEG's DNL)."""
    try:
        if data.startswith(JP2_SIGNATURE):  # a JP2 file: the codestream is in its jp2c box
            data = data[data.index(b"jp2c") + 4:]
        if data.startswith(J2K_START):  # Lsiz, Rsiz, then Xsiz, Ysiz, XOsiz, YOsiz
            xsiz, ysiz, xo, yo = struct.unpack(">IIII", data[8:24])
            return ysiz - yo, xsiz - xo
        if data.startswith(b"\xff\xd8"):
            offset = 2
            while data[offset:offset + 1] == b"\xff":
                if data[offset:offset + 2] in JPEG_SOF:  # length, precision, then height, width
                    rows, columns = struct.unpack(">HH", data[offset + 5:offset + 9])
                    return (rows, columns) if rows else None
                offset += 2 + struct.unpack(">H", data[offset + 2:offset + 4])[0]
    except (ValueError, struct.error):
        pass
    return None


def _first_fragment(pixel_data: bytes) -> bytes:
    """The first fragment after the Basic Offset Table (b"" when the items do not parse)."""
    offset, fragment = 0, b""
    for _ in range(2):
        if pixel_data[offset:offset + 4] != b"\xfe\xff\x00\xe0" or len(pixel_data) < offset + 8:
            return b""
        length = struct.unpack("<I", pixel_data[offset + 4:offset + 8])[0]
        fragment = pixel_data[offset + 8:offset + 8 + length]
        offset += 8 + length
    return fragment


def inflates_beyond(stream, limit: int, chunk: int = 1 << 20) -> bool:
    """Whether a Deflated Explicit VR Little Endian stream (raw deflate, PS3.5 A.5) inflates
    to more than `limit` bytes; found holding one chunk of the output at a time. A stream
    that is no deflate data is left to the decoder to refuse."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total = 0
    with stream.getbuffer() as data:
        for start in range(0, len(data), chunk):
            pending = data[start:start + chunk]
            while pending:
                try:
                    total += len(inflater.decompress(pending, chunk))
                except zlib.error:
                    return False
                if total > limit:
                    return True
                pending = inflater.unconsumed_tail
    return False


def _whole_number(value) -> bool:
    """One integer (a US value as pydicom reads it), not several, not text."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_uid(value: str) -> bool:
    """PS3.5 9.1: numeric components separated by dots, at most 64 characters. (Leading
    zeros in a component are not allowed either, but some vendors write them; refusing
    their images would help nobody.)"""
    return len(value) <= 64 and _UID.fullmatch(value) is not None


def _native_length(ds: Dataset) -> int:
    frames = int(ds.get("NumberOfFrames") or 1)
    bits = int(ds.Rows) * int(ds.Columns) * frames * int(ds.SamplesPerPixel) * int(ds.BitsAllocated)
    return (bits + 7) // 8


def _row_bytes(ds: Dataset) -> int:
    return (int(ds.Columns) * int(ds.SamplesPerPixel) * int(ds.BitsAllocated) + 7) // 8


def _looks_encapsulated(pixel_data: bytes) -> bool:
    # Encapsulated pixel data starts with the Basic Offset Table item (FFFE,E000).
    return pixel_data[:4] == b"\xfe\xff\x00\xe0"
