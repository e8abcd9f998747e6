"""Remote displays over SSH: the ``ssh -W`` command a ``qemu+ssh://`` URI gives, and the pump
between a websocket and a command's stdin/stdout. The pump runs real child processes (a small
relay to a real TCP server on loopback stands in for ssh: the pump only sees stdin and stdout);
the same route through a real sshd is issue 16's remote-host testbed."""

from __future__ import annotations

import os
import socket
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, WebSocket
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from virtkit.api.wsbridge import pump_command
from virtkit.backend.sshtunnel import tunnel_command


def test_the_ssh_command_follows_the_uri() -> None:
    uri = "qemu+ssh://root@far.example:2222/system?keyfile=/k/id&no_verify=1"
    assert tunnel_command(uri, "127.0.0.1", 5901) == [
        "ssh", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-p", "2222",
        "-l", "root", "-i", "/k/id", "-o", "IdentitiesOnly=yes",
        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
        "-W", "127.0.0.1:5901", "--", "far.example",
    ]  # fmt: skip
    assert tunnel_command("qemu+ssh://far/system", "::1", 5900)[-3:] == [
        "[::1]:5900",
        "--",
        "far",
    ]
    assert tunnel_command("qemu+tcp://far/system", "127.0.0.1", 5900) is None
    assert tunnel_command("qemu:///system", "127.0.0.1", 5900) is None


RELAY = textwrap.dedent(
    """
    import os, socket, sys, threading
    open(sys.argv[2], "w").write(str(os.getpid()))
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    def up():  # stdin's end does not end it (nor does ssh -W): only the pump stops it
        while data := os.read(0, 65536):
            s.sendall(data)
    threading.Thread(target=up, daemon=True).start()
    while data := s.recv(65536):
        os.write(1, data)
    """
)


@pytest.fixture
def display() -> Iterator[int]:
    """A TCP server on loopback that speaks first, as VNC does, then echoes."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"RFB 003.008\n")
                while data := conn.recv(65536):
                    conn.sendall(data.upper())

    threading.Thread(target=serve, daemon=True).start()
    yield port
    server.close()


def _app(argv: list[str]) -> FastAPI:
    app = FastAPI()

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await pump_command(websocket, argv, "the test display")

    return app


def test_the_pump_relays_both_ways_and_ends_its_child(display: int, tmp_path: Path) -> None:
    relay, pidfile = tmp_path / "vkssh-relay.py", tmp_path / "vkssh-relay.pid"
    relay.write_text(RELAY)
    client = TestClient(_app([sys.executable, str(relay), str(display), str(pidfile)]))
    with client.websocket_connect("/ws") as ws:
        assert ws.receive_bytes() == b"RFB 003.008\n"
        ws.send_bytes(b"hello")
        assert ws.receive_bytes() == b"HELLO"
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break  # the relay (the pump's own child) is gone with the websocket
        time.sleep(0.05)
    else:
        raise AssertionError(f"the relay {pid} still runs after the websocket closed")


def test_a_command_that_fails_closes_the_websocket_with_its_words() -> None:
    say = "import sys; sys.stderr.write('ssh: connect to host far port 22: Connection refused\\n')"
    client = TestClient(_app([sys.executable, "-c", say]))
    with client.websocket_connect("/ws") as ws, pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_bytes()
    assert closed.value.code == 1011
    assert "the test display" in closed.value.reason and "Connection refused" in closed.value.reason
    missing = TestClient(_app(["/nonexistent/vkssh-ssh"]))
    with missing.websocket_connect("/ws") as ws, pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_bytes()
    assert closed.value.code == 1011 and "cannot run" in closed.value.reason
