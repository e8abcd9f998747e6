"""The KVM-denied scenario (issue 12): /dev/kvm root:root 0600 and libvirt's usual QEMU user.

libvirt needs about 40 s to report that QEMU was denied /dev/kvm, and while it is denied it
re-probes every QEMU binary on each call. virtkit recognises the case from the device's mode
and QEMU's user and groups, keeps the verdict with the fix, and a later command answers from
it without probing.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PREFIX, VIRTKIT, Bed
from tests.testbed.libvirtd import PrivateLibvirtd
from virtkit.backend import kvmdev
from virtkit.xml.domain import Domain

pytestmark = pytest.mark.integration

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


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VIRTKIT, *args], env=env, capture_output=True, text=True, timeout=240)


def test_denied_kvm_is_a_firm_cached_verdict_with_the_fix(
    bed: Bed, denied_kvm: Path, unprivileged_daemon: PrivateLibvirtd, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "VIRTKIT_URI": unprivileged_daemon.uri,
        "VIRTKIT_CACHE_DIR": str(tmp_path / "cache"),
        "VIRTKIT_CONSOLE_LOG_DIR": str(tmp_path / "logs"),
        "VIRTKIT_KVM_PROBE_TIMEOUT": "8",
        "VIRTKIT_CONFIG": "/nonexistent",
    }
    first = _run(env, "-v", "host", "info", "--reprobe", "--json")
    assert first.returncode == 0, first.stderr
    kvm = json.loads(first.stdout)["kvm"]
    assert not kvm["usable"] and not kvm["cached"]
    assert "Permission denied" in kvm["reason"] and QEMU_USER in kvm["reason"]
    assert "chgrp kvm /dev/kvm" in kvm["fix"] and "chmod 0660 /dev/kvm" in kvm["fix"]
    # recognised from the facts, not by booting a guest and waiting for it to fail
    assert "probing KVM" not in first.stderr

    second = _run(env, "-v", "host", "info")
    assert second.returncode == 0, second.stderr
    assert "NO:" in second.stdout and "cached" in second.stdout
    assert "KVM fix" in second.stdout and "chmod 0660 /dev/kvm" in second.stdout
    assert "probing KVM" not in second.stderr
    # libvirt re-probes QEMU on each call in this state: the kept answers are used
    assert "using virtkit's copy" in second.stderr

    # A create decides its domain type from the kept verdict. (--print-xml: libvirt's own
    # define takes over a minute in this state, re-probing QEMU for each device it checks.)
    create = _run(
        env,
        "-v",
        "vm",
        "create",
        f"{PREFIX}kvmdenied",
        "--memory",
        "128M",
        "--kernel",
        str(bed.guest.kernel),
        "--initrd",
        str(bed.guest.initrd),
        "--print-xml",
    )
    assert create.returncode == 0, create.stderr
    assert "probing KVM" not in create.stderr
    assert "KVM is not usable" not in create.stderr  # warned once, when it was decided
    assert Domain.parse(create.stdout).type == "qemu"
    # no probe guest was ever started on the daemon
    listed = subprocess.run(
        ["virsh", "-c", unprivileged_daemon.uri, "list", "--all", "--name"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0 and "virtkit-kvmprobe-" not in listed.stdout
