"""What virtkit's log records carry beyond their message: ECS fields (docs/monitoring.md).

Core code only *adds* fields; entry points choose how records are written (cli/logs.py: text,
or ECS JSON through ecs-logging, where a dotted key such as ``event.action`` becomes the nested
``{"event": {"action": ...}}``).

- :func:`logged_action` wraps one action (``vm.start``): one record at its end with
  ``event.action``, ``event.outcome`` (``success``/``failure``), ``event.duration`` (ns),
  ``host.name``, ``virtkit.vm`` and, on failure, ``error.code``/``error.message``/``error.type``.
- :func:`log_context` puts fields on every record logged inside it, in this thread or task
  (a contextvar: a task's worker thread sets its own); :class:`ContextFilter`, installed on a
  handler by the entry point, copies them onto each record.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

from virtkit.errors import VirtkitError

_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "virtkit_log_context", default=MappingProxyType({})
)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Every record logged inside carries ``fields`` (dotted ECS names as keyword arguments via
    ``**{"virtkit.task.id": ...}``); ``None`` values are left out, inner contexts add to outer."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def context_fields() -> Mapping[str, Any]:
    """The fields :func:`log_context` has set here (what :class:`ContextFilter` adds)."""
    return _context.get()


class ContextFilter(logging.Filter):
    """Adds the :func:`log_context` fields to each record (a field the record has already, from
    ``extra=``, wins). Install it on a handler: a logger's filters miss propagated records."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if key not in record.__dict__:
                record.__dict__[key] = value
        return True


@functools.lru_cache(maxsize=64)
def host_name(uri: str) -> str:
    """The libvirt host a URI reaches: its host part, else (``qemu:///system``, ``test:///``)
    this machine's name. Pure and cheap: a log record must not wait for libvirt."""
    import socket
    from urllib.parse import urlsplit

    try:
        remote = urlsplit(uri).hostname
    except ValueError:
        remote = None
    return remote or socket.gethostname()


def _took(ns: int) -> str:
    seconds = ns / 1e9
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


@contextmanager
def logged_action(
    log: logging.Logger,
    action: str,
    *,
    vm: str | None = None,
    host: str | None = None,
    label: str | None = None,
    **fields: Any,
) -> Iterator[dict[str, Any]]:
    """One record when the block ends: ``action`` (``vm.start``), its outcome and duration;
    its message starts with ``label`` (default: the action and the VM).

    At INFO whatever the outcome (``event.outcome`` says it), without traceback: whoever
    handles an error reports it at its own level (the CLI's ``error:`` line, the API's log of
    an unexpected error), and text logs at the default level stay as they were. The block may
    add fields to the dict it is given. The error is re-raised untouched.
    """
    extra: dict[str, Any] = {"event.action": action, "event.kind": "event", **fields}
    if vm is not None:
        extra["virtkit.vm"] = vm
    if host is not None:
        extra["host.name"] = host
    what = label or (f"{action} {vm}" if vm else action)
    start = time.monotonic_ns()
    try:
        yield extra
    except BaseException as exc:
        took = time.monotonic_ns() - start
        code = exc.code if isinstance(exc, VirtkitError) else type(exc).__name__
        message = " ".join(str(exc).split()) or type(exc).__name__
        extra.update({
            "event.outcome": "failure", "event.duration": took, "error.code": code,
            "error.message": message, "error.type": type(exc).__name__,
        })  # fmt: skip
        log.info(
            "%s failed after %s: %s (%s)", what, _took(took), message, code,
            extra=extra, stacklevel=3,
        )  # fmt: skip
        raise
    took = time.monotonic_ns() - start
    extra.update({"event.outcome": "success", "event.duration": took})
    # stacklevel: log.origin is the block's function (contextlib's __exit__ is in between)
    log.info("%s succeeded in %s", what, _took(took), extra=extra, stacklevel=3)
