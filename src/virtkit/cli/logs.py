"""Logging of every entry point (each CLI command, ``virtkit serve`` and uvicorn's loggers in it,
``ksm tune``, ``exporter``): one handler on stderr, warnings by default, ``-v`` info,
``--debug`` debug; as text (``INFO: message``) or, with ``log_format = "ecs"`` or ``--log-json``,
one ECS JSON document a line through ecs-logging (docs/monitoring.md).

Core code only adds fields to records (``virtkit.actionlog``); the handler's
:class:`~virtkit.actionlog.ContextFilter` puts a task's or a request's fields on each record.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Literal

from virtkit.actionlog import ContextFilter

LogFormat = Literal["text", "ecs"]
TEXT = "%(levelname)s: %(message)s"
SERVICE = "virtkit"

# Dropped from ECS documents: ``log.original`` repeats ``message``; uvicorn adds
# ``color_message`` (its message with terminal colours) to its records.
_EXCLUDED = ("log.original", "color_message")

_handler: logging.Handler | None = None
_format: LogFormat = "text"


def ecs_formatter() -> logging.Formatter:
    """ecs-logging's formatter as virtkit uses it (imported only when asked: start-up)."""
    import ecs_logging

    return ecs_logging.StdlibFormatter(extra={"service.name": SERVICE}, exclude_fields=_EXCLUDED)


def early_format(log_json: bool, environ: dict[str, str] | None = None) -> LogFormat:
    """The format before the settings are read (lazily, when a command first needs them):
    ``--log-json``, else ``VIRTKIT_LOG_FORMAT``. The TOML file's ``log_format`` applies once
    :func:`apply_settings` sees it."""
    env = os.environ if environ is None else environ
    return "ecs" if log_json or env.get("VIRTKIT_LOG_FORMAT", "").strip() == "ecs" else "text"


def setup_logging(verbose: bool, debug: bool, log_format: LogFormat = "text") -> None:
    global _handler, _format
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)  # Python's warnings as records, in the same format
    _handler, _format = handler, "text"
    handler.setFormatter(logging.Formatter(TEXT))
    set_format(log_format)


def set_format(log_format: LogFormat) -> None:
    """Switch the handler to ``log_format`` (a text format of a command's own, such as the
    time that ``ksm tune`` adds, is kept while the format stays text)."""
    global _format
    if _handler is None or log_format == _format:
        return
    _handler.setFormatter(ecs_formatter() if log_format == "ecs" else logging.Formatter(TEXT))
    _format = log_format


def apply_settings(log_format: LogFormat, *, forced: bool) -> None:
    """The settings are read: their ``log_format`` applies (unless ``--log-json`` chose)."""
    if not forced:
        set_format(log_format)


def ecs_active() -> bool:
    return _handler is not None and _format == "ecs"


def fail(
    line: str,
    exc: BaseException | None = None,
    *,
    code: str,
    prefix: str = "error: ",
    traceback: bool = False,
) -> None:
    """How the CLI ends on an error: ``prefix`` and the one line on stderr (after the
    traceback, with ``--debug``); in ECS mode an ``error`` record instead, so that every line
    on stderr stays a JSON document."""
    if not ecs_active():
        if traceback and exc is not None:
            import traceback as tb

            tb.print_exception(exc)
        sys.stderr.write(prefix + line + "\n")
        return
    fields: dict[str, Any] = {"error.code": code, "event.outcome": "failure"}
    exc_info = None
    if exc is not None:  # ecs-logging writes error.type, error.message (error.stack_trace)
        exc_info = (type(exc), exc, exc.__traceback__ if traceback else None)
    logging.getLogger("virtkit.cli").error(line, exc_info=exc_info, extra=fields)
