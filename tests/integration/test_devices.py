"""Devices a user asks for are really there: VNC and SPICE answer, a CD-ROM is attached."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tests.conftest import Bed, run_cli, tiny_spec, wait_for_text, write_iso
from virtkit import Client
from virtkit.specs import parse_vm_spec
from virtkit.xml.domain import Domain

pytestmark = pytest.mark.integration


def _greeting(port: int, send: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        if send:
            sock.sendall(send)
        return sock.recv(64)


def _spice_link_request() -> bytes:
    # SpiceLinkHeader: magic "REDQ", protocol 2.2, size; then a minimal SpiceLinkMess.
    body = (0).to_bytes(4, "little") + (1).to_bytes(4, "little") + (0).to_bytes(1, "little")
    body += (0).to_bytes(4, "little") * 2 + (18).to_bytes(4, "little")
    return (
        b"REDQ"
        + (2).to_bytes(4, "little")
        + (2).to_bytes(4, "little")
        + len(body).to_bytes(4, "little")
        + body
    )


@pytest.mark.parametrize("kind", ["vnc", "spice"])
def test_graphics_listen_on_loopback_and_answer(
    bed: Bed, vm_name: str, vk: Client, kind: str
) -> None:
    vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name, graphics=kind)), start=True)
    info = vk.vms.get(vm_name)
    graphics = info.graphics[0]
    assert graphics.type == kind and graphics.listen == "127.0.0.1" and graphics.port
    if kind == "vnc":
        assert _greeting(graphics.port).startswith(b"RFB 003.")
    else:
        assert _greeting(graphics.port, _spice_link_request()).startswith(b"REDQ")
    shown = run_cli(bed, "vm", "show", vm_name).stdout
    assert f"Graphics: {kind} on 127.0.0.1:{graphics.port}" in shown


def test_cdrom_is_attached_readonly_and_first_to_boot(
    bed: Bed, vm_name: str, vk: Client, tmp_path: Path
) -> None:
    iso = write_iso(bed.daemon.shared / f"{vm_name}.iso")
    try:
        spec = tiny_spec(bed, vm_name, cdrom=str(iso), boot=["cdrom", "hd"])
        vk.vms.create(parse_vm_spec(spec), start=True)
        wait_for_text(bed, vm_name)  # direct kernel boot still wins over the boot order
        info = vk.vms.get(vm_name)
        cdrom = next(d for d in info.disks if d.device == "cdrom")
        assert cdrom.source == str(iso) and cdrom.readonly and cdrom.bus == "sata"
        assert info.boot == ["cdrom", "hd"]
        vk.vms.delete(vm_name, force=True, remove_storage=True)
        assert iso.exists()  # an attached ISO is never virtkit's to delete
    finally:
        iso.unlink()


def test_print_xml_creates_nothing(bed: Bed, vm_name: str, vk: Client) -> None:
    g = bed.guest
    result = run_cli(
        bed,
        "vm",
        "create",
        vm_name,
        "--kernel",
        g.kernel,
        "--disk",
        "1G",
        "--tag",
        "x",
        "--print-xml",
    )
    assert result.returncode == 0, result.stderr
    dom = Domain.parse(result.stdout)
    assert dom.name == vm_name and dom.tag_names == ["x"] and len(dom.disks) == 1
    assert dom.guest_agent is not None  # the guest agent's channel, unless asked not to
    bare = run_cli(bed, "vm", "create", vm_name, "--kernel", g.kernel, "--no-guest-agent",
                   "--print-xml")  # fmt: skip
    assert bare.returncode == 0 and Domain.parse(bare.stdout).guest_agent is None, bare.stderr
    assert not vk.host.exists(vm_name)
    assert not list(bed.pool_dir.glob(f"{vm_name}-*"))


def test_list_json_has_uptime_for_running_vms(bed: Bed, vm_name: str, vk: Client) -> None:
    vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name)), start=True)
    rows = {r["name"]: r for r in json.loads(run_cli(bed, "vm", "list", "--json").stdout)}
    assert rows[vm_name]["uptime"] is not None
    assert vk.vms.get(vm_name).guest_agent == "disconnected"  # a channel, no agent in the guest
    vk.vms.stop(vm_name)
    rows = {r["name"]: r for r in json.loads(run_cli(bed, "vm", "list", "--json").stdout)}
    assert rows[vm_name]["uptime"] is None and rows[vm_name]["state"] == "shutoff"
