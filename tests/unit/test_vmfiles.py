"""The one owner of a VM's derived file names and of its storage pool."""

from __future__ import annotations

from pathlib import Path

from virtkit.services.vmfiles import VMFiles, disk_volume, free_disk_volume, is_seed, seed_volume


def test_names_derived_from_the_vm_name() -> None:
    assert disk_volume("web1", 0) == "web1-disk0.qcow2"
    assert disk_volume("web1", 12) == "web1-disk12.qcow2"
    assert seed_volume("web1") == "web1-seed.iso"
    assert is_seed("/pool/web1-seed.iso") and not is_seed("/pool/web1-disk0.qcow2")
    assert not is_seed(None)


def test_free_disk_volume_takes_the_first_gap() -> None:
    assert free_disk_volume("a", set()) == "a-disk0.qcow2"
    assert free_disk_volume("a", {"a-disk0.qcow2", "a-disk2.qcow2"}) == "a-disk1.qcow2"
    assert free_disk_volume("a", {"a-disk0.qcow2", "b-disk1.qcow2"}) == "a-disk1.qcow2"


def test_serial_log_lives_in_the_console_log_dir() -> None:
    files = VMFiles("vms", Path("/srv/vms"), Path("/logs"))
    assert files.serial_log("web1") == Path("/logs/web1-serial0.log")
    assert VMFiles(console_log_dir=None).serial_log("web1") is None
    assert files.disk_volume("web1", 1) == "web1-disk1.qcow2"  # the same names through the class
    assert (files.pool, VMFiles().pool, VMFiles().pool_path) == (
        "vms",
        "default",
        Path("/var/lib/libvirt/images"),
    )
