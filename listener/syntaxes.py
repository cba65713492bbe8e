"""Which SOP classes and transfer syntaxes the listener accepts.

pynetdicom offers only the uncompressed syntaxes by default; a mammogram often comes
JPEG, JPEG-LS or JPEG 2000 compressed, so we accept every syntax that pydicom's
installed pixel decoders (pylibjpeg plugins) can decode, and nothing they cannot:
accepting an image the worker cannot decode would only move the failure later.
"""
from __future__ import annotations

from pydicom.pixels import get_decoder
from pydicom.uid import AllTransferSyntaxes, UID
from pynetdicom import AllStoragePresentationContexts
from pynetdicom.presentation import PresentationContext, build_context

MG_FOR_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.2")
MG_FOR_PROCESSING = UID("1.2.840.10008.5.1.4.1.1.1.2.1")
MAMMOGRAPHY_SOP_CLASSES = (MG_FOR_PRESENTATION, MG_FOR_PROCESSING)


def decodable_transfer_syntaxes() -> list[UID]:
    """Every transfer syntax whose pixel data the installed decoders handle."""
    found = []
    for ts in AllTransferSyntaxes:
        try:
            available = get_decoder(ts).is_available
        except NotImplementedError:  # pydicom has no decoder for it at all
            continue
        if available:
            found.append(UID(ts))
    return found


def supported_contexts(accept_other_sop_classes: bool) -> list[PresentationContext]:
    """The SCP's presentation contexts: mammograms in every decodable syntax; with
    `accept_other_sop_classes` every other storage class too (stored nowhere, see
    intake), so a PACS that pushes a whole study does not see failures."""
    syntaxes = decodable_transfer_syntaxes()
    contexts = [build_context(sop, syntaxes) for sop in MAMMOGRAPHY_SOP_CLASSES]
    if accept_other_sop_classes:
        contexts += [
            build_context(cx.abstract_syntax, syntaxes)
            for cx in AllStoragePresentationContexts
            if cx.abstract_syntax not in MAMMOGRAPHY_SOP_CLASSES
        ]
    return contexts
