"""The KVM-denied scenario (issue 12): /dev/kvm root:root 0600 and libvirt's usual QEMU user.

libvirt needs about 40 s to report that QEMU was denied /dev/kvm, and while it is denied it
re-probes every QEMU binary on each call. virtkit recognises the case from the device's mode
and QEMU's user and groups, keeps the verdict with the fix, and a later command answers from
it without probing.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PREFIX, VIRTKIT, Bed
from tests.integration.conftest import QEMU_USER
from tests.testbed.libvirtd import PrivateLibvirtd
from virtkit.xml.domain import Domain

pytestmark = pytest.mark.integration


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
