"""Shared fixtures. Integration fixtures start a private libvirtd (tests/testbed/libvirtd.py)."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.testbed.hosts import TestHost, TestHosts
from tests.testbed.libvirtd import PrivateLibvirtd
from virtkit import Client, Settings
from virtkit.errors import NotFound
from virtkit.services.tinyguest import BOOT_MARKER, TinyGuest, build_tiny_guest

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("VIRTKIT_TEST_CACHE", ROOT / ".cache" / "tests"))
PREFIX = "vktest-"
VIRTKIT = str(Path(sys.executable).with_name("virtkit"))


# `make test` runs the suite on two workers (pytest-xdist), each with its own private libvirtd.
# The scheduler below hands out whole modules (their module fixtures are made once), and modules
# that share a session fixture or touch this machine's own state (/dev/kvm's mode, hugepages,
# KSM's knobs) as one unit, so they never run side by side. (xdist's own loadgroup marks do not
# reach its scheduler under pytest 9.)
XDIST_GROUPS = {
    # the Debian template and the two cloud-init guests (`template`, `cloud_guests`)
    "test_ansible": "cloud",
    "test_cloudinit": "cloud",
    "test_storage": "cloud",
    # this machine's /dev/kvm, hugepages and KSM
    "test_doctor": "machine",
    "test_kvm_verdict": "machine",
    "test_ksm": "machine",
    "test_tuning": "machine",
}


def xdist_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: its module, or its module's group."""
    module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
    return XDIST_GROUPS.get(module, module)


# the first test to use them pays for them (template build and boots, slower beside the other
# worker): its timeout covers that
SLOW_FIXTURES = {"template": 900, "cloud_guests": 900}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        slow = [SLOW_FIXTURES[f] for f in getattr(item, "fixturenames", ()) if f in SLOW_FIXTURES]
        if slow:
            item.add_marker(pytest.mark.timeout(max(slow)))


@pytest.hookimpl(optionalhook=True)  # a hook of xdist's: none without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class ModuleGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_unit(nodeid)

    return ModuleGroups(config, log)


def cli_env(s: Settings) -> dict[str, str]:
    """Environment that points the virtkit CLI at these settings (and no config file)."""
    return {
        **os.environ,
        "VIRTKIT_URI": s.uri,
        "VIRTKIT_CACHE_DIR": str(s.cache_dir),
        "VIRTKIT_STATE_DIR": str(s.state_dir),
        "VIRTKIT_STORAGE_POOL": s.storage_pool,
        "VIRTKIT_STORAGE_POOL_PATH": str(s.storage_pool_path),
        "VIRTKIT_CONSOLE_LOG_DIR": str(s.console_log_dir),
        "VIRTKIT_QEMU_LOG_DIR": str(s.qemu_log_dir),
        "VIRTKIT_KVM_PROBE_TIMEOUT": str(s.kvm_probe_timeout),
        "VIRTKIT_CONFIG": "/nonexistent",
    }


@dataclass
class Bed:
    """The integration test bed: a private libvirtd, where its files go, and the tiny guest."""

    daemon: PrivateLibvirtd
    guest: TinyGuest
    settings: Settings

    @property
    def uri(self) -> str:
        return self.daemon.uri

    @property
    def pool_dir(self) -> Path:
        return self.settings.storage_pool_path

    @property
    def log_dir(self) -> Path:
        return self.settings.console_log_dir

    def env(self) -> dict[str, str]:
        """Environment for running the virtkit CLI against the private daemon."""
        return cli_env(self.settings)

    def client(self) -> Client:
        return Client(settings=self.settings)


@pytest.fixture(scope="session")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    guest = build_tiny_guest(CACHE)
    daemon = PrivateLibvirtd(name="vktest")
    shared = daemon.shared
    for sub in ("images", "logs"):
        (shared / sub).mkdir(parents=True, exist_ok=True)
    settings = Settings(
        uri=daemon.uri,
        cache_dir=shared / "cache",
        state_dir=shared / "state",
        storage_pool="vktest-pool",
        storage_pool_path=shared / "images",
        console_log_dir=shared / "logs",
        qemu_log_dir=daemon.base / "log" / "qemu",  # the daemon's /var/log/libvirt/qemu
        kvm_probe_timeout=8.0,
        shutdown_timeout=30.0,
    )
    # a small filesystem for "does not fit" tests; mounted before the daemon's namespace is made
    small = shared / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(small)], check=True)
    try:
        daemon.start()
    except BaseException:
        subprocess.run(["umount", str(small)], check=False)
        raise
    try:
        with Client(settings=settings) as client:
            client.probe.facts()  # the KVM verdict once, cached for every test after
        yield Bed(daemon, guest, settings)
    finally:
        try:
            daemon.stop()
        finally:
            subprocess.run(["umount", str(small)], check=False)
            daemon.cleanup()


@pytest.fixture
def vk(bed: Bed) -> Iterator[Client]:
    client = bed.client()
    yield client
    client.close()


@pytest.fixture
def vm_name(bed: Bed) -> Iterator[str]:
    """A fresh VM name with the test prefix; whatever the test made under it is removed after."""
    name = PREFIX + secrets.token_hex(3)
    yield name
    with bed.client() as client, contextlib.suppress(NotFound):
        client.vms.delete(name, force=True, remove_storage=True)
    for leftover in bed.pool_dir.glob(f"{name}-*"):
        leftover.unlink()


def tiny_spec(bed: Bed, name: str, **extra: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "name": name,
        "memory": "128M",
        "vcpus": 1,
        "kernel": bed.guest.kernel,
        "initrd": bed.guest.initrd,
        "cmdline": bed.guest.cmdline,
    }
    spec.update(extra)
    return spec


def write_iso(path: Path, label: str = "VKTEST") -> Path:
    """A small real ISO 9660 image (one file) at ``path``: what a CD-ROM must be."""
    import io

    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=label)
    iso.add_fp(io.BytesIO(b"virtkit test disc\n"), 18, "/README.TXT;1")
    iso.write(str(path))
    iso.close()
    return path


def console_log(bed: Bed, name: str) -> str:
    path = bed.log_dir / f"{name}-serial0.log"
    return path.read_text(errors="replace") if path.exists() else ""


def wait_for_text(
    bed: Bed, name: str, text: str = BOOT_MARKER, count: int = 1, timeout: float = 60.0
) -> float:
    """Wait until ``text`` appears ``count`` times on the VM's console log; returns seconds."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if console_log(bed, name).count(text) >= count:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(
        f"{text!r} x{count} not seen on {name}'s console within {timeout} s; "
        f"log:\n{console_log(bed, name)[-2000:]}"
    )


def run_cli(
    bed: Bed, *args: str, input: str | None = None, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VIRTKIT, *args],
        env=bed.env(),
        capture_output=True,
        text=True,
        input=input,
        timeout=timeout,
        cwd=cwd,
    )


@dataclass
class HostBed:
    """A test host (tests/testbed/hosts.py) with virtkit settings pointing at it."""

    host: TestHost
    guest: TinyGuest
    settings: Settings

    @property
    def log_dir(self) -> Path:
        return self.settings.console_log_dir

    def client(self) -> Client:
        return Client(settings=self.settings)

    def env(self) -> dict[str, str]:
        return cli_env(self.settings)


def host_bed(host: TestHost, guest: TinyGuest) -> HostBed:
    (host.shared / "logs").mkdir(parents=True, exist_ok=True)
    settings = Settings(
        uri=host.uri, cache_dir=CACHE / "hosts", state_dir=host.shared / "state",
        storage_pool="vktest-pool",
        storage_pool_path=host.shared / "images", console_log_dir=host.shared / "logs",
        kvm_probe_timeout=8.0, shutdown_timeout=30.0,
    )  # fmt: skip
    return HostBed(host, guest, settings)


@pytest.fixture(scope="module")
def net_host() -> Iterator[HostBed]:
    """One test host: its own network namespace and libvirtd (virtual networks go here)."""
    guest = build_tiny_guest(CACHE)
    with TestHosts(1, prefix="vktest") as hosts:
        yield host_bed(hosts[0], guest)


def run_host_cli(hb: HostBed, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [VIRTKIT, *args], env=hb.env(), capture_output=True, text=True, timeout=120, check=False
    )


def wait_for_log(log: Path, text: str, count: int = 1, timeout: float = 60.0) -> str:
    """Wait until ``text`` appears ``count`` times in a console log; returns the log."""
    deadline = time.monotonic() + timeout
    content = ""
    while time.monotonic() < deadline:
        content = log.read_text(errors="replace") if log.exists() else ""
        if content.count(text) >= count:
            return content
        time.sleep(0.1)
    raise AssertionError(
        f"{text!r} x{count} not in {log.name} within {timeout} s:\n{content[-2000:]}"
    )
