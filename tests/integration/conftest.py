"""Fixtures integration tests share: /dev/kvm denied, a daemon with libvirt's QEMU user."""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import PREFIX, Bed, run_cli
from tests.testbed.libvirtd import PrivateLibvirtd
from virtkit.backend import kvmdev
from virtkit.errors import NotFound
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


MARKER = "VIRTKIT-RUNCMD-DONE"
PASSWORD = "Sup3r-s3cret"


@dataclass
class CloudGuests:
    """The two Debian cloud-init guests the cloud-init and Ansible tests share, made by
    `virtkit apply` of a site file: `web` (NoCloud: a password, hostname web1) and `db`
    (ConfigDrive with a static address). Both: the user admin with `key`'s public half, the
    runcmd marker on the console, SSH forwarded from 127.0.0.1:`ports[name]`."""

    names: dict[str, str]  # role -> VM name
    ports: dict[str, int]  # VM name -> the 127.0.0.1 port forwarded to its SSH
    key: Path  # the private key of the SSH key the guests' user accepts
    site: Path  # the site file that made them


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def cloud_guests(
    bed: Bed, template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CloudGuests]:
    """Booted side by side (two single-vCPU TCG guests on 2 cores take about the time of
    one), once for the session: the slowest guests of the suite are shared, not made twice.
    Waited for until cloud-init finished; pruned by the same site file afterwards."""
    work = tmp_path_factory.mktemp("cloud-guests")
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    suffix = secrets.token_hex(2)
    names = {role: f"{PREFIX}ci-{role}-{suffix}" for role in ("web", "db")}
    ports = {name: free_port() for name in names.values()}
    common = {
        "memory": "512M",
        "disks": [{"image": template}],
        "tags": ["site=vktest"],
    }
    cloud = {"user": "admin", "ssh_keys": [Path(f"{key}.pub").read_text()],
             "runcmd": [f"echo {MARKER} > /dev/ttyS0"]}  # fmt: skip
    web, db = names["web"], names["db"]
    vms = [
        {**common, "name": web, "tags": ["role=web", "site=vktest"],
         "nics": [{"user": True, "ssh_forward": ports[web]}],
         "cloud_init": {**cloud, "password": PASSWORD, "hostname": "web1"}},
        # user-mode networking forwards SSH to 10.0.2.15: the static address the seed gives
        {**common, "name": db, "tags": ["role=db", "site=vktest"],
         "nics": [{"user": True, "ssh_forward": ports[db]}],
         "cloud_init": {**cloud, "seed": "configdrive", "ip": "10.0.2.15/24",
                        "gateway": "10.0.2.2", "dns": ["10.0.2.3"]}},
    ]  # fmt: skip
    site = work / "site.yaml"
    site.write_text(yaml.safe_dump({"site": f"{PREFIX}cloud", "vms": vms}))
    made = False
    seeds: list[str] = []
    try:
        applied = run_cli(bed, "apply", "-f", str(site), timeout=600)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert "Applied 2 change(s)" in applied.stdout, applied.stdout
        for name in names.values():
            waited = run_cli(bed, "vm", "wait", name, "--for", "cloud-init", "--timeout", "420",
                             timeout=480)  # fmt: skip
            assert waited.returncode == 0, f"{name}: {waited.stderr}"
        again = run_cli(bed, "apply", "-f", str(site))
        assert "No changes" in again.stdout, again.stdout  # the guests are as the file says
        with bed.client() as vk:
            seeds = [d.source for n in names.values() for d in vk.vms.get(n).disks
                     if d.device == "cdrom" and d.source]  # fmt: skip
        made = True
        yield CloudGuests(names, ports, key, site)
    finally:
        site.write_text(yaml.safe_dump({"site": f"{PREFIX}cloud", "vms": []}))
        pruned = run_cli(bed, "apply", "-f", str(site), "--prune", "--yes", timeout=300)
        with bed.client() as vk:
            for name in names.values():
                with contextlib.suppress(NotFound):
                    vk.vms.delete(name, force=True, remove_storage=True)
        for name in names.values():
            for leftover in bed.pool_dir.glob(f"{name}-*"):
                leftover.unlink()
        if made:  # else the set-up's own error is the one to see
            assert pruned.returncode == 0, pruned.stdout + pruned.stderr
            assert seeds and not [s for s in seeds if Path(s).exists()]  # seeds go with VMs
