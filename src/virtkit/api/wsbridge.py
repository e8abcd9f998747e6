"""Pumps between a websocket and what a console is: a TCP port (VNC) or a libvirt console
stream (serial, driven by libvirt's event loop thread, bridged into asyncio). Each pump ends
both sides when either ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketState

if TYPE_CHECKING:
    from virtkit.backend.console import ConsoleStream

log = logging.getLogger(__name__)

_CHUNK = 65536


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


async def pump_command(ws: WebSocket, argv: list[str], what: str) -> None:
    """Websocket <-> a command's stdin and stdout (``ssh -W`` to a remote display), until either
    side ends. The command is this service's own child and ends with the websocket; if it ends
    first without a byte (ssh refused, the port is closed), the websocket is closed with 1011
    and ssh's own words."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        await close_quietly(ws, 1011, f"cannot run {argv[0]}: {exc.strerror or exc}")
        return
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    first = await proc.stdout.read(_CHUNK)
    if not first:
        err = (await proc.stderr.read(4096)).decode(errors="replace").strip().splitlines()
        await proc.wait()
        await close_quietly(ws, 1011, f"cannot reach {what}: {err[-1] if err else 'no answer'}")
        return
    try:
        await ws.send_bytes(first)
        await pump_tcp(ws, proc.stdout, proc.stdin)
    finally:
        if proc.returncode is None:
            proc.terminate()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 5)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def pump_serial(ws: WebSocket, stream: ConsoleStream) -> None:
    """Websocket <-> a console stream: text or binary in, binary out, until either closes.
    When the guest's side ends (the VM stopped, or another client took the console with
    ``force``), the websocket is closed with code 1000 and a reason."""
    loop = asyncio.get_running_loop()
    output: asyncio.Queue[bytes | None] = asyncio.Queue()

    def deliver(data: bytes | None) -> None:  # libvirt's event loop thread
        with contextlib.suppress(RuntimeError):  # the loop is closing: nobody listens
            loop.call_soon_threadsafe(output.put_nowait, data)

    # Event-driven both ways (libvirt's event loop reads the moment the guest prints, and
    # writes a key the moment it comes): nothing polls, so an echo costs no poll interval.
    pump = stream.pump(deliver)
    ended_by_guest = False

    async def to_guest() -> None:
        while (data := _payload(await ws.receive())) is not None:
            pump.send(data)

    async def from_guest() -> None:
        nonlocal ended_by_guest
        while (data := await output.get()) is not None:
            await ws.send_bytes(data)
        ended_by_guest = True

    try:
        await _first_done(to_guest(), from_guest())
    finally:
        pump.close()
        reason = "the console closed: the VM stopped, or another client took it over"
        await close_quietly(ws, 1000, reason if ended_by_guest else "")
