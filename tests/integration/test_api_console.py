"""Consoles in the browser against a running ``virtkit serve`` and a real tiny guest: tickets,
the VNC websocket (RFB through the proxy, VNC authentication with the one-time password), the
serial websocket (a shell answers; a second client is refused, ``force`` takes over), SPICE."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.conftest import CACHE, PREFIX, Bed, tiny_spec, wait_for_text
from tests.integration.apiserver import Server, running, wait_task
from tests.integration.vncauth import des_encrypt_block, vnc_response
from tests.testbed.sshd import TestSshd

pytestmark = pytest.mark.integration

NAME = PREFIX + "con-"


@pytest.fixture(scope="module")
def api(bed: Bed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    from virtkit.services import storage

    with bed.client() as vk:
        storage.ensure_pool(vk.host, bed.settings.storage_pool, bed.pool_dir)
    with running(bed, tmp_path_factory.mktemp("vkcon-state")) as server:
        for user, role in (("ada", "admin"), ("otto", "operator"), ("vera", "viewer")):
            server.add_user(user, role)
        yield server


@pytest.fixture
def operator(api: Server) -> Iterator[httpx.Client]:
    with api.client("otto") as c:
        yield c


def _remove(bed: Bed, name: str) -> None:
    with bed.client() as vk:
        if vk.host.exists(name):
            vk.vms.delete(name, force=True, remove_storage=True)


def _booted(api: Server, bed: Bed, name: str, graphics: str) -> None:
    # an admin creates it: the tiny guest boots a kernel named by host path (`host.path`)
    with api.client("ada") as c:
        r = c.post(
            "/api/v1/vms", params={"start": True}, json=tiny_spec(bed, name, graphics=graphics)
        )
        assert r.status_code == 202, r.text
        task = wait_task(c, r.json()["id"])
        assert task["state"] == "succeeded", task
    wait_for_text(bed, name)


@pytest.fixture(scope="module")
def vm(api: Server, bed: Bed) -> Iterator[str]:
    """One booted tiny guest with VNC graphics and a serial console, for every test here."""
    name = NAME + secrets.token_hex(3)
    try:
        _booted(api, bed, name, "vnc")
        yield name
    finally:
        _remove(bed, name)


def ticket(client: httpx.Client, name: str, kind: str) -> dict[str, str]:
    r = client.post(f"/api/v1/vms/{name}/console/ticket", json={"kind": kind})
    assert r.status_code == 200, r.text
    return dict(r.json())


def ws_url(api: Server, path: str) -> str:
    return f"ws://127.0.0.1:{api.port}/api/v1/{path}"


def ws(api: Server, path: str) -> ClientConnection:
    return connect(ws_url(api, path), subprotocols=["binary"], proxy=None, open_timeout=20)


class Frames:
    """Bytes from a websocket, read by count or until a text appears."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.buffer = b""

    def read(self, count: int, timeout: float = 20) -> bytes:
        while len(self.buffer) < count:
            message = self.conn.recv(timeout=timeout)
            self.buffer += message if isinstance(message, bytes) else message.encode()
        out, self.buffer = self.buffer[:count], self.buffer[count:]
        return out

    def until(self, text: bytes, timeout: float = 30) -> bytes:
        deadline = time.monotonic() + timeout
        while text not in self.buffer:
            message = self.conn.recv(timeout=max(0.1, deadline - time.monotonic()))
            self.buffer += message if isinstance(message, bytes) else message.encode()
        return self.buffer


def test_des_matches_the_textbook_vector() -> None:
    key, plain = bytes.fromhex("133457799BBCDFF1"), bytes.fromhex("0123456789ABCDEF")
    assert des_encrypt_block(key, plain).hex() == "85e813540f0ab405"


def test_vnc_through_the_proxy_with_the_one_time_password(
    api: Server, vm: str, operator: httpx.Client
) -> None:
    got = ticket(operator, vm, "vnc")
    assert got["path"] == f"vms/{vm}/console/vnc?ticket={got['ticket']}"
    assert got["password"] and got["expires"]
    vnc_session(api, got)
    with pytest.raises(InvalidStatus) as reused:
        ws(api, got["path"])
    assert reused.value.response.status_code == 403


def test_vnc_of_a_host_reached_over_ssh(
    api: Server, bed: Bed, vm: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """``qemu+ssh://`` for real: a second service reaches the same daemon through an sshd of
    the test's own (libvirt's SSH transport), and its VNC websocket goes through ``ssh -W`` to
    the display, which listens on its host's 127.0.0.1 as by default; the ssh relay ends with
    the websocket."""
    socket_path = parse_qs(urlparse(bed.settings.uri).query)["socket"][0]
    work = tmp_path_factory.mktemp("vkcon-ssh")
    with TestSshd(CACHE, work / "sshd") as sshd:
        far = Server(bed, work / "state", uri=sshd.uri(socket_path))
        far.start()
        try:
            far.add_user("otto", "operator")
            with far.client("otto") as c:
                assert c.get(f"/api/v1/vms/{vm}").json()["state"] == "running"
                got = ticket(c, vm, "vnc")
            assert far.proc is not None
            children = Path(f"/proc/{far.proc.pid}/task/{far.proc.pid}/children")

            def relayed() -> None:  # the display goes through ssh -W while the session is open
                assert len(_ssh_children(children)) == 1

            vnc_session(far, got, relayed)
            deadline = time.monotonic() + 10
            while _ssh_children(children) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not _ssh_children(children), "the ssh relay outlived its websocket"
        finally:
            far.stop()


def _ssh_children(children: Path) -> list[str]:
    """The ``ssh -W`` relays among the service's children (its libvirt connection's own ssh,
    without -W, stays)."""
    found = []
    for pid in children.read_text().split():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"ssh") and b"-W" in argv:
            found.append(pid)
    return found


def vnc_session(
    api: Server, got: dict[str, str], during: Callable[[], None] = lambda: None
) -> None:
    """The RFB handshake through the service's websocket, with the ticket's one-time password;
    ``during`` runs while the session is open."""
    with ws(api, got["path"]) as conn:
        assert conn.subprotocol == "binary"
        rfb = Frames(conn)
        version = rfb.read(12)
        assert version.startswith(b"RFB 003.00"), version
        conn.send(b"RFB 003.008\n")
        count = rfb.read(1)[0]
        types = rfb.read(count)
        assert 2 in types, types  # VNC authentication
        conn.send(b"\x02")
        challenge = rfb.read(16)
        conn.send(vnc_response(got["password"], challenge))
        assert rfb.read(4) == b"\0\0\0\0", "VNC authentication failed"
        conn.send(b"\x01")  # ClientInit: shared
        width, height = int.from_bytes(rfb.read(2)), int.from_bytes(rfb.read(2))
        assert width > 0 and height > 0
        during()


def test_serial_answers_and_a_second_client_is_refused_until_force(
    api: Server, vm: str, operator: httpx.Client
) -> None:
    with ws(api, ticket(operator, vm, "serial")["path"]) as first:
        out = Frames(first)
        first.send("echo vk-$((6*7))\r")  # a text frame
        assert b"vk-42" in out.until(b"vk-42")

        second_path = ticket(operator, vm, "serial")["path"]
        with ws(api, second_path) as second, pytest.raises(ConnectionClosed) as refused:
            second.recv(timeout=20)
        assert refused.value.rcvd is not None and refused.value.rcvd.code == 4409
        assert "force=true" in refused.value.rcvd.reason

        path = ticket(operator, vm, "serial")["path"] + "&force=true"
        with ws(api, path) as third:
            with pytest.raises(ConnectionClosed):  # the first client is pushed off
                while True:
                    first.recv(timeout=20)
            third.send(b"echo vk-$((6*8))\r")  # a binary frame
            assert b"vk-48" in Frames(third).until(b"vk-48")

    with api.client("ada") as admin:
        entries = admin.get("/api/v1/audit", params={"action": "WS console/serial"}).json()
    mine = [e for e in entries if e["target"] == vm and e["user"] == "otto"]
    assert sorted(e["result"] for e in mine) == ["console_busy", "opened", "opened"], entries


def test_serial_sessions_leave_nothing_open_in_the_service(
    api: Server, vm: str, operator: httpx.Client
) -> None:
    """Each serial websocket has its stream, a wake-up pipe and libvirt event callbacks; a
    closed session (by the browser) takes them all down: the service's open files come back to
    where they were, and the console is free again (no force needed)."""
    assert api.proc is not None
    fds = Path(f"/proc/{api.proc.pid}/fd")

    def session(marker: int) -> None:
        with ws(api, ticket(operator, vm, "serial")["path"]) as conn:
            conn.send(f"echo vk-$(({marker}+1))\r")
            assert f"vk-{marker + 1}".encode() in Frames(conn).until(f"vk-{marker + 1}".encode())

    session(100)  # the first one may open what every later one reuses
    time.sleep(0.5)
    before = len(list(fds.iterdir()))
    for marker in (200, 300, 400):
        session(marker)
    deadline = time.monotonic() + 10
    while len(list(fds.iterdir())) > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(list(fds.iterdir())) <= before


def test_websockets_without_a_good_ticket_are_refused(
    api: Server, vm: str, operator: httpx.Client
) -> None:
    for path in (
        f"vms/{vm}/console/serial",
        f"vms/{vm}/console/serial?ticket=nope",
        f"vms/{vm}/console/vnc?ticket=" + ticket(operator, vm, "serial")["ticket"],  # wrong kind
    ):
        with pytest.raises(InvalidStatus) as refused:
            ws(api, path)
        assert refused.value.response.status_code == 403, path


def test_a_viewer_gets_no_ticket_and_bad_kinds_are_refused(
    api: Server, vm: str, operator: httpx.Client
) -> None:
    with api.client("vera") as viewer:
        r = viewer.post(f"/api/v1/vms/{vm}/console/ticket", json={"kind": "serial"})
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
        assert viewer.get(f"/api/v1/vms/{vm}/console/spice.vv").status_code == 403
    bad = operator.post(f"/api/v1/vms/{vm}/console/ticket", json={"kind": "rdp"})
    assert bad.status_code == 422
    missing = operator.post(f"/api/v1/vms/{NAME}nope/console/ticket", json={"kind": "serial"})
    assert missing.status_code == 404


def test_spice_file(api: Server, bed: Bed, vm: str, operator: httpx.Client) -> None:
    r = operator.get(f"/api/v1/vms/{vm}/console/spice.vv")
    assert r.status_code == 409 and r.json()["code"] == "no_spice", r.text
    name = NAME + secrets.token_hex(3)
    try:
        _booted(api, bed, name, "spice")
        no_vnc = operator.post(f"/api/v1/vms/{name}/console/ticket", json={"kind": "vnc"})
        assert no_vnc.status_code == 409 and no_vnc.json()["code"] == "no_vnc"
        r = operator.get(f"/api/v1/vms/{name}/console/spice.vv")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/x-virt-viewer")
        lines = dict(line.split("=", 1) for line in r.text.splitlines()[1:])
        assert r.text.startswith("[virt-viewer]\n") and lines["type"] == "spice"
        assert int(lines["port"]) > 0 and len(lines["password"]) >= 16
        assert lines["delete-this-file"] == "1" and name in lines["title"]
    finally:
        _remove(bed, name)
