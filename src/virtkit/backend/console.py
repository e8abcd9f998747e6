"""A guest's serial console as a non-blocking byte stream (works over remote URIs too)."""

from __future__ import annotations

import contextlib
import time

import libvirt

from virtkit.backend.guest import Guest, seam
from virtkit.backend.host import Host


class ConsoleStream:
    """Read and write a domain's console through a libvirt stream.

    ``read`` never blocks longer than its timeout; ``closed`` becomes True when the guest's side
    ends (the VM stopped) or another client took the console with ``force``.
    """

    def __init__(self, host: Host, guest: Guest, *, force: bool = False) -> None:
        self._host = host
        self._stream = host.new_stream(nonblocking=True)
        self.closed = False
        try:
            guest.open_console(self._stream, force=force)
        except Exception:
            self._abort()
            raise

    def read(self, timeout: float = 0.0, poll: float = 0.02) -> bytes:
        """Bytes available now, waiting up to ``timeout`` seconds for the first ones."""
        deadline = time.monotonic() + timeout
        chunks: list[bytes] = []
        while not self.closed:
            with seam(self._host.connection):
                try:
                    data = self._stream.recv(65536)
                except libvirt.libvirtError:
                    self.closed = True
                    break
            if data == -2:  # nothing to read now
                if chunks or time.monotonic() >= deadline:
                    break
                time.sleep(poll)
                continue
            if not data:
                self.closed = True
                break
            chunks.append(bytes(data))
        return b"".join(chunks)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.closed:
            with seam(self._host.connection):
                sent = self._stream.send(bytes(view))
            if sent == -2:
                time.sleep(0.01)
                continue
            view = view[int(sent) :]

    def _abort(self) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            self._stream.abort()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
        try:
            self._stream.finish()
        except libvirt.libvirtError:
            self._abort()

    def __enter__(self) -> ConsoleStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
