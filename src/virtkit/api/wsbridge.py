"""Pumps between a websocket and what a console is: a TCP port (VNC) or a libvirt console
stream (serial, read and written by one thread, bridged into asyncio). Each pump ends both
sides when either ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketState

if TYPE_CHECKING:
    from virtkit.backend.console import ConsoleStream

log = logging.getLogger(__name__)

_CHUNK = 65536
_SERIAL_POLL = 0.005  # seconds: bounds how late the guest's output is seen (keys go at once)


def _payload(message: Mapping[str, Any]) -> bytes | None:
    """The bytes of a websocket message, ``None`` for a disconnect."""
    if message["type"] == "websocket.disconnect":
        return None
    data = message.get("bytes")
    if data is not None:
        return bytes(data)
    return str(message.get("text") or "").encode()


async def close_quietly(ws: WebSocket, code: int = 1000, reason: str = "") -> None:
    if ws.application_state == WebSocketState.DISCONNECTED:
        return
    with contextlib.suppress(Exception):  # the peer may be gone already
        await ws.close(code, reason[:120])


async def _first_done(*coroutines: Coroutine[Any, Any, None]) -> None:
    tasks = [asyncio.create_task(c) for c in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.debug("console pump ended: %r", task.exception())
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def pump_tcp(
    ws: WebSocket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Websocket <-> TCP, binary frames out, until either side closes."""

    async def to_tcp() -> None:
        while (data := _payload(await ws.receive())) is not None:
            writer.write(data)
            await writer.drain()

    async def from_tcp() -> None:
        while data := await reader.read(_CHUNK):
            await ws.send_bytes(data)

    try:
        await _first_done(to_tcp(), from_tcp())
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        await close_quietly(ws)


class _SerialThread:
    """Owns the libvirt stream: writes what the browser typed, reads what the guest prints."""

    def __init__(self, stream: ConsoleStream, loop: asyncio.AbstractEventLoop) -> None:
        self.stream = stream
        self.loop = loop
        self.output: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.input: queue.Queue[bytes] = queue.Queue()
        self.stop = threading.Event()

    def _deliver(self, data: bytes | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closing: nobody listens
            self.loop.call_soon_threadsafe(self.output.put_nowait, data)

    def run(self) -> None:
        try:
            while not self.stop.is_set() and not self.stream.closed:
                data = self.stream.read(timeout=0)
                if data:
                    self._deliver(data)
                    continue
                # Nothing from the guest: wait for a key, which is written at once; the wait
                # bounds how late the guest's next output is seen.
                try:
                    self.stream.write(self.input.get(timeout=_SERIAL_POLL))
                except queue.Empty:
                    continue
                while True:
                    try:
                        self.stream.write(self.input.get_nowait())
                    except queue.Empty:
                        break
        except Exception:
            log.exception("the serial console stream failed")
        finally:
            with contextlib.suppress(Exception):
                self.stream.close()
            self._deliver(None)


async def pump_serial(ws: WebSocket, stream: ConsoleStream) -> None:
    """Websocket <-> a console stream: text or binary in, binary out, until either closes.
    When the guest's side ends (the VM stopped, or another client took the console with
    ``force``), the websocket is closed with code 1000 and a reason."""
    bridge = _SerialThread(stream, asyncio.get_running_loop())
    thread = threading.Thread(target=bridge.run, name="virtkit-ws-serial", daemon=True)
    thread.start()
    ended_by_guest = False

    async def to_guest() -> None:
        while (data := _payload(await ws.receive())) is not None:
            bridge.input.put(data)

    async def from_guest() -> None:
        nonlocal ended_by_guest
        while (data := await bridge.output.get()) is not None:
            await ws.send_bytes(data)
        ended_by_guest = True

    try:
        await _first_done(to_guest(), from_guest())
    finally:
        bridge.stop.set()
        reason = "the console closed: the VM stopped, or another client took it over"
        await close_quietly(ws, 1000, reason if ended_by_guest else "")
