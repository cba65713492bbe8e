"""A For Processing image stored with signed pixels (PixelRepresentation 1) is read like its
unsigned twin: values stored inverted (MONOCHROME1, intensity sign -1) are undone about the top
of the signed range (2^(BitsStored-1) - 1), not about the unsigned top, which would shift every
value by 2^(BitsStored-1) before the -log and change the image the classifier sees."""
from __future__ import annotations

import numpy as np

from cfia.dicom_io import from_dataset
from phantom.dicom import to_dataset
from phantom.generate import PhantomOptions, make_one


def _raw_and_signed():
    mg = make_one(15, 0, PhantomOptions(size=(256, 208), positive_fraction=1.0, for_processing=True))
    raw = to_dataset(mg, "signed:15", 15, for_processing=True)  # 12-bit, unsigned, sign +1 (linear)
    linear = raw.pixel_array.astype(np.int32)
    signed = to_dataset(mg, "signed:15", 15, for_processing=True, photometric="MONOCHROME1")
    signed.PixelRepresentation = 1  # 12 bits signed: -2048 .. 2047
    signed.PixelIntensityRelationshipSign = -1  # higher values, less X-ray intensity
    signed.PixelData = (2047 - linear).astype(np.int16).tobytes()
    return raw, signed, linear


def test_signed_inverted_values_are_undone_about_the_signed_top():
    raw, signed, linear = _raw_and_signed()
    assert int(signed.pixel_array.min()) < 0 <= int(raw.pixel_array.min())  # the signed range is used
    src = from_dataset(signed)
    assert src.photometric == "MONOCHROME2" and src.for_processing
    assert np.array_equal(np.asarray(src.pixels, dtype=np.float64), linear.astype(np.float64))


def test_signed_and_unsigned_twins_give_the_classifier_the_same_image():
    raw, signed, _ = _raw_and_signed()
    a, b = from_dataset(raw).to_input((256, 176)), from_dataset(signed).to_input((256, 176))
    assert a.geometry == b.geometry
    assert float((a.image - b.image).abs().max()) < 1e-5
