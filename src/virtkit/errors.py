"""The virtkit error tree.

Every error virtkit raises on purpose is a :class:`VirtkitError` with a stable ``code`` (a short
string, documented in ``docs/errors.md``), a one-line ``message`` for humans and an ``expected``
flag: ``True`` when the caller made a mistake (bad input, not found, wrong state), ``False`` when
something broke (an outage or a bug). Entry points render expected errors as one line (CLI exit
status 1, HTTP 4xx) and unexpected ones as HTTP 5xx with a logged traceback.
"""

from __future__ import annotations


class VirtkitError(Exception):
    """Base of all virtkit errors."""

    code: str = "error"
    expected: bool = False
    http_status: int = 500

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        hint: str | None = None,
        expected: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code
        if expected is not None:
            self.expected = expected

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            "expected": self.expected,
        }


class InvalidInput(VirtkitError):
    """The caller's input is malformed or out of range."""

    code = "invalid_input"
    expected = True
    http_status = 422


class NotFound(VirtkitError):
    code = "not_found"
    expected = True
    http_status = 404


class AlreadyExists(VirtkitError):
    code = "already_exists"
    expected = True
    http_status = 409


class InvalidState(VirtkitError):
    """The object exists but is in the wrong state for the operation (e.g. already running)."""

    code = "invalid_state"
    expected = True
    http_status = 409


class InUse(VirtkitError):
    code = "in_use"
    expected = True
    http_status = 409


class Unauthenticated(VirtkitError):
    """No valid credentials (token, session) came with the request, or they expired."""

    code = "unauthenticated"
    expected = True
    http_status = 401


class PermissionDenied(VirtkitError):
    code = "permission_denied"
    expected = True
    http_status = 403


class Throttled(VirtkitError):
    """Too many failed logins for a user or from a client: wait ``retry_after`` seconds."""

    code = "login_throttled"
    expected = True
    http_status = 429

    def __init__(
        self, message: str, *, retry_after: int, code: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message, code=code, hint=hint)
        self.retry_after = retry_after


class Unsupported(VirtkitError):
    """The host, driver or hypervisor cannot do what was asked."""

    code = "unsupported"
    expected = True
    http_status = 422


class Timeout(VirtkitError):
    code = "timeout"
    expected = False
    http_status = 504


class ConnectionFailed(VirtkitError):
    """libvirt could not be reached (daemon down, wrong URI, socket missing)."""

    code = "connection_failed"
    expected = False
    http_status = 503


class ConnectionLost(ConnectionFailed):
    """An open connection to libvirt dropped; the next call reconnects."""

    code = "connection_lost"


class Cancelled(VirtkitError):
    """Long work (a backup, a restore) was cancelled by the caller; what it made is removed."""

    code = "cancelled"
    expected = True
    http_status = 409


class BackendError(VirtkitError):
    """libvirt or QEMU failed in a way virtkit did not anticipate."""

    code = "backend_error"
    expected = False
    http_status = 500


__all__ = [
    "AlreadyExists",
    "BackendError",
    "Cancelled",
    "ConnectionFailed",
    "ConnectionLost",
    "InUse",
    "InvalidInput",
    "InvalidState",
    "NotFound",
    "PermissionDenied",
    "Throttled",
    "Timeout",
    "Unauthenticated",
    "Unsupported",
    "VirtkitError",
]
