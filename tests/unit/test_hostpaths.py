"""Who may name files on the host by path: admins anything; others only files inside an active
filesystem pool of a local host, resolved so that ``..`` and symlinks cannot lead out."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from virtkit.errors import PermissionDenied
from virtkit.services.hostpaths import (
    DiskUse,
    NamedImage,
    PoolTarget,
    check_host_paths,
    vm_spec_paths,
)
from virtkit.specs.vm import VMSpec


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "disk.qcow2").write_bytes(b"QFI\xfb")
    (pool / "sub").mkdir()
    (pool / "sub" / "boot.iso").write_bytes(b"")
    (tmp_path / "secret").write_text("root:x:\n")
    return pool


def pools_of(*targets: PoolTarget) -> Callable[[], list[PoolTarget]]:
    return lambda: list(targets)


def check(path: str, pool: Path, *, role: str = "operator", local: bool = True) -> None:
    targets = pools_of(PoolTarget("vms", "dir", True, str(pool)))
    check_host_paths([("disks[0].path", path)], role=role, local=local, pools=targets, uses=list)


def refused(path: str, pool: Path, **kwargs: object) -> PermissionDenied:
    with pytest.raises(PermissionDenied) as caught:
        check(path, pool, **kwargs)  # type: ignore[arg-type]
    assert caught.value.code == "host_path_forbidden" and caught.value.http_status == 403
    return caught.value


def test_files_inside_an_active_pool_are_allowed(pool: Path) -> None:
    check(str(pool / "disk.qcow2"), pool)
    check(str(pool / "sub" / "boot.iso"), pool)
    check(str(pool / "sub" / ".." / "disk.qcow2"), pool)  # resolved, still inside
    check(str(pool / "not-yet.qcow2"), pool)  # the service says it does not exist


def test_paths_outside_every_pool_are_refused_naming_the_field_and_path(pool: Path) -> None:
    err = refused("/etc/shadow", pool)
    assert "disks[0].path" in err.message and "'/etc/shadow'" in err.message
    assert "'host.path'" in err.message and "'operator'" in err.message
    refused(str(pool), pool)  # the pool's directory itself is no file in it
    refused(str(pool.parent / "secret"), pool)


def test_dot_dot_and_symlinks_cannot_lead_out(pool: Path) -> None:
    refused(str(pool / ".." / "secret"), pool)
    refused(str(pool / "sub" / ".." / ".." / "secret"), pool)
    (pool / "link.img").symlink_to(pool.parent / "secret")
    refused(str(pool / "link.img"), pool)
    (pool / "etc").symlink_to("/etc")
    refused(str(pool / "etc" / "shadow"), pool)


def test_a_pool_reached_through_a_symlink_counts_as_its_target(pool: Path) -> None:
    alias = pool.parent / "alias"
    alias.symlink_to(pool)
    check(str(pool / "disk.qcow2"), alias)
    check(str(alias / "disk.qcow2"), pool)


def test_relative_and_unresolvable_paths_are_refused(pool: Path) -> None:
    refused("disk.qcow2", pool)
    refused("../pool/disk.qcow2", pool)
    refused(str(pool / "disk\0.qcow2"), pool)


def test_only_active_filesystem_pools_count(pool: Path) -> None:
    path = [("kernel", str(pool / "disk.qcow2"))]
    for target in (
        PoolTarget("off", "dir", False, str(pool)),
        PoolTarget("lvm", "logical", True, str(pool)),
        PoolTarget("disk", "disk", True, str(pool)),
        PoolTarget("rbd", "rbd", True, None),
        PoolTarget("rel", "dir", True, "pool"),
    ):
        with pytest.raises(PermissionDenied):
            check_host_paths(path, role="operator", local=True, pools=pools_of(target), uses=list)
    for kind in ("dir", "fs", "netfs"):
        target = PoolTarget("ok", kind, True, str(pool))
        check_host_paths(path, role="operator", local=True, pools=pools_of(target), uses=list)


def test_a_remote_host_allows_no_paths_without_the_permission(pool: Path) -> None:
    err = refused(str(pool / "disk.qcow2"), pool, local=False)
    assert "remote" in err.message
    check(str(pool / "disk.qcow2"), pool, role="admin", local=False)


def test_admins_name_any_path_and_the_pools_are_not_asked(pool: Path) -> None:
    def no_pools() -> list[PoolTarget]:
        raise AssertionError("pools asked")

    def no_uses() -> list[DiskUse]:
        raise AssertionError("uses asked")

    check_host_paths(
        [("cdrom", "/etc/shadow")], role="admin", local=True, pools=no_pools, uses=no_uses
    )
    check_host_paths([], role="operator", local=True, pools=no_pools, uses=no_uses)  # nothing named
    with pytest.raises(PermissionDenied):
        check_host_paths(
            [("kernel", "/boot/vmlinuz")], role="viewer", local=False, pools=no_pools, uses=no_uses
        )
    with pytest.raises(PermissionDenied):  # an unknown role has no permission
        check_host_paths(
            [("kernel", "/boot/vmlinuz")], role="root", local=False, pools=no_pools, uses=no_uses
        )
    # files QEMU reads as they are (a kernel, a CD-ROM: read-only raw) need no VM's disks
    named = [("kernel", str(pool / "disk.qcow2")), ("cdrom", str(pool / "disk.qcow2"))]
    targets = pools_of(PoolTarget("vms", "dir", True, str(pool)))
    check_host_paths(named, role="operator", local=True, pools=targets, uses=no_uses)


def test_every_path_is_checked_the_first_bad_one_is_named(pool: Path) -> None:
    named = [("kernel", str(pool / "disk.qcow2")), ("initrd", "/boot/initrd.img")]
    targets = pools_of(PoolTarget("vms", "dir", True, str(pool)))
    with pytest.raises(PermissionDenied, match=re.escape("initrd '/boot/initrd.img'")):
        check_host_paths(named, role="operator", local=True, pools=targets, uses=list)


def test_the_paths_a_vm_spec_names() -> None:
    spec = VMSpec.model_validate(
        {
            "name": "web1",
            "kernel": "/boot/vmlinuz",
            "initrd": "/boot/initrd.img",
            "cmdline": "console=ttyS0",
            "cdrom": "/srv/iso/debian.iso",
            "disks": [{"size": "1G"}, {"path": "/dev/sda"}, {"image": "debian-12"}, {"path": "b"}],
        }
    )
    assert vm_spec_paths(spec) == [
        ("kernel", "/boot/vmlinuz"),
        ("initrd", "/boot/initrd.img"),
        ("cdrom", "/srv/iso/debian.iso"),
        NamedImage("disks[1].path", "/dev/sda", None),
        NamedImage("disks[3].path", "b", None),
    ]
    templates_only = VMSpec.model_validate({"name": "web2", "disks": [{"image": "pool/debian"}]})
    assert vm_spec_paths(templates_only) == []
