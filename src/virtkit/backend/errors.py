"""The one map from libvirt errors to virtkit errors, by libvirt's symbolic error codes."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

import libvirt

from virtkit.errors import (
    AlreadyExists,
    BackendError,
    ConnectionFailed,
    ConnectionLost,
    InUse,
    InvalidInput,
    InvalidState,
    NotFound,
    PermissionDenied,
    Timeout,
    Unsupported,
    VirtkitError,
)

P = ParamSpec("P")
R = TypeVar("R")


def _codes(*names: str) -> frozenset[int]:
    # Older libvirt builds may lack a constant; skip it rather than fail at import time.
    return frozenset(getattr(libvirt, n) for n in names if hasattr(libvirt, n))


NOT_FOUND = _codes(
    "VIR_ERR_NO_DOMAIN",
    "VIR_ERR_NO_NETWORK",
    "VIR_ERR_NO_STORAGE_POOL",
    "VIR_ERR_NO_STORAGE_VOL",
    "VIR_ERR_NO_DOMAIN_SNAPSHOT",
    "VIR_ERR_NO_NWFILTER",
    "VIR_ERR_NO_SECRET",
    "VIR_ERR_NO_NODE_DEVICE",
    "VIR_ERR_NO_INTERFACE",
    "VIR_ERR_NO_DOMAIN_CHECKPOINT",
    "VIR_ERR_NO_NETWORK_PORT",
    "VIR_ERR_NO_DOMAIN_METADATA",
    "VIR_ERR_NO_DOMAIN_BACKUP",
    "VIR_ERR_NO_NWFILTER_BINDING",
)
ALREADY_EXISTS = _codes(
    "VIR_ERR_DOM_EXIST",
    "VIR_ERR_STORAGE_VOL_EXIST",
    "VIR_ERR_NETWORK_EXIST",
    "VIR_ERR_STORAGE_POOL_BUILT",
)
INVALID_STATE = _codes("VIR_ERR_OPERATION_INVALID", "VIR_ERR_STORAGE_PROBE_FAILED")
INVALID_INPUT = _codes(
    "VIR_ERR_XML_ERROR",
    "VIR_ERR_XML_DETAIL",
    "VIR_ERR_INVALID_ARG",
    "VIR_ERR_XML_INVALID_SCHEMA",
    "VIR_ERR_CONFIG_UNSUPPORTED",
    "VIR_ERR_INVALID_DOMAIN",
    "VIR_ERR_INVALID_STORAGE_VOL",
    "VIR_ERR_INVALID_STORAGE_POOL",
    "VIR_ERR_INVALID_NETWORK",
    "VIR_ERR_INVALID_MAC",
)
UNSUPPORTED = _codes("VIR_ERR_NO_SUPPORT", "VIR_ERR_ARGUMENT_UNSUPPORTED")
DENIED = _codes(
    "VIR_ERR_OPERATION_DENIED",
    "VIR_ERR_AUTH_FAILED",
    "VIR_ERR_AUTH_CANCELLED",
    "VIR_ERR_ACCESS_DENIED",
)
TIMEOUT = _codes("VIR_ERR_OPERATION_TIMEOUT", "VIR_ERR_AGENT_UNRESPONSIVE")
CONNECTION = _codes(
    "VIR_ERR_NO_CONNECT", "VIR_ERR_INVALID_CONN", "VIR_ERR_RPC", "VIR_ERR_AUTH_UNAVAILABLE"
)
# Errors raised while talking to the daemon: RPC layer, remote driver, sockets.
TRANSPORT_DOMAINS = _codes("VIR_FROM_RPC", "VIR_FROM_REMOTE", "VIR_FROM_STREAMS")
_CLOSED_WORDS = (
    "client socket is closed",
    "connection closed",
    "end of file while reading",
    "cannot recv data",
    "cannot write data",
    "broken pipe",
    "no connection driver",
)

START_HINT = (
    "is libvirtd running? start it with 'virtlogd -d; libvirtd -d', or "
    "'systemctl start libvirtd' where systemd runs"
)


def translate(exc: libvirt.libvirtError) -> VirtkitError:
    """Turn one libvirtError into the matching virtkit error (the caller raises it ``from exc``)."""
    code = exc.get_error_code()
    domain = exc.get_error_domain()
    message = exc.get_error_message() or str(exc)
    lowered = message.lower()
    if code in CONNECTION or (
        domain in TRANSPORT_DOMAINS and any(w in lowered for w in _CLOSED_WORDS)
    ):
        return ConnectionLost(f"lost the connection to libvirt: {message}")
    table: tuple[tuple[frozenset[int], type[VirtkitError]], ...] = (
        (NOT_FOUND, NotFound),
        (ALREADY_EXISTS, AlreadyExists),
        (INVALID_STATE, InvalidState),
        (INVALID_INPUT, InvalidInput),
        (UNSUPPORTED, Unsupported),
        (DENIED, PermissionDenied),
        (TIMEOUT, Timeout),
    )
    for codes, cls in table:
        if code in codes:
            return cls(message)
    if (
        code == libvirt.VIR_ERR_OPERATION_FAILED
        and " already " in lowered
        and ("exists" in lowered or "defined" in lowered)
    ):
        # libvirt reports a name or UUID collision as a generic "operation failed".
        return AlreadyExists(message)
    if "active console session exists" in lowered:
        return InUse(message, code="console_busy")
    return BackendError(message, code=f"libvirt_{_code_name(code)}")


def _code_name(code: int | None) -> str:
    for name in dir(libvirt):
        if name.startswith("VIR_ERR_") and getattr(libvirt, name) == code:
            return name.removeprefix("VIR_ERR_").lower()
    return "error"


ACCESS_HINT = "run as root, or as a member of the 'libvirt' group"


def translate_open_error(exc: libvirt.libvirtError, uri: str) -> VirtkitError:
    """Errors opening a connection: say which URI failed and how to fix the usual causes."""
    message = exc.get_error_message() or str(exc)
    lowered = message.lower()
    if (
        exc.get_error_code() in DENIED
        or exc.get_error_code() == getattr(libvirt, "VIR_ERR_AUTH_UNAVAILABLE", -1)
        or "permission denied" in lowered
    ):
        return PermissionDenied(
            f"libvirt at {uri} refused the connection: {message}", hint=ACCESS_HINT
        )
    daemon_missing = any(w in lowered for w in ("no such file", "connection refused"))
    return ConnectionFailed(
        f"cannot connect to libvirt at {uri}: {message}",
        hint=START_HINT if daemon_missing else None,
    )


@contextmanager
def libvirt_errors() -> Iterator[None]:
    """Run a block of libvirt calls, re-raising any libvirtError as a virtkit error."""
    try:
        yield
    except libvirt.libvirtError as exc:
        raise translate(exc) from exc


def mapped(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator form of :func:`libvirt_errors` for backend methods."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with libvirt_errors():
            return fn(*args, **kwargs)

    return wrapper


__all__ = ["START_HINT", "libvirt_errors", "mapped", "translate", "translate_open_error"]
