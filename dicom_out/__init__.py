"""DICOM out: builders that turn a source mammogram and its explanation into DICOM
result objects (FRACTIONAL and BINARY SEG, Parametric Map, TID 1500 SR, GSPS), and
the C-STORE sender that delivers them (sender.py, the only module here with I/O).

Builders do no I/O. Nothing here imports listener/, explain/ or the composition root;
settings come in as plain arguments.
"""
from .geometry import UnsupportedSource, check_source
from .gsps import build_gsps
from .model import METHODS, AlgorithmInfo, Explanation
from .pm import build_parametric_map
from .results import build_results
from .seg import build_binary_seg, build_fractional_seg
from .series import OBJECT_TYPES, SERIES_DESCRIPTIONS
from .sender import STORED, Backoff, Destination, DestinationRejected, DestinationUnavailable, send
from .sr import build_sr
from .uids import object_uids

__all__ = [
    "AlgorithmInfo", "Explanation", "METHODS", "OBJECT_TYPES", "SERIES_DESCRIPTIONS",
    "build_results", "build_fractional_seg", "build_binary_seg", "build_parametric_map",
    "build_sr", "build_gsps", "object_uids", "check_source", "UnsupportedSource",
    "Backoff", "Destination", "DestinationRejected", "DestinationUnavailable", "STORED", "send",
]
