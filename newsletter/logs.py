"""Structured logs: JSON lines (LOG_FORMAT=json) or readable lines, one setup.

Every line logged while a send or a batch is being worked on carries its
``send_id`` and ``batch_id``: ``log_context`` binds them for the current task
(a context variable, so threads and tasks do not mix them up), and a value
given with ``extra=`` on one call wins over the bound one.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator

from newsletter.config import Settings

CONTEXT_FIELDS = ("send_id", "batch_id")
_context: contextvars.ContextVar[dict] = contextvars.ContextVar("newsletter_log_context", default={})

# Attributes every LogRecord has; anything else on a record came from extra=.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def bind_log_context(**fields) -> contextvars.Token:
    """Bind fields (send_id=, batch_id=) to every later log line, until reset."""
    return _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})


def reset_log_context(token: contextvars.Token) -> None:
    _context.reset(token)


@contextmanager
def log_context(**fields) -> Iterator[None]:
    """Bind fields to every log line inside the block."""
    token = bind_log_context(**fields)
    try:
        yield
    finally:
        reset_log_context(token)


class ContextFilter(logging.Filter):
    """Copy the bound fields onto each record, unless the call gave its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def extra_fields(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: _jsonable(v) for k, v in extra_fields(record).items()})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """Readable: the usual line, then key=value for each field."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = extra_fields(record)
        if fields:
            first_line, _, rest = text.partition("\n")
            pairs = " ".join(f"{k}={v}" for k, v in fields.items())
            text = f"{first_line} [{pairs}]" + (f"\n{rest}" if rest else "")
        return text


def _jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def configure_logging(settings: Settings, stream=None) -> logging.Handler:
    """Send every logger's lines to one handler on stderr (or ``stream``)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_newsletter", False)]:
        root.removeHandler(old)
    handler._newsletter = True  # so a second call replaces, not doubles, it
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    return handler
