"""Read a mammogram's pixels and the few attributes preprocessing needs.

The only place pydicom meets explain/: a Dataset (or a file) becomes plain values.
"""
from __future__ import annotations

import struct

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from pydicom.multival import MultiValue
from pydicom.uid import UID, ExplicitVRLittleEndian

from listener.checks import inflates_beyond, pixel_data_refusal, too_large_image


# Modalities a mammogram can come as: MG, a CR or DX acquisition, a secondary capture (OT).
MAMMOGRAM_MODALITIES = ("MG", "CR", "DX", "OT", "")
MIN_SIDE = 32  # pixels: below this an image holds no breast to explain
MAX_INFLATED_BYTES = 256 << 20  # a deflated file's dataset, as listener.max_dataset_mb's default


class ImageReadError(ValueError):
    """A file is not a readable single-frame grayscale image; the message names it."""


@dataclass
class SourceImage:
    pixels: np.ndarray              # (rows, cols) stored values
    photometric: str                # MONOCHROME1 (displayed inverted) | MONOCHROME2; see _polarity
    laterality: Optional[str]       # L | R | None
    view: Optional[str]             # CC | MLO | ... | None
    spacing: Optional[tuple[float, float]]  # mm (row, col) in the patient; see _spacing
    for_processing: bool            # raw values linear in X-ray intensity (-log needed); see _polarity
    aspect: Optional[float] = None  # column / row size from PixelAspectRatio, where no spacing says it
    implant: bool = False           # a breast implant in the field; see implant_in_view

    @property
    def pixel_aspect(self) -> float:
        """A pixel's column / row size: its spacing's, else PixelAspectRatio's, else 1."""
        return self.spacing[1] / self.spacing[0] if self.spacing else (self.aspect or 1.0)

    def to_input(self, input_size: tuple[int, int]):
        """The classifier's input and its Geometry (explain.preprocess.preprocess), the
        resize keeping the breast's physical shape where pixels are not square."""
        from explain.preprocess import preprocess

        return preprocess(self.pixels, input_size, self.photometric, self.laterality, self.for_processing,
                          pixel_aspect=self.pixel_aspect)


def read_file(path: str | Path) -> SourceImage:
    """dcmread + from_dataset, with errors that name the file."""
    return from_dataset(read_dataset(path), str(path))


def read_dataset(path: str | Path):
    """dcmread, with an ImageReadError that names the file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        if _deflated_beyond(path, MAX_INFLATED_BYTES):  # pydicom inflates it whole: a few MB may hold GB
            raise ImageReadError(f"{path}: its deflated dataset inflates beyond {MAX_INFLATED_BYTES >> 20} MB")
        ds = pydicom.dcmread(str(path))
        for _ in ds:  # pydicom converts elements when first touched: a malformed one fails here, as in the worker
            pass
        return ds
    except Exception as exc:  # noqa: BLE001 - pydicom's parse errors are many types; each is this file's fault
        if isinstance(exc, ImageReadError):
            raise
        if isinstance(exc, InvalidDicomError) and not has_file_header(path):
            raise ImageReadError(f"{path}: not a DICOM file: no 'DICM' after a 128-byte preamble (if it is a dataset "
                                 "saved without the DICOM file header, as some old exports are, dcmtk's `dcmconv IN "
                                 "OUT` writes it with one)") from None
        # struct.error: a file cut short inside an element's header (a partial transfer);
        # RecursionError: sequences nested thousands deep
        raise ImageReadError(f"{path}: not a readable DICOM file ({type(exc).__name__}: "
                             f"{_one_line(str(exc))})") from None


def has_file_header(path) -> bool:
    """The DICOM file preamble: 128 bytes, then DICM."""
    with open(path, "rb") as f:
        return f.read(132)[128:] == b"DICM"


def _deflated_beyond(path, limit: int) -> bool:
    """Whether a Deflated Explicit VR Little Endian file's dataset inflates beyond `limit`
    bytes. Its file meta (group 2, uncompressed) ends where its group length says."""
    import io

    from pydicom.filereader import read_file_meta_info

    with open(path, "rb") as f:
        head = f.read(144)
        if head[128:136] != b"DICM\x02\x00\x00\x00":  # preamble, then (0002,0000) group length
            return False
        if not read_file_meta_info(path).TransferSyntaxUID.is_deflated:
            return False
        f.seek(144 + struct.unpack("<I", head[140:144])[0])
        return inflates_beyond(io.BytesIO(f.read()), limit)


def from_dataset(ds, where: str = "dataset") -> SourceImage:
    """A pydicom Dataset -> SourceImage; ImageReadError for non-image or unreadable data."""
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        sop = getattr(ds, "SOPClassUID", "?")
        raise ImageReadError(f"{where}: has no pixel data (SOP class {sop}); not an image")
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality not in MAMMOGRAM_MODALITIES:
        raise ImageReadError(f"{where}: Modality {modality}; not a mammogram (expected one of "
                             f"{', '.join(m for m in MAMMOGRAM_MODALITIES if m)}, or none)")
    photometric = str(getattr(ds, "PhotometricInterpretation", "")).strip()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ImageReadError(f"{where}: PhotometricInterpretation {photometric!r} is not supported; "
                             "expected MONOCHROME1 or MONOCHROME2")
    too_large = too_large_image(ds) or pixel_data_problem(ds)
    if too_large:  # before decoding: a small compressed file may declare gigabytes
        raise ImageReadError(f"{where}: {too_large}; not a mammogram")
    try:
        pixels = ds.pixel_array
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # codec missing, truncated data, bad attributes; a decoder's
        # panic (pylibjpeg-rle raises pyo3's PanicException, a BaseException) killed the worker
        raise ImageReadError(f"{where}: cannot decode pixel data ({type(exc).__name__}: "
                             f"{_one_line(str(exc))})") from None
    if pixels.ndim == 3 and pixels.shape[0] == 1:
        pixels = pixels[0]
    if pixels.ndim != 2:
        raise ImageReadError(f"{where}: expected a single-frame 2-D image, got pixel array shape {pixels.shape}")
    if min(pixels.shape) < MIN_SIDE:
        raise ImageReadError(f"{where}: {pixels.shape[0]}x{pixels.shape[1]} pixels is too small to be a mammogram "
                             f"(at least {MIN_SIDE} per side)")
    if pixels.min() == pixels.max():
        raise ImageReadError(f"{where}: every pixel has the value {pixels.flat[0]}; a blank image has no breast")
    _check_high_bit(ds, where)
    photometric, for_processing = _polarity(ds, photometric, where)
    padded = _padding(pixels, ds, where)
    pixels = _modality_values(pixels, ds, where)
    # Float Pixel Data (or a rescale) may hold NaN or infinities: the breast mask's threshold failed on them.
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():
        raise ImageReadError(f"{where}: {int((~np.isfinite(pixels)).sum())} pixel(s) are NaN or infinite; "
                             "not a mammogram")
    if padded is not None:
        pixels = _as_air(pixels, padded, photometric, for_processing)
    if for_processing and photometric == "MONOCHROME1":
        # Intensity stored inverted: undone about the top of the stored range, where it was
        # inverted, not about the image's own maximum, which would shift the -log to come.
        pixels, photometric = _range_top(ds, where) - pixels.astype(np.float32), "MONOCHROME2"
    laterality = _first(ds, "ImageLaterality", "Laterality")
    view = _first(ds, "ViewPosition")
    return SourceImage(pixels, photometric, laterality, view, _spacing(ds), for_processing, _aspect(ds),
                       implant_in_view(ds))


# View modifier "implant displaced" (CID 4015): SNOMED CT's code, and its meaning for the
# retired SNOMED RT code that older modalities still send.
IMPLANT_DISPLACED = ("399209000", "implant displaced")


def implant_in_view(ds) -> bool:
    """BreastImplantPresent (0028,1300) YES in a view that is not implant displaced (an
    implant-displaced view pulls the breast in front of the implant, which stays out of the
    field). The default classifier was not trained on implant views (docs/models.md)."""
    if str(ds.get("BreastImplantPresent", "") or "").strip().upper() != "YES":
        return False
    for view in ds.get("ViewCodeSequence", None) or []:
        for modifier in view.get("ViewModifierCodeSequence", None) or []:
            value = str(modifier.get("CodeValue", "") or "").strip()
            meaning = str(modifier.get("CodeMeaning", "") or "").strip().lower()
            if value == IMPLANT_DISPLACED[0] or IMPLANT_DISPLACED[1] in meaning:
                return False
    return True


def pixel_data_problem(ds) -> Optional[str]:
    """What the listener refuses before decoding (listener.checks), for files read here; a
    file without a transfer syntax is taken as uncompressed."""
    if "PixelData" not in ds:
        return None
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None) or ExplicitVRLittleEndian
    refusal = pixel_data_refusal(ds, UID(syntax))
    return refusal.reason if refusal else None


def _one_line(text: str, limit: int = 300) -> str:
    """A decoder's message as one line of bounded length (some list each plugin's failure)."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _spacing(ds) -> Optional[tuple[float, float]]:
    """Row and column spacing in mm in the patient, as the result objects state it
    (dicom_out.geometry.pixel_spacing: PixelSpacing or ImagerPixelSpacing, magnification
    undone), else NominalScannedPixelSpacing (scanned film), when it is two positive
    numbers; else None (a single value, as some exports write, is not a row and column spacing)."""
    from dicom_out.geometry import pixel_spacing

    try:
        return tuple(pixel_spacing(ds)[0])
    except ValueError:
        pass
    value = ds.get("NominalScannedPixelSpacing")
    if isinstance(value, MultiValue) and len(value) == 2:
        try:
            spacing = (float(value[0]), float(value[1]))
        except (TypeError, ValueError):
            return None
        if min(spacing) > 0:
            return spacing
    return None


def _aspect(ds) -> Optional[float]:
    """Column / row size from PixelAspectRatio (vertical\\horizontal, PS3.3 C.7.6.3: present when
    pixels are not square and no spacing is given), when it is two positive numbers."""
    value = ds.get("PixelAspectRatio")
    try:
        vertical, horizontal = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return horizontal / vertical if vertical > 0 and horizontal > 0 else None


# For Processing SOP classes: MG, DX, intra-oral, breast projection X-ray. Their images are
# For Processing whatever a missing PresentationIntentType (Type 1, but left out by some
# exports) would suggest.
FOR_PROCESSING_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.1.2.1", "1.2.840.10008.5.1.4.1.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.3.1",
    "1.2.840.10008.5.1.4.1.1.13.1.5",
})
FOR_PRESENTATION_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.1.2", "1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.3",
    "1.2.840.10008.5.1.4.1.1.13.1.4",
})


def _for_processing(ds, where: str) -> bool:
    """The presentation intent: PresentationIntentType, else the SOP class; an error when the two
    disagree (a raw image read as processed displays inverted, and the map lands in the air)."""
    intent = str(ds.get("PresentationIntentType", "") or "").strip().upper()
    sop = str(ds.get("SOPClassUID", "") or "")
    by_class = True if sop in FOR_PROCESSING_CLASSES else False if sop in FOR_PRESENTATION_CLASSES else None
    if intent not in ("FOR PROCESSING", "FOR PRESENTATION"):
        return bool(by_class)
    by_intent = intent == "FOR PROCESSING"
    if by_class is not None and by_class != by_intent:
        raise ImageReadError(f"{where}: PresentationIntentType {intent} contradicts its SOP class "
                             f"({'For Processing' if by_class else 'For Presentation'})")
    return by_intent


def _check_high_bit(ds, where: str) -> None:
    """HighBit must be BitsStored - 1 (PS3.3 C.8.11.3, DX and MG images): pydicom keeps the
    low BitsStored bits whatever HighBit says, so values stored higher up would be garbage."""
    if "HighBit" not in ds or "BitsStored" not in ds:
        return
    high, stored = _number(ds, "HighBit", 0, where, int), _number(ds, "BitsStored", 0, where, int)
    if high != stored - 1:
        raise ImageReadError(f"{where}: HighBit {high} is not BitsStored - 1 ({stored - 1}); cfia reads the "
                             "low BitsStored bits of each pixel only")


def _polarity(ds, photometric: str, where: str = "dataset") -> tuple[str, bool]:
    """(photometric, for_processing) as explain.preprocess.display_values takes them:
    for_processing there means raw values linear in the X-ray intensity, which it turns
    dense-bright by -log.

    A For Processing image stored already logarithmic (PixelIntensityRelationship LOG) must
    not be logged again; its PixelIntensityRelationshipSign says which way dense tissue
    goes (PS3.3 C.8.11.3.1.2: +1, lower values = less X-ray intensity = denser, so it
    displays inverted like MONOCHROME1; -1, higher values = denser, like MONOCHROME2).
    Without a sign its photometric interpretation says it. LIN, or no relationship: the
    raw linear signal, for_processing True; its sign says which way intensity goes (+1:
    lower values = less intensity, as stored raw, "MONOCHROME2" here; -1: higher values
    = less intensity, stored inverted, "MONOCHROME1"), else its photometric interpretation.
    """
    if not _for_processing(ds, where):
        # MONOCHROME2 through an INVERSE Presentation LUT displays as MONOCHROME1 does (CR and
        # secondary captures write it; DX and MG pair INVERSE with MONOCHROME1, no change there).
        inverse = str(ds.get("PresentationLUTShape", "")).strip().upper() == "INVERSE"
        return ("MONOCHROME1" if inverse else photometric), False
    sign = ds.get("PixelIntensityRelationshipSign")
    if str(ds.get("PixelIntensityRelationship", "")).strip().upper() != "LOG":
        if sign in (1, -1):
            return ("MONOCHROME2" if int(sign) == 1 else "MONOCHROME1"), True
        return photometric, True
    if sign in (1, -1):
        return ("MONOCHROME1" if int(sign) == 1 else "MONOCHROME2"), False
    return photometric, False


def _number(ds, keyword: str, default, where: str, kind=float):
    """A numeric header value, or an ImageReadError naming it ('1,5', two values where one
    belongs): a header the worker cannot read does not get better with retries."""
    value = "(unreadable)"
    try:
        value = ds.get(keyword, default)  # a file's raw value is converted here: ValueError
        return kind(default if value is None or value == "" else value)
    except (TypeError, ValueError):
        raise ImageReadError(f"{where}: {keyword} {value!r} is not a number") from None


def _padding(pixels: np.ndarray, ds, where: str) -> Optional[np.ndarray]:
    """Where the stored pixels are padding (PixelPaddingValue up to PixelPaddingRangeLimit),
    or None when nothing (or everything) is."""
    value = ds.get("PixelPaddingValue")
    if value is None or isinstance(value, bytes):  # absent, or its VR unresolved
        return None
    value = _number(ds, "PixelPaddingValue", None, where, int)
    bounds = sorted((value, _number(ds, "PixelPaddingRangeLimit", value, where, int)))
    padded = (pixels >= bounds[0]) & (pixels <= bounds[1])
    if padded.any() and not padded.all() and lossy(ds):
        padded = _grown_padding(pixels, padded, bounds)
    return padded if padded.any() and not padded.all() else None


LOSSY_PADDING_TOLERANCE = 0.02  # of the real pixels' range: lossy codecs move padding by a few units
MIN_PADDING_REGION = 0.01  # of the image: the air's padding; smaller patches may be saturated tissue


LOSSY_ONLY_SYNTAXES = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"}  # JPEG baseline and extended
# ... and those that may be lossy: JPEG-LS near-lossless, JPEG 2000 (parts 1 and 2), HTJ2K
MAYBE_LOSSY_SYNTAXES = LOSSY_ONLY_SYNTAXES | {"1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.91",
                                              "1.2.840.10008.1.2.4.93", "1.2.840.10008.1.2.4.203"}


def lossy(ds, maybe: bool = True) -> bool:
    """Said lossy (LossyImageCompression, required once it is), or in a transfer syntax that is
    only lossy, or with `maybe` one that may be."""
    syntax = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None) or "")
    return (str(ds.get("LossyImageCompression", "") or "").strip() == "01"
            or syntax in (MAYBE_LOSSY_SYNTAXES if maybe else LOSSY_ONLY_SYNTAXES))


def _grown_padding(pixels: np.ndarray, padded: np.ndarray, bounds: list[int]) -> np.ndarray:
    """After lossy compression padding is no longer exactly its value: pixels near it,
    connected to a large region of exact padding (the air), are padding too. Dense tissue
    that saturates at the padding value forms small patches, which must not be grown from:
    the air's region reaches tissue only across the skin line."""
    from scipy import ndimage

    real = pixels[~padded]
    tolerance = max(1.0, LOSSY_PADDING_TOLERANCE * float(real.max() - real.min()))
    exact, _ = ndimage.label(padded)
    large = np.flatnonzero(np.bincount(exact.ravel()) >= MIN_PADDING_REGION * padded.size)
    near = (pixels >= bounds[0] - tolerance) & (pixels <= bounds[1] + tolerance)
    labels, _ = ndimage.label(near)
    seeds = np.unique(labels[np.isin(exact, large[large > 0])])
    return padded | np.isin(labels, seeds[seeds > 0])


def _modality_values(pixels: np.ndarray, ds, where: str) -> np.ndarray:
    """Stored values through the Modality LUT (Rescale Slope/Intercept or a Modality LUT
    Sequence), which CR, DX and secondary-capture files may carry (the MG IOD allows only
    the identity): a negative slope would otherwise show the image inverted."""
    from pydicom.pixels import apply_modality_lut

    slope, intercept = _rescale(ds, where)
    if slope == 0:
        raise ImageReadError(f"{where}: RescaleSlope 0 would give every pixel the same value")
    if "ModalityLUTSequence" not in ds and slope == 1 and intercept == 0:
        return pixels  # the identity: keep the stored dtype (memory at 4096x3328)
    if "ModalityLUTSequence" not in ds and (abs(intercept) + abs(slope) * float(np.abs(pixels).max())) \
            * float(np.finfo(np.float32).eps) > abs(slope) / 2:
        raise ImageReadError(f"{where}: RescaleIntercept {intercept:g} with RescaleSlope {slope:g}: neighbouring "
                             "stored values would become one value in float32")
    if "ModalityLUTSequence" in ds or "RescaleSlope" in ds or "RescaleIntercept" in ds:
        try:
            values = np.asarray(apply_modality_lut(pixels, ds), np.float32)
        except Exception as exc:  # noqa: BLE001 - a LUT item without its descriptor or data, of any shape
            raise ImageReadError(f"{where}: the Modality LUT cannot be applied ({type(exc).__name__}: "
                                 f"{_one_line(str(exc))})") from None
        if not np.isfinite(values).all():
            raise ImageReadError(f"{where}: RescaleSlope/RescaleIntercept give values beyond float32 range")
        return values
    return np.asarray(pixels * slope + intercept, np.float32)  # as pydicom computes it, from the groups


def _rescale(ds, where: str) -> tuple[float, float]:
    """(slope, intercept): the top-level Rescale, else a single-frame enhanced file's (Breast
    Projection X-Ray) Pixel Value Transformation in its functional groups."""
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        return _number(ds, "RescaleSlope", 1, where), _number(ds, "RescaleIntercept", 0, where)
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for item in (ds.get(groups) or [])[:1]:
            for transform in (item.get("PixelValueTransformationSequence") or [])[:1]:
                return (_number(transform, "RescaleSlope", 1, where),
                        _number(transform, "RescaleIntercept", 0, where))
    return 1.0, 0.0


def _range_top(ds, where: str) -> float:
    """The largest value the stored range can hold, through the rescale (the modality values'
    top: with a negative slope, the stored range's bottom)."""
    bits = int(_number(ds, "BitsStored", _number(ds, "BitsAllocated", 16, where), where))
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if "ModalityLUTSequence" in ds:  # the LUT's outputs, whatever their range
        from pydicom.pixels import apply_modality_lut

        return float(np.max(apply_modality_lut(np.arange(low, high + 1), ds)))
    slope, intercept = _rescale(ds, where)
    return max(slope * low + intercept, slope * high + intercept)


def _as_air(pixels: np.ndarray, padded: np.ndarray, photometric: str, for_processing: bool) -> np.ndarray:
    """Padding is not part of the image; some vendors pad the air with a value that displays
    white (0 in a MONOCHROME1 image), which would look like tissue. Padded pixels become the
    image's own darkest displayed value."""
    from explain.preprocess import display_values

    real = pixels[~padded]
    ends = np.array([[real.min(), real.max()]])
    air = ends[0, int(np.argmin(display_values(ends, photometric, for_processing)[0]))]
    return np.where(padded, air, pixels).astype(pixels.dtype, copy=False)


def _first(ds, *keys) -> Optional[str]:
    for key in keys:
        value = str(ds.get(key, "") or "").strip().upper()
        if value:
            return value
    return None
