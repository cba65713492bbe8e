"""Structured logs: one line per event, as text (`key=value`) or JSON.

Modules log with the standard library and put their fields in `extra`
(`log.info("stored instance", extra={"sop_instance_uid": uid})`), so listener/ and
dicom_out/ need nothing from here. Fields are UIDs, AE titles, job ids and statuses:
never patient names or IDs. pynetdicom's and highdicom's loggers are held at WARNING
unless the level is DEBUG: pynetdicom's debug output can dump identifiers. Python
warnings (pydicom's and highdicom's on odd header values quote the value, a patient's
name among them) go through the log without their text: category and code location only;
so do pydicom's and highdicom's own log records, which repeat such warnings. pynetdicom's
errors come without their traceback unless the level is DEBUG.
"""
from __future__ import annotations

import json
import logging
import re
import sys
import time
import warnings
from contextlib import contextmanager
from typing import Iterator

# pynetdicom can dump identifiers at DEBUG; highdicom logs every copied module at INFO.
CHATTY_LIBRARIES = ("pynetdicom", "highdicom")
# Libraries whose own log records may quote header values, a patient's among them.
HEADER_READERS = ("pydicom", "highdicom")
# Attributes every LogRecord has; anything else came in through `extra`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, record.name, one_line(record.getMessage())]
        parts += [f"{k}={_text(v)}" for k, v in _fields(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"time": _timestamp(record), "level": record.levelname, "logger": record.name,
               "message": record.getMessage(), "pid": record.process}
        out.update({k: v if isinstance(v, (int, float, bool, type(None))) else str(v)
                    for k, v in _fields(record).items()})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


class WithheldWarnings(logging.Filter):
    """Python warnings, captured into the `py.warnings` logger, lose their message: a
    library's warning about a header value quotes the value ('The string "SMITH JANE" is
    unlikely to represent the intended person name'). So do the records of the libraries
    that read headers (pydicom logs each such warning itself as well: "Invalid value for
    VR DA: '1950-01-01'"). What is left says which warning was raised where, enough to
    find it again."""

    _WHERE = re.compile(r"^(?P<file>.*?):(?P<line>\d+): (?P<category>\w+):")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "py.warnings":
            found = self._WHERE.match(str(record.msg))
            where = f"{found['category']} at {found['file']}:{found['line']}" if found else "a warning"
            record.msg, record.args = f"{where} (text withheld: it may quote header values)", ()
        elif record.name.split(".")[0] in HEADER_READERS:
            where = f"{record.levelname} at {record.pathname}:{record.lineno}"
            record.msg, record.args = f"{where} (text withheld: it may quote header values)", ()
            record.exc_info = record.exc_text = None  # an exception's text may quote them too
        return True


class ShortLibraryErrors(logging.Filter):
    """pynetdicom logs a peer's malformed PDU (an AE title in non-ASCII bytes, which any
    port scanner sends) as errors with full tracebacks, some 25 lines per connection.
    Below DEBUG such a record keeps its message and the exception's type, on one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".")[0] == "pynetdicom" and record.exc_info:
            exc = record.exc_info[1]
            what = f"{type(exc).__name__}; " if exc is not None else ""
            record.msg = f"{record.getMessage()} ({what}traceback at logging level DEBUG)"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True


def one_line(message: str) -> str:
    """A message as one line: a library may quote a peer's value in it (pynetdicom's
    "Non-conformant 'Affected SOP Instance UID' value ..."), line breaks included."""
    return message if message.isprintable() else json.dumps(message)[1:-1]


def _text(value) -> str:
    """A field's value; quoted (JSON) when it holds a space or anything unprintable, so a
    value sent by a peer (a UID with a line break) cannot forge a log line."""
    text = str(value)
    return json.dumps(text) if (" " in text or not text or not text.isprintable()) else text


@contextmanager
def withheld_warnings(stream=None) -> Iterator[None]:
    """For the one-shot commands (explain, evaluate, ...; not serve, which logs them): a
    header reader's warning (pydicom's, highdicom's: they quote odd header values) reaches
    stderr without its text, as in the server's log (WithheldWarnings); others as usual."""
    def show(message, category, filename, lineno, file=None, line=None):
        parts = set(re.split(r"[\\/]", filename))
        if parts.isdisjoint(HEADER_READERS):
            return shown(message, category, filename, lineno, file, line)
        print(f"cfia: {category.__name__} at {filename}:{lineno} (text withheld: it may quote header values)",
              file=stream or sys.stderr)

    with warnings.catch_warnings():
        shown = warnings.showwarning
        warnings.showwarning = show
        yield


def setup(format: str = "text", level: str = "INFO", stream=None) -> None:
    """Configure the root logger of this process (the server and each worker)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    handler.addFilter(WithheldWarnings())
    if level != "DEBUG":
        handler.addFilter(ShortLibraryErrors())
    logging.captureWarnings(True)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for chatty in CHATTY_LIBRARIES:
        logging.getLogger(chatty).setLevel("DEBUG" if level == "DEBUG" else "WARNING")
