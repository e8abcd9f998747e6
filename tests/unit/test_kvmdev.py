"""/dev/kvm facts, the permission verdict's reasoning, the udev-default fix, the verdict store."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

import pytest

from virtkit.backend import kvmdev, verdicts
from virtkit.backend.kvmdev import DeviceNode, QemuIdentity
from virtkit.backend.verdicts import KvmVerdict, VerdictStore

KVM_GID = grp.getgrnam("kvm").gr_gid if "kvm" in [g.gr_name for g in grp.getgrall()] else None
NOBODY = pwd.getpwnam("nobody").pw_uid


def node(uid: int, gid: int, mode: int) -> DeviceNode:
    return DeviceNode("/dev/kvm", uid, gid, mode, 1.0)


def test_can_open_follows_owner_group_other() -> None:
    qemu = QemuIdentity(1000, 1000, (1000, 107))
    assert not kvmdev.can_open(node(0, 0, 0o600), qemu)
    assert kvmdev.can_open(node(0, 107, 0o660), qemu)
    assert not kvmdev.can_open(node(0, 107, 0o640), qemu)  # read is not enough
    assert kvmdev.can_open(node(1000, 0, 0o600), qemu)
    assert kvmdev.can_open(node(0, 0, 0o666), qemu)
    # the owner's bits decide for the owner, even where "other" would allow it
    assert not kvmdev.can_open(node(1000, 0, 0o066), qemu)
    assert kvmdev.can_open(node(0, 0, 0o600), QemuIdentity(0, 0, (0,)))  # root


def test_identity_from_label_and_qemu_conf(tmp_path: Path) -> None:
    root = kvmdev.identity_from_label("+0:+0")
    assert root is not None and root.uid == 0 and 0 in root.groups
    who = kvmdev.identity_from_label(f"+{NOBODY}:+{NOBODY}")
    assert who is not None and who.uid == NOBODY and who.user == "nobody"
    conf = tmp_path / "qemu.conf"
    conf.write_text('#user = "root"\n# group = "root"\n')
    assert kvmdev.identity_from_qemu_conf(conf) is None  # commented: the built-in default
    conf.write_text('user = "nobody"\ngroup = "nogroup"\n')
    who = kvmdev.identity_from_qemu_conf(conf)
    assert who is not None and who.uid == NOBODY and grp.getgrnam("nogroup").gr_gid in who.groups
    assert kvmdev.identity_from_qemu_conf(tmp_path / "missing") is None


@pytest.mark.skipif(KVM_GID is None, reason="no kvm group on this machine")
def test_permission_fix_names_the_udev_group_and_mode() -> None:
    qemu = QemuIdentity(NOBODY, NOBODY, (NOBODY,))
    fix = kvmdev.permission_fix(node(0, 0, 0o600), qemu)
    assert "chgrp kvm /dev/kvm" in fix and "chmod 0660 /dev/kvm" in fix
    assert "usermod -aG kvm nobody" in fix  # nobody is not in group kvm
    member = QemuIdentity(NOBODY, NOBODY, (NOBODY, KVM_GID or 0))
    fix = kvmdev.permission_fix(node(0, KVM_GID or 0, 0o600), member)
    assert "chgrp" not in fix and "usermod" not in fix and "chmod 0660" in fix


def _make_node(path: Path, mode: int) -> Path:
    os.mknod(path, stat.S_IFCHR | mode, os.makedev(1, 3))  # /dev/null's numbers: harmless
    os.chown(path, 0, 0)
    os.chmod(path, mode)
    return path


@pytest.mark.skipif(os.geteuid() != 0 or KVM_GID is None, reason="needs root and a kvm group")
def test_apply_udev_default_where_no_udev_runs(tmp_path: Path) -> None:
    dev = _make_node(tmp_path / "kvm", 0o600)
    before = kvmdev.stat_device(dev)
    result = kvmdev.apply_udev_default(dev, udev_dir=tmp_path / "no-udev")
    after = kvmdev.stat_device(dev)
    assert result.changed and "crw------- root:root" in result.message
    assert "crw-rw---- root:kvm" in result.message
    assert after is not None and before is not None
    assert (after.gid, after.mode) == (KVM_GID, 0o660)
    assert after.fingerprint != before.fingerprint  # the ctime moved: the verdict is stale
    again = kvmdev.apply_udev_default(dev, udev_dir=tmp_path / "no-udev")
    assert not again.changed and "already" in again.message


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for mknod")
def test_apply_udev_default_leaves_a_udev_managed_device_alone(tmp_path: Path) -> None:
    dev = _make_node(tmp_path / "kvm", 0o600)
    udev = tmp_path / "udev"
    udev.mkdir()
    result = kvmdev.apply_udev_default(dev, udev_dir=udev)
    assert not result.changed and "managed by udev" in result.message
    assert stat.S_IMODE(os.stat(dev).st_mode) == 0o600
    missing = kvmdev.apply_udev_default(tmp_path / "none", udev_dir=tmp_path / "no-udev")
    assert not missing.changed and "does not exist" in missing.message


def test_stat_device_is_none_for_a_plain_file(tmp_path: Path) -> None:
    plain = tmp_path / "kvm"
    plain.write_text("")
    assert kvmdev.stat_device(plain) is None
    assert kvmdev.stat_device(tmp_path / "absent") is None


def test_verdict_store_finds_by_local_fingerprint_and_keeps_answers(tmp_path: Path) -> None:
    store = VerdictStore(tmp_path)
    denied = KvmVerdict(False, "denied", 1.0, fix="chmod", kind="permission")
    answers = {("caps",): "<capabilities/>", ("hypervisor",): "QEMU 7.2.0"}
    store.save("full-key", denied, local="local-1", answers=answers)
    found = store.by_local("local-1")
    assert found is not None
    verdict, kept = found
    assert verdict.cached and verdict.fix == "chmod" and verdict.libvirt_reprobes
    assert kept == answers
    store.add_answers("local-1", {("domcaps", None, "x86_64", "q35", "qemu"): "<d/>"})
    found = store.by_local("local-1")
    assert found is not None and len(found[1]) == 3
    assert store.by_local("local-2") is None
    by_key = store.by_key("full-key")
    assert by_key is not None and by_key.cached and by_key.kind == "permission"
    # a new verdict for the same local state replaces the old one
    store.save("other-key", KvmVerdict(False, "silent", 2.0, kind="silent"), local="local-1")
    found = store.by_local("local-1")
    assert found is not None and found[0].reason == "silent" and found[1] == {}
    assert store.by_key("full-key") is None


def test_local_fingerprint_changes_with_the_device_stamp() -> None:
    a = verdicts.local_fingerprint("qemu:///system", "9.0.0", "0:0:600:1.0")
    b = verdicts.local_fingerprint("qemu:///system", "9.0.0", "0:107:660:2.0")
    c = verdicts.local_fingerprint("qemu:///system", "9.1.0", "0:0:600:1.0")
    assert len({a, b, c}) == 3
    assert a == verdicts.local_fingerprint("qemu:///system", "9.0.0", "0:0:600:1.0")
