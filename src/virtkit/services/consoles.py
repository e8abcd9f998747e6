"""Serial consoles: attach interactively, or read what a VM printed.

What a VM printed comes from one of two places, and callers are told which:

* ``file``: the serial console's log file, which holds the whole history since the VM was
  defined; only on the VM's own host (a local URI), since the file is there.
* ``stream``: the console itself through libvirt's stream API (``virDomainOpenConsole``), so it
  works over remote URIs too, but shows only what the guest prints from now on, for a bounded
  time or until it has been quiet for a while.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from virtkit.backend.console import ConsoleStream
from virtkit.backend.guest import Guest
from virtkit.backend.host import Host
from virtkit.errors import InvalidInput, InvalidState, NotFound, PermissionDenied, Unsupported
from virtkit.specs import validate_name

ConsoleSource = Literal["auto", "file", "stream"]
STREAM_TIMEOUT = 10.0  # a stream read without --follow: at most this long ...
STREAM_IDLE = 2.0  # ... and over once the guest printed nothing for this long
_POLL = 0.2
_STATE_EVERY = 1.0


@dataclass
class ConsoleOutput:
    """What a VM prints, as chunks of bytes, and where they come from."""

    source: Literal["file", "stream"]
    description: str  # for humans: which one is shown, and what it covers
    chunks: Iterator[bytes]


class ConsoleService:
    def __init__(self, host: Host) -> None:
        self.host = host

    def open(self, name: str, *, force: bool = False) -> ConsoleStream:
        """An attached serial console of a running VM (``force`` takes it from another client;
        without it, a console another client holds is ``InUse``, code ``console_busy``)."""
        return ConsoleStream(self.host, self._attachable(name), force=force)

    def answers(self, name: str, wait: float = 1.5) -> bool:
        """Whether the serial console answers a carriage return within ``wait`` seconds (a
        shell or getty echoes, prompts or redraws). A console another client holds is
        ``InUse``: it is not taken from them."""
        stream = self.open(name)
        try:
            stream.write(b"\r")
            return bool(stream.read(timeout=wait))
        finally:
            stream.close()

    def check(self, name: str) -> None:
        """Raise what ``open`` would for a VM that is missing, stopped or has no console."""
        self._attachable(name)

    def _attachable(self, name: str) -> Guest:
        validate_name(name)
        guest = self.host.lookup(name)
        if not guest.is_active():
            raise InvalidState(
                f"VM {name!r} is not running: its console is not there", code="vm_shutoff"
            )
        if not list(guest.definition().consoles):
            raise Unsupported(f"VM {name!r} has no serial console", code="no_console")
        return guest

    def log_path(self, name: str) -> str:
        validate_name(name)
        return _log_path(self.host.lookup(name), name)

    def read_log(self, name: str, *, tail_bytes: int | None = None) -> str:
        """What the VM printed on its serial console (local hosts: the log file)."""
        if not self.host.is_local:
            raise Unsupported(
                "console logs are files on the VM's host; read them there, or read the console "
                "live (virtkit vm console-log --source stream)"
            )
        data = _read_file(Path(self.log_path(name)))
        if tail_bytes is not None:
            data = data[-tail_bytes:]
        return data.decode("utf-8", errors="replace")

    def output(
        self,
        name: str,
        *,
        source: ConsoleSource = "auto",
        tail_bytes: int | None = None,
        follow: bool = False,
        timeout: float | None = None,
        idle: float | None = None,
    ) -> ConsoleOutput:
        """What the VM printed or prints: the log file where it is on this machine (the whole
        history, then with ``follow`` what is added), else the live console through a libvirt
        stream (from now on). Either stops after ``timeout`` seconds or ``idle`` seconds
        without output if given; a stream without ``follow`` after 10 s or 2 s quiet, with
        ``follow`` when the VM stops (or the caller stops reading)."""
        validate_name(name)
        for what, value in (("timeout", timeout), ("idle", idle)):
            if value is not None and value <= 0:
                raise InvalidInput(f"--{what} must be more than 0 seconds", code="invalid_wait")
        guest = self.host.lookup(name)
        if source == "auto":
            source = "file" if self._has_local_log(guest, name) else "stream"
        if source == "file":
            return self._from_file(guest, name, tail_bytes, follow, timeout, idle)
        if not follow:
            timeout = STREAM_TIMEOUT if timeout is None else timeout
            idle = STREAM_IDLE if idle is None else idle
        return self._from_stream(guest, name, timeout, idle)

    def _has_local_log(self, guest: Guest, name: str) -> bool:
        if not self.host.is_local:
            return False
        try:
            return Path(_log_path(guest, name)).exists()
        except NotFound:
            return False

    def _from_file(
        self,
        guest: Guest,
        name: str,
        tail_bytes: int | None,
        follow: bool,
        timeout: float | None,
        idle: float | None,
    ) -> ConsoleOutput:
        if not self.host.is_local:
            raise Unsupported(
                f"the console log of VM {name!r} is a file on {self.host.uri}; read it there, "
                "or read the console live (--source stream)",
                code="no_console_log",
            )
        path = Path(_log_path(guest, name))
        data = _read_file(path)
        if tail_bytes is not None:
            data = data[-tail_bytes:]
        description = f"console log {path} (the whole history)"
        if follow:
            description += ", then what the VM prints"
        chunks = _follow_file(guest, path, data, follow, timeout, idle)
        return ConsoleOutput("file", description, chunks)

    def _from_stream(
        self, guest: Guest, name: str, timeout: float | None, idle: float | None
    ) -> ConsoleOutput:
        if not guest.is_active():
            where = "on its host" if not self.host.is_local else "here"
            raise InvalidState(
                f"VM {name!r} is not running: there is no console to read live, and its "
                f"console log is a file {where}",
                code="vm_shutoff",
            )
        stream = self.open(name)
        limits = [f"up to {timeout:g} s"] if timeout is not None else []
        limits += [f"until {idle:g} s without output"] if idle is not None else []
        description = (
            f"live console of VM {name!r} through libvirt's stream: what it prints from now on"
            + (f" ({', '.join(limits)})" if limits else " (until it stops)")
        )
        return ConsoleOutput("stream", description, _read_stream(stream, timeout, idle))


def _log_path(guest: Guest, name: str) -> str:
    for serial in guest.definition().serials:
        if serial.log is not None and serial.log.file:
            return serial.log.file
    raise NotFound(f"VM {name!r} has no serial console log", code="no_console_log")


def _read_file(path: Path, offset: int = 0) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""  # defined but never started
    except OSError as exc:
        raise PermissionDenied(
            f"cannot read the console log {path}: {exc.strerror}", code="no_console_log"
        ) from None


def _follow_file(
    guest: Guest,
    path: Path,
    first: bytes,
    follow: bool,
    timeout: float | None,
    idle: float | None,
) -> Iterator[bytes]:
    yield first
    if not follow:
        return
    offset = path.stat().st_size if path.exists() else 0
    start = last_output = last_state = time.monotonic()
    while True:
        now = time.monotonic()
        if timeout is not None and now - start >= timeout:
            return
        if idle is not None and now - last_output >= idle:
            return
        if now - last_state >= _STATE_EVERY:
            last_state = now
            if not guest.is_active():
                yield _read_file(path, offset)  # its last words
                return
        data = _read_file(path, offset)
        if data:
            offset += len(data)
            last_output = now
            yield data
        else:
            time.sleep(_POLL)


def _read_stream(
    stream: ConsoleStream, timeout: float | None, idle: float | None
) -> Iterator[bytes]:
    try:
        start = last_output = time.monotonic()
        while not stream.closed:
            now = time.monotonic()
            if timeout is not None and now - start >= timeout:
                return
            if idle is not None and now - last_output >= idle:
                return
            wait = _POLL
            if timeout is not None:
                wait = min(wait, start + timeout - now)
            data = stream.read(timeout=max(wait, 0.0))
            if data:
                last_output = time.monotonic()
                yield data
    finally:
        stream.close()
