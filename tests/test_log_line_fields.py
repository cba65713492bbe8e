"""What a log line carries: a field value with a space stays one field, the time has
milliseconds of fixed width, pynetdicom is held at WARNING below DEBUG, and a record of a
header reader's sub-module (highdicom.seg.sop, pydicom.valuerep) comes without its text."""
from __future__ import annotations

import io
import logging
import re

from cfia import logs


def _text_log(level: str = "INFO") -> io.StringIO:
    stream = io.StringIO()
    logging.captureWarnings(False)
    logs.setup("text", level, stream)
    return stream


def _reset() -> None:
    logging.captureWarnings(False)
    logging.getLogger().handlers.clear()
    for name in logs.CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.NOTSET)


def test_a_value_with_a_space_cannot_forge_another_field():
    stream = _text_log()
    try:
        logging.getLogger("cfia.test").info("stored", extra={"calling_ae": "EVIL status=0x0000"})
    finally:
        _reset()
    line = stream.getvalue().strip()
    assert 'calling_ae="EVIL status=0x0000"' in line
    assert " status=0x0000" not in line.replace('"EVIL status=0x0000"', "")


def test_the_timestamp_has_three_digit_milliseconds():
    stream = _text_log()
    try:
        record = logging.LogRecord("cfia.test", logging.INFO, __file__, 1, "x", (), None)
        record.created, record.msecs = 1_700_000_000.007, 7.0
        logging.getLogger().handlers[0].handle(record)
    finally:
        _reset()
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.007Z INFO ", stream.getvalue())


def test_pynetdicom_info_is_not_logged_at_info():
    stream = _text_log("INFO")
    try:
        assert logging.getLogger("pynetdicom").getEffectiveLevel() == logging.WARNING
        logging.getLogger("pynetdicom.assoc").info("Requesting Association: PATIENT^NAME")
    finally:
        _reset()
    assert "PATIENT" not in stream.getvalue()


def test_a_header_readers_submodule_record_comes_without_its_text():
    stream = _text_log()
    try:
        logging.getLogger("highdicom.seg.sop").warning("copied PatientName 'SMITH JANE'")
        logging.getLogger("pydicom.valuerep").warning("Invalid value for VR PN: 'SMITH JANE'")
    finally:
        _reset()
    out = stream.getvalue()
    assert "SMITH" not in out
    assert out.count("text withheld") == 2
