"""Log set-up of the long-running commands: ``--log-format text|json`` (``CCMON_LOG_FORMAT``).

* ``text`` (the default): ``2026-11-20 10:00:00,123 INFO ccmon.worker: message``, as always.
* ``json``: one JSON object per line, for log shippers (Loki, Elasticsearch, CloudWatch)::

    {"ts": "2026-11-20T10:00:00.123Z", "level": "INFO", "logger": "ccmon.worker", "message": "..."}

  ``ts`` is the record's time, RFC 3339 UTC with milliseconds; ``exc`` holds the traceback
  text of a record logged with an exception (``log.exception``), ``stack`` its stack when
  ``stack_info=True``; every field passed with ``extra=`` follows under its own name (a value
  JSON cannot hold as its ``str()``; a field named like a secret as ``***``). A traceback or a
  message with line breaks stays one line (JSON escapes them). Python warnings
  (``py.warnings``) and uncaught exceptions are logged too, so nothing but JSON reaches stderr.

Logs go to stderr. Nothing is redacted from messages here: the code logs what is safe to show
(:meth:`streams.settings.Settings.redacted`, never a password or the customer key secret).

The Faust worker installs its own root handlers when it starts (``mode.utils.logging``);
:func:`faust_logging_config` is the ``logging_config`` that makes it install this formatter
instead, so its lines and the libraries' (aiokafka) are JSON too.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import IO, Any

from kpi_core.errors import ConfigError

#: The values of ``--log-format``.
LOG_FORMATS = ("text", "json")
#: The environment variable of ``--log-format``.
LOG_FORMAT_ENV = "CCMON_LOG_FORMAT"
#: The text format (what ``ccmon`` always logged).
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The attributes every LogRecord has: the rest came with ``extra=``.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
#: An ``extra=`` field whose name looks like this is shown as ``***``.
_SECRET_NAME = re.compile(r"password|secret|token|credential|authorization", re.IGNORECASE)


def rfc3339(ts: float) -> str:
    """``2026-11-20T10:00:00.123Z``: UTC, whole milliseconds (truncated, as ``%(msecs)``)."""
    ms = int(ts * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON: ``ts``, ``level``, ``logger``, ``message``, then ``exc``,
    ``stack`` and the ``extra=`` fields when present."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            document["exc"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            if key in _RECORD_ATTRIBUTES or key.startswith("_") or key in document:
                continue
            document[key] = "***" if _SECRET_NAME.search(key) else value
        try:
            return json.dumps(document, default=str, allow_nan=False)
        except ValueError:  # NaN or infinity in an extra field: not JSON
            return json.dumps({key: _finite(value) for key, value in document.items()}, default=str)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)


def configure(level: str, log_format: str, stream: IO[str] | None = None) -> None:
    """Log records of ``level`` and above to ``stream`` (stderr) in ``log_format``. Like
    :func:`logging.basicConfig`, does nothing when the root logger has handlers already."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=getattr(logging, level), handlers=[handler])
    if log_format == "json":
        logging.captureWarnings(True)
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    """An exception nothing caught, as a log line (CRITICAL, with ``exc``), not a bare traceback."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    logging.getLogger("ccmon").critical("uncaught %s: %s", kind.__name__, value, exc_info=(kind, value, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    thread = args.thread.name if args.thread is not None else "?"
    logging.getLogger("ccmon").critical(
        "uncaught %s in thread %s: %s",
        args.exc_type.__name__,
        thread,
        args.exc_value,
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
    )


def faust_logging_config(level: str, log_format: str) -> dict[str, Any] | None:
    """The ``logging_config`` for ``faust.Worker``: ``None`` (Faust's own handlers) for text;
    for json, one stderr handler with :class:`JsonFormatter` on the root logger, and every
    logger that exists already kept (``disable_existing_loggers``: False)."""
    if log_format != "json":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "level": level,
                "stream": "ext://sys.stderr",
            },
        },
        "root": {"level": level, "handlers": ["default"]},
    }


# -- for the commands without streams.settings (demo, sources) ---------------------------------
def add_format_argument(parser: argparse.ArgumentParser) -> None:
    """``--log-format``: for a command whose settings are not :mod:`streams.settings`'."""
    parser.add_argument(
        "--log-format",
        dest="log_format",
        default=None,
        metavar="FORMAT",
        help=f"text, or json: one JSON object per log line (default: ${LOG_FORMAT_ENV}, else text)",
    )


def format_from(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> str:
    """The ``--log-format`` flag, else ``$CCMON_LOG_FORMAT``, else text; a bad value raises
    :class:`ConfigError` naming the one it came from."""
    env = os.environ if environ is None else environ
    raw, where = getattr(args, "log_format", None), "--log-format"
    if raw is None and env.get(LOG_FORMAT_ENV, "") != "":
        raw, where = env[LOG_FORMAT_ENV], LOG_FORMAT_ENV
    return parse_format("text" if raw is None else raw, where)


def parse_format(raw: object, where: str) -> str:
    value = str(raw).strip().lower()
    if value not in LOG_FORMATS:
        raise ConfigError(where, f"must be one of {', '.join(LOG_FORMATS)}, got {raw!r}")
    return value


def is_json() -> bool:
    """Whether the root logger writes JSON (a command's plain progress lines then log instead)."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


def say(logger: logging.Logger, message: str, stream: IO[str] | None = None, level: int = logging.INFO) -> None:
    """A command's line for the user (stdout, or ``stream``): logged at ``level`` when the logs
    are JSON, else printed as it is."""
    if is_json():
        logger.log(level, message)
    else:
        print(message, file=stream or sys.stdout, flush=True)
