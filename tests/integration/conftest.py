"""Fixtures integration tests share: /dev/kvm denied, a daemon with libvirt's QEMU user."""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.testbed.libvirtd import PrivateLibvirtd
from virtkit.backend import kvmdev

QEMU_USER = "libvirt-qemu"


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture
def denied_kvm() -> Iterator[Path]:
    """/dev/kvm as a host without udev has it, put back as it was afterwards."""
    dev = kvmdev.KVM_DEVICE
    if kvmdev.stat_device(dev) is None:
        pytest.skip("no /dev/kvm on this machine")
    if kvmdev.udev_manages():
        pytest.skip("udev manages /dev here: its rule owns /dev/kvm's mode")
    st = os.stat(dev)
    os.chown(dev, 0, 0)
    os.chmod(dev, 0o600)
    try:
        yield dev
    finally:
        os.chown(dev, st.st_uid, st.st_gid)
        os.chmod(dev, st.st_mode & 0o7777)


@pytest.fixture
def unprivileged_daemon() -> Iterator[PrivateLibvirtd]:
    if not _has_user(QEMU_USER):
        pytest.skip(f"no {QEMU_USER} user (libvirt-daemon-system makes it)")
    with PrivateLibvirtd(name="vktest-kvm", qemu_user=QEMU_USER) as daemon:
        yield daemon
