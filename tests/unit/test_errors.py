"""The error map at the libvirt seam, fed with real errors from libvirt's test driver."""

from __future__ import annotations

from pathlib import Path

import libvirt
import pytest

from virtkit.backend.connection import Connection
from virtkit.backend.errors import libvirt_errors, translate
from virtkit.backend.host import LibvirtHost
from virtkit.errors import (
    AlreadyExists,
    BackendError,
    ConnectionFailed,
    ConnectionLost,
    InvalidInput,
    InvalidState,
    NotFound,
    PermissionDenied,
    Timeout,
    VirtkitError,
)

NODE = """<node>
  <domain type='test'>
    <name>running1</name>
    <memory>131072</memory>
    <os><type>hvm</type></os>
  </domain>
</node>"""


@pytest.fixture
def conn(tmp_path: Path) -> libvirt.virConnect:
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    c = libvirt.open(f"test://{node}")
    yield c
    c.close()


def _error(fn: object) -> VirtkitError:
    with pytest.raises(VirtkitError) as info, libvirt_errors():
        fn()  # type: ignore[operator]
    assert isinstance(info.value.__cause__, libvirt.libvirtError)  # raise ... from exc
    return info.value


def test_no_domain_is_not_found(conn: libvirt.virConnect) -> None:
    err = _error(lambda: conn.lookupByName("nope"))
    assert isinstance(err, NotFound) and err.expected and err.http_status == 404


def test_bad_xml_is_invalid_input(conn: libvirt.virConnect) -> None:
    err = _error(lambda: conn.defineXML("<domain><name>x"))
    assert isinstance(err, InvalidInput) and err.expected


def test_destroying_a_stopped_domain_is_invalid_state(conn: libvirt.virConnect) -> None:
    dom = conn.lookupByName("running1")
    dom.destroy()
    err = _error(dom.destroy)
    assert isinstance(err, InvalidState) and err.code == "invalid_state"


def test_duplicate_uuid_is_already_exists(conn: libvirt.virConnect) -> None:
    dom = conn.lookupByName("running1")
    xml = dom.XMLDesc(0).replace("<name>running1</name>", "<name>other</name>")
    err = _error(lambda: conn.createXML(xml, 0))
    assert isinstance(err, AlreadyExists) and "already defined" in err.message


def _synthetic(code: int, domain: int, message: str) -> libvirt.libvirtError:
    exc = libvirt.libvirtError(message)
    exc.err = (code, domain, message, libvirt.VIR_ERR_ERROR, "", "", None, 0, 0)
    return exc


@pytest.mark.parametrize(
    ("code", "domain", "message", "cls", "expected"),
    [
        (
            "VIR_ERR_INTERNAL_ERROR",
            "VIR_FROM_RPC",
            "client socket is closed",
            ConnectionLost,
            False,
        ),
        (
            "VIR_ERR_SYSTEM_ERROR",
            "VIR_FROM_RPC",
            "Cannot recv data: Connection reset",
            ConnectionLost,
            False,
        ),
        ("VIR_ERR_NO_CONNECT", "VIR_FROM_NONE", "no connection", ConnectionLost, False),
        ("VIR_ERR_NO_STORAGE_VOL", "VIR_FROM_STORAGE", "no vol", NotFound, True),
        ("VIR_ERR_OPERATION_TIMEOUT", "VIR_FROM_QEMU", "timed out", Timeout, False),
        ("VIR_ERR_DOM_EXIST", "VIR_FROM_QEMU", "domain exists", AlreadyExists, True),
        ("VIR_ERR_OPERATION_INVALID", "VIR_FROM_QEMU", "not running", InvalidState, True),
        ("VIR_ERR_INTERNAL_ERROR", "VIR_FROM_QEMU", "qemu died", BackendError, False),
    ],
)
def test_symbolic_codes(
    code: str, domain: str, message: str, cls: type[VirtkitError], expected: bool
) -> None:
    err = translate(_synthetic(getattr(libvirt, code), getattr(libvirt, domain), message))
    assert isinstance(err, cls) and err.expected is expected and message in err.message


def test_unknown_libvirt_code_keeps_a_stable_code() -> None:
    err = translate(_synthetic(libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_QEMU, "boom"))
    assert err.code == "libvirt_internal_error" and not err.expected


def test_host_lookup_names_the_vm(conn: libvirt.virConnect, tmp_path: Path) -> None:
    node = tmp_path / "n.xml"
    node.write_text(NODE)
    host = LibvirtHost(Connection(f"test://{node}"))
    with pytest.raises(NotFound, match="no VM named 'ghost'") as info:
        host.lookup("ghost")
    assert info.value.code == "vm_not_found"


def test_permission_denied_says_who_may_connect() -> None:
    from virtkit.backend.errors import translate_open_error

    err = translate_open_error(
        _synthetic(
            libvirt.VIR_ERR_SYSTEM_ERROR,
            libvirt.VIR_FROM_RPC,
            "Failed to connect socket to '/run/libvirt/libvirt-sock': Permission denied",
        ),
        "qemu:///system",
    )
    assert isinstance(err, PermissionDenied) and "libvirt' group" in str(err)
    assert "libvirtd -d" not in str(err)


def test_unreachable_daemon_says_how_to_start_it(tmp_path: Path) -> None:
    conn = Connection(f"qemu+unix:///system?socket={tmp_path}/none")
    with pytest.raises(ConnectionFailed) as info:
        conn.get()
    assert "cannot connect to libvirt" in str(info.value) and "libvirtd -d" in str(info.value)
    assert info.value.http_status == 503
