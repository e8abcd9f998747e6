"""Which console output ``vm console-log`` shows: the log file here, else the live stream."""

from __future__ import annotations

from pathlib import Path

import pytest

from virtkit.errors import InvalidInput, InvalidState, Unsupported
from virtkit.services.consoles import ConsoleService
from virtkit.xml.domain import Domain


class _Guest:
    def __init__(self, log: Path, active: bool) -> None:
        self._xml = (
            "<domain><name>web1</name><devices><serial type='pty'>"
            f"<log file='{log}'/><target port='0'/></serial></devices></domain>"
        )
        self.active = active

    def definition(self, inactive: bool = False) -> Domain:
        return Domain.parse(self._xml)

    def is_active(self) -> bool:
        return self.active


class _Host:
    def __init__(self, guest: _Guest, local: bool) -> None:
        self.guest = guest
        self.is_local = local
        self.uri = "qemu:///system" if local else "qemu+ssh://far/system"

    def lookup(self, name: str) -> _Guest:
        return self.guest


def _service(tmp_path: Path, *, local: bool, active: bool, log: bytes | None) -> ConsoleService:
    path = tmp_path / "web1-serial0.log"
    if log is not None:
        path.write_bytes(log)
    return ConsoleService(_Host(_Guest(path, active), local))  # type: ignore[arg-type]


def test_local_log_file_is_the_whole_history(tmp_path: Path) -> None:
    consoles = _service(tmp_path, local=True, active=False, log=b"boot\nVIRTKIT-TINY-BOOTED\n")
    output = consoles.output("web1")
    assert output.source == "file" and "(the whole history)" in output.description
    assert b"".join(output.chunks) == b"boot\nVIRTKIT-TINY-BOOTED\n"
    tail = consoles.output("web1", tail_bytes=7)
    assert b"".join(tail.chunks) == b"BOOTED\n"
    assert consoles.read_log("web1") == "boot\nVIRTKIT-TINY-BOOTED\n"


def test_follow_a_local_file_stops_when_idle(tmp_path: Path) -> None:
    consoles = _service(tmp_path, local=True, active=True, log=b"first\n")
    output = consoles.output("web1", follow=True, idle=0.3)
    assert "then what the VM prints" in output.description
    assert b"".join(output.chunks) == b"first\n"


def test_remote_hosts_read_the_live_stream(tmp_path: Path) -> None:
    consoles = _service(tmp_path, local=False, active=False, log=None)
    with pytest.raises(InvalidState) as refused:
        consoles.output("web1")  # auto: the stream, which needs a running VM
    assert refused.value.code == "vm_shutoff"
    assert "no console to read live" in refused.value.message
    with pytest.raises(Unsupported, match="is a file on qemu\\+ssh://far/system"):
        consoles.output("web1", source="file")
    with pytest.raises(Unsupported, match="--source stream"):
        consoles.read_log("web1")


def test_no_local_file_yet_means_the_stream(tmp_path: Path) -> None:
    consoles = _service(tmp_path, local=True, active=False, log=None)
    with pytest.raises(InvalidState, match="no console to read live"):
        consoles.output("web1")
    with pytest.raises(InvalidInput) as bad:
        consoles.output("web1", timeout=0)
    assert bad.value.code == "invalid_wait"
