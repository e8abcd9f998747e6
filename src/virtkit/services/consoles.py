"""Serial consoles: attach interactively, or read what a VM printed."""

from __future__ import annotations

from pathlib import Path

from virtkit.backend.console import ConsoleStream
from virtkit.backend.host import Host
from virtkit.errors import InvalidState, NotFound, PermissionDenied, Unsupported
from virtkit.specs import validate_name


class ConsoleService:
    def __init__(self, host: Host) -> None:
        self.host = host

    def open(self, name: str, *, force: bool = False) -> ConsoleStream:
        """An attached serial console of a running VM (``force`` takes it from another client)."""
        validate_name(name)
        guest = self.host.lookup(name)
        if not guest.is_active():
            raise InvalidState(
                f"VM {name!r} is not running: its console is not there", code="vm_shutoff"
            )
        if not list(guest.definition().consoles):
            raise Unsupported(f"VM {name!r} has no serial console")
        return ConsoleStream(self.host, guest, force=force)

    def log_path(self, name: str) -> str:
        validate_name(name)
        dom = self.host.lookup(name).definition()
        for serial in dom.serials:
            if serial.log is not None and serial.log.file:
                return serial.log.file
        raise NotFound(f"VM {name!r} has no serial console log", code="no_console_log")

    def read_log(self, name: str, *, tail_bytes: int | None = None) -> str:
        """What the VM printed on its serial console (local hosts: the log file)."""
        if not self.host.is_local:
            raise Unsupported("console logs are files on the VM's host; read them there")
        path = Path(self.log_path(name))
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return ""  # defined but never started
        except OSError as exc:
            raise PermissionDenied(
                f"cannot read the console log {path}: {exc.strerror}", code="no_console_log"
            ) from None
        if tail_bytes is not None:
            data = data[-tail_bytes:]
        return data.decode("utf-8", errors="replace")
