"""Logs carry UIDs, never patient names: not even inside a library's warning."""
from __future__ import annotations

import io
import json
import logging
import warnings

from cfia import logs
from dicom_out import build_results
from test_dicom_out import ALGORITHM, make_explanation, make_source


def test_a_library_warning_quoting_the_patient_name_reaches_the_log_without_it():
    stream = io.StringIO()
    logging.captureWarnings(False)  # an earlier test's setup may have captured them under pytest's own handler
    logs.setup("json", "INFO", stream)
    source = make_source()
    source.PatientName = "SMITH JANE"  # no carets, as RIS feeds send it: highdicom warns, quoting it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # the default shows a warning once per place
            build_results(source, make_explanation(), ALGORITHM, ["binary_seg"])
    finally:
        logging.captureWarnings(False)
        logging.getLogger().handlers.clear()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    withheld = [line for line in lines if line["logger"] == "py.warnings"]
    assert any(line["message"].startswith("UserWarning at ") and "highdicom" in line["message"] for line in withheld)
    assert "SMITH" not in stream.getvalue()


def test_pydicoms_own_record_of_an_odd_header_value_reaches_the_log_without_it():
    """pydicom logs "Invalid value for VR DA: '1950-01-01'" to its logger as well as warning."""
    from pydicom.dataset import Dataset

    stream = io.StringIO()
    logging.captureWarnings(False)
    logs.setup("text", "INFO", stream)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            Dataset().PatientBirthDate = "1950-01-01"
    finally:
        logging.captureWarnings(False)
        logging.getLogger().handlers.clear()
    text = stream.getvalue()
    assert "WARNING pydicom WARNING at " in text and "text withheld" in text
    assert "1950-01-01" not in text


def test_a_value_with_a_line_break_cannot_forge_a_text_log_line():
    stream = io.StringIO()
    logs.setup("text", "INFO", stream)
    try:
        logging.getLogger("cfia.test").info("stored instance",
                                            extra={"sop_instance_uid": "9\n2026-01-01T00:00:00.000Z ERROR forged"})
        logging.getLogger("pynetdicom.test").warning("Non-conformant UID value '9\n2026-01-01 ERROR forged'")
    finally:
        logging.getLogger().handlers.clear()
    assert len(stream.getvalue().splitlines()) == 2
    assert 'sop_instance_uid="9\\n2026' in stream.getvalue() and "value '9\\n2026-01-01" in stream.getvalue()


def test_one_shot_commands_withhold_only_the_header_readers_warnings(capsys):
    with warnings.catch_warnings(record=True) as shown_as_usual:
        warnings.simplefilter("always")
        with logs.withheld_warnings():
            warnings.warn_explicit("The string \"SMITH JANE\" is odd", UserWarning, "/env/highdicom/base.py", 199)
            warnings.warn_explicit("autocast is off on this device", UserWarning, "/env/torch/amp.py", 5)
    err = capsys.readouterr().err
    assert "SMITH" not in err and "UserWarning at /env/highdicom/base.py:199 (text withheld" in err
    assert [str(w.message) for w in shown_as_usual] == ["autocast is off on this device"]


def test_a_peers_undecodable_ae_title_is_one_log_line_not_a_traceback():
    """pynetdicom logs an AE title in non-ASCII bytes (any port scanner may send one) with
    its traceback; below DEBUG the log keeps one line per record, naming the exception."""
    import pytest
    from pynetdicom.utils import decode_bytes

    for level, traceback in (("DEBUG", True), ("INFO", False)):  # INFO last: as the other tests leave it
        stream = io.StringIO()
        logs.setup("text", level, stream)
        try:
            with pytest.raises(ValueError):
                decode_bytes(b"W\xd6RK")  # what pynetdicom does with the A-ASSOCIATE-RQ's AE titles
        finally:
            logging.getLogger().handlers.clear()
        text = stream.getvalue()
        assert ("Traceback" in text) is traceback, text
        if not traceback:
            lines = text.splitlines()
            assert len(lines) == 1 and lines[0].startswith(tuple("0123456789")), text
            assert "ERROR pynetdicom.utils 'ascii' codec can't decode byte 0xd6" in lines[0]
            assert "(UnicodeDecodeError; traceback at logging level DEBUG)" in lines[0]
