"""A guest's serial console as a non-blocking byte stream (works over remote URIs too)."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

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

    def pump(self, on_output: Callable[[bytes | None], None]) -> ConsolePump:
        """Drive this console from libvirt's event loop instead of polling it (see
        :class:`ConsolePump`); use the pump's ``send`` and ``close`` from then on."""
        return ConsolePump(self, on_output)

    def __enter__(self) -> ConsoleStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


log = logging.getLogger(__name__)

_STREAM_EVENTS = (
    libvirt.VIR_STREAM_EVENT_READABLE
    | libvirt.VIR_STREAM_EVENT_ERROR
    | libvirt.VIR_STREAM_EVENT_HANGUP
)


class ConsolePump:
    """A console driven by libvirt's event loop thread, as ``virsh console`` drives its own:
    the guest's output is read the moment the stream turns readable and handed to
    ``on_output`` (in that thread; ``None`` once, when the console ends), and keys given to
    :meth:`send` (from any thread) are written by that same thread the moment they arrive,
    through a pipe the loop watches. One thread touches the stream, nothing polls, and no key
    waits for a read.
    """

    def __init__(self, console: ConsoleStream, on_output: Callable[[bytes | None], None]) -> None:
        self._console = console
        self._stream = console._stream
        self._on_output = on_output
        self._pending = bytearray()
        self._lock = threading.Lock()
        self._ended = False
        self._closing = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._watch = -1
        try:
            self._watch = libvirt.virEventAddHandle(
                self._wake_r, libvirt.VIR_EVENT_HANDLE_READABLE, self._on_wake, None
            )
            with seam(console._host.connection):
                self._stream.eventAddCallback(_STREAM_EVENTS, self._on_stream, None)
        except Exception:
            if self._watch >= 0:
                libvirt.virEventRemoveHandle(self._watch)
            os.close(self._wake_r)
            os.close(self._wake_w)
            raise

    # -- any thread --------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """Queue keys for the guest; written at once by the loop thread."""
        with self._lock:
            if self._closing:
                return
            self._pending += data
            with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending anyway
                os.write(self._wake_w, b"\0")

    def close(self) -> None:
        """End the console; the loop thread takes the stream and the pipe down."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        libvirt.virEventAddTimeout(0, self._teardown, None)

    # -- libvirt's event loop thread ---------------------------------------------------------
    def _on_wake(self, _watch: int, fd: int, _events: int, _opaque: Any) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(fd, 4096):
                pass
        self._flush()

    def _flush(self) -> None:
        with self._lock:
            data = bytes(self._pending)
            self._pending.clear()
        while data and not self._ended:
            try:
                sent = self._stream.send(data)
            except libvirt.libvirtError:
                self._end()
                return
            if sent == -2:  # the stream is full: keep the rest for when it is writable
                with self._lock:
                    self._pending[:0] = data
                self._listen(writable=True)
                return
            data = data[int(sent) :]

    def _listen(self, *, writable: bool) -> None:
        events = _STREAM_EVENTS | (libvirt.VIR_STREAM_EVENT_WRITABLE if writable else 0)
        with contextlib.suppress(libvirt.libvirtError):
            self._stream.eventUpdateCallback(events)

    def _on_stream(self, _stream: Any, events: int, _opaque: Any) -> None:
        if events & libvirt.VIR_STREAM_EVENT_WRITABLE:
            self._listen(writable=False)
            self._flush()
        if events & libvirt.VIR_STREAM_EVENT_READABLE:
            chunks = []
            while not self._ended:
                try:
                    data = self._stream.recv(65536)
                except libvirt.libvirtError:
                    self._end()
                    break
                if data == -2:
                    break
                if not data:  # the guest's side ended
                    self._end()
                    break
                chunks.append(bytes(data))
            if chunks:
                self._on_output(b"".join(chunks))
        if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            self._end()

    def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        self._console.closed = True
        self._on_output(None)

    def _teardown(self, timer: int, _opaque: Any) -> None:
        libvirt.virEventRemoveTimeout(timer)
        with contextlib.suppress(libvirt.libvirtError):
            self._stream.eventRemoveCallback()
        libvirt.virEventRemoveHandle(self._watch)
        os.close(self._wake_r)
        os.close(self._wake_w)
        try:
            self._console.close()
        except Exception:
            log.exception("closing the console stream failed")
        self._end()
