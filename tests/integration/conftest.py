"""Fixtures integration tests share: /dev/kvm denied, a daemon with libvirt's QEMU user."""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Bed, run_cli
from tests.testbed.libvirtd import PrivateLibvirtd
from virtkit.backend import kvmdev
from virtkit.services import storage

QEMU_USER = "libvirt-qemu"
TEMPLATE = "vktest-debian12"


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="session")
def template(bed: Bed) -> Iterator[str]:
    """`virtkit image build` end to end, once for the session (debootstrap from the host's
    mirror, about 1.5 min): the debian-12 template the cloud-init guests boot (test_cloudinit,
    test_ansible), and what test_image_build_makes_a_template_that_boots_its_own_kernel
    checks. One build, not one per module."""
    with bed.client() as vk:
        storage.ensure_pool(vk.host, bed.settings.storage_pool, bed.pool_dir)
    built = run_cli(bed, "image", "build", TEMPLATE, timeout=900)
    assert built.returncode == 0, built.stderr
    yield TEMPLATE
    with bed.client() as vk:
        vk.pools.delete_volume(bed.settings.storage_pool, TEMPLATE)


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
