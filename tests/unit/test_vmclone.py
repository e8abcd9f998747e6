"""A clone's definition rewrite: plain functions on a typed Domain, no libvirt."""

from __future__ import annotations

from pathlib import Path

from virtkit.services.domainbuilder import BuildPlan, ResolvedDisk, build_domain, ssh_forward_port
from virtkit.services.vmclone import (
    disown_disks,
    point_at_copy,
    rename_serial_logs,
    renew_identity,
    rewrite_for_clone,
)
from virtkit.specs import parse_vm_spec
from virtkit.xml.domain import Domain

POOL = "/var/lib/libvirt/images"
MACS = ["52:54:00:00:00:01", "52:54:00:00:00:02"]


def _original(*, seed: bool = True, keys: bool = True) -> Domain:
    spec = parse_vm_spec(
        {
            "name": "web1",
            "kernel": "/k",
            "cdrom": "/iso/tools.iso",
            "nics": [{"network": "default"}, {"user": True, "ssh_forward": 2222}],
        }
    )
    disks = [
        ResolvedDisk(f"{POOL}/web1-disk0.qcow2", "qcow2", "virtio", owned=True),
        ResolvedDisk("/iso/tools.iso", "raw", "sata", device="cdrom", readonly=True),
    ]
    if seed:
        disks.append(
            ResolvedDisk(f"{POOL}/web1-seed.iso", "raw", "scsi", device="cdrom", owned=True)
        )
    plan = BuildPlan(
        domain_type="qemu",
        machine="q35",
        disks=disks,
        macs=MACS,
        serial_log="/logs/web1-serial0.log",
        host_keys=["ssh-ed25519 AAAA web1"] if keys else [],
    )
    dom = build_domain(spec, plan)
    dom.uuid = "8f3c1a52-0000-4000-8000-000000000001"
    return Domain.parse(dom.to_xml())  # as libvirt hands it back


def test_identity_new_name_no_uuid_new_unique_macs() -> None:
    dom = _original()
    taken = set(MACS) | {"52:54:00:00:00:03"}
    first = renew_identity(dom, "web2", taken, free_port=lambda: 40022)
    assert (dom.name, dom.uuid) == ("web2", None)
    [nic] = dom.interfaces
    assert nic.mac == first and nic.mac not in MACS and nic.mac in taken
    assert ssh_forward_port(dom) == 40022
    user_arg = next(a.value for a in dom.qemu_args if (a.value or "").startswith("virtio-net"))
    assert user_arg is not None and MACS[1] not in user_arg and len(taken) == 5


def test_identity_first_mac_of_a_user_nic_only_vm() -> None:
    dom = _original()
    dom.interfaces.remove(next(iter(dom.interfaces)))
    first = renew_identity(dom, "web2", set(MACS), free_port=lambda: 40022)
    assert (
        first is not None
        and first not in MACS
        and f"mac={first}" in " ".join(a.value or "" for a in dom.qemu_args)
    )


def test_serial_logs_follow_the_new_name() -> None:
    dom = _original()
    rename_serial_logs(dom, None)
    assert [s.log.file for s in dom.serials if s.log] == ["/logs/web1-serial0.log"]
    rename_serial_logs(dom, Path("/logs/web2-serial0.log"))
    assert [s.log.file for s in dom.serials if s.log] == ["/logs/web2-serial0.log"]


def test_the_clone_owns_nothing_of_the_original_and_gets_new_seeds() -> None:
    dom = _original()
    seeds = disown_disks(dom)
    assert dom.owned_disk_paths == []
    assert [s.source for s in seeds] == [f"{POOL}/web1-seed.iso"]  # not the tools CD-ROM
    disk = next(d for d in dom.disks if d.device == "disk")
    point_at_copy(dom, disk, f"{POOL}/web2-disk0.qcow2", "qcow2")
    assert (disk.type, disk.source, disk.driver_type) == (
        "file",
        f"{POOL}/web2-disk0.qcow2",
        "qcow2",
    )
    assert dom.owned_disk_paths == [f"{POOL}/web2-disk0.qcow2"]


def test_rewrite_renews_host_keys_only_for_a_seeded_vm_with_pinned_keys() -> None:
    log = Path("/logs/web2-serial0.log")
    full = rewrite_for_clone(_original(), "web2", set(MACS), log, free_port=lambda: 1)
    assert full.renew_keys and len(full.seeds) == 1 and full.first_mac not in MACS
    assert not rewrite_for_clone(_original(keys=False), "web2", set(MACS), log).renew_keys
    no_seed = rewrite_for_clone(_original(seed=False), "web2", set(MACS), log)
    assert not no_seed.renew_keys and no_seed.seeds == []
