"""``virtkit doctor`` on this machine and on injected faults (issue 17), against real daemons.

Each fault is made for real: /dev/kvm 0600 under libvirt's usual QEMU user, a pool directory
removed, a pool filled to 100% under a running guest that then pauses on ENOSPC, a VM whose
kernel file is gone, a hugepage-backed VM with no hugepages reserved. The doctor must name each
with the right finding, and for the permission and pool cases ``--fix`` repairs it and the VM
runs.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PREFIX, VIRTKIT, Bed, cli_env, tiny_spec
from tests.integration.conftest import QEMU_USER
from tests.integration.guestshell import GuestShell
from tests.testbed.libvirtd import PrivateLibvirtd
from virtkit import Client, Settings, parse_vm_spec
from virtkit.backend import kvmdev
from virtkit.errors import NotFound, VirtkitError
from virtkit.specs import PoolSpec
from virtkit.specs.states import VMState

pytestmark = pytest.mark.integration


def doctor(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run(
        [VIRTKIT, "doctor", *args, "--json"], env=env, capture_output=True, text=True, timeout=240
    )
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout), done.stderr


def findings(
    report: dict[str, Any], check: str, subject: str | None = None
) -> list[dict[str, Any]]:
    return [
        f
        for f in report["findings"]
        if f["check"] == check and (subject is None or f["subject"] == subject)
    ]


def wait_state(client: Client, name: str, state: VMState, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.vms.get(name).state is state:
            return
        time.sleep(0.25)
    raise AssertionError(f"{name} did not become {state.value}: {client.vms.get(name).state}")


def test_doctor_tells_this_machine_as_it_is(bed: Bed) -> None:
    rc, report, stderr = doctor(bed.env(), "--all")
    assert rc == 1, stderr  # KVM is not usable here: an error remains
    kvm = findings(report, "kvm.usable")[0]
    assert kvm["severity"] == "error"
    with bed.client() as client:
        verdict = client.probe.kvm_verdict()
    assert not verdict.usable
    assert verdict.reason in kvm["summary"] and kvm["fix"]
    assert findings(report, "kvm.tcg")[0]["severity"] == "info"
    pools = [f for f in report["findings"] if f["check"].startswith("pool.")]
    assert pools and all(f["severity"] in ("ok", "info") for f in pools), pools
    assert "9.0" in findings(report, "versions")[0]["summary"]
    assert findings(report, "daemons.libvirtd")[0]["severity"] == "ok"


def test_every_virt_host_validate_finding_is_in_the_doctors(bed: Bed) -> None:
    tool = shutil.which("virt-host-validate")
    if tool is None:
        pytest.skip("virt-host-validate is not installed")
    done = subprocess.run([tool, "qemu"], capture_output=True, text=True, timeout=60)
    lines = []
    for raw in done.stdout.splitlines():
        if ":" not in raw or "Checking" not in raw:
            continue
        check = raw.split(":", 1)[1].rsplit(":", 1)[0].strip()
        status = raw.rsplit(":", 1)[1].strip().split()[0]
        lines.append((check, status))
    assert lines, done.stdout
    _rc, report, _err = doctor(bed.env(), "--all")
    for check, status in lines:
        covering = [f for f in report["findings"] if check in f["validate_checks"]]
        assert covering, f"virt-host-validate's {check!r} ({status}) has no doctor finding"
        worst = max(covering, key=lambda f: ["ok", "info", "warning", "error"].index(f["severity"]))
        if status == "FAIL":
            assert worst["severity"] in ("warning", "error"), (check, worst)
        elif status == "WARN":
            assert worst["severity"] != "ok", (check, worst)
        else:
            assert status == "PASS", (check, status)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory libvirt's unprivileged QEMU user can read (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix=PREFIX, dir="/var/tmp"))
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_denied_kvm_is_diagnosed_and_fixed_and_a_vm_starts(
    bed: Bed, denied_kvm: Path, unprivileged_daemon: PrivateLibvirtd, open_dir: Path
) -> None:
    tmp_path = open_dir
    logs = tmp_path / "logs"
    logs.mkdir()
    os.chmod(logs, 0o777)
    settings = Settings(
        uri=unprivileged_daemon.uri,
        cache_dir=tmp_path / "cache",
        state_dir=tmp_path / "state",
        storage_pool="vktest-kvmpool",
        storage_pool_path=unprivileged_daemon.shared / "images",
        console_log_dir=logs,
        kvm_probe_timeout=8.0,
    )
    env = cli_env(settings)
    rc, report, stderr = doctor(env)
    assert rc == 1, stderr
    kvm = findings(report, "kvm.usable")[0]
    assert kvm["severity"] == "error" and kvm["fixable"], kvm
    assert "Permission denied" in kvm["summary"] and QEMU_USER in kvm["summary"]
    assert "chmod 0660 /dev/kvm" in kvm["fix"]

    fixed = subprocess.run(
        [VIRTKIT, "doctor", "--fix", "--yes", "--only", "kvm.usable"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert "fixed: host:" in fixed.stdout, fixed.stdout + fixed.stderr
    node = kvmdev.stat_device(denied_kvm)
    assert node is not None and node.mode == 0o660 and node.gid == grp.getgrnam("kvm").gr_gid
    _rc, after, _err = doctor(env)
    assert "Permission denied" not in findings(after, "kvm.usable")[0]["summary"]

    name = f"{PREFIX}dockvm"
    kernel = tmp_path / "vmlinuz"
    initrd = tmp_path / "initrd"
    shutil.copyfile(bed.guest.kernel, kernel)
    shutil.copyfile(bed.guest.initrd, initrd)
    os.chmod(kernel, 0o644)
    os.chmod(initrd, 0o644)
    with Client(settings=settings) as client:
        spec = tiny_spec(bed, name, kernel=str(kernel), initrd=str(initrd))
        try:
            client.vms.create(parse_vm_spec(spec), start=True)
            wait_state(client, name, VMState.RUNNING)
        finally:
            with contextlib.suppress(NotFound):
                client.vms.delete(name, force=True, remove_storage=True)


@pytest.fixture
def doc_pool(bed: Bed) -> Iterator[tuple[str, Path]]:
    """A directory pool of its own, removed afterwards with whatever the test put in it."""
    name = f"{PREFIX}docpool"
    path = bed.daemon.shared / "docpool"
    with bed.client() as client:
        client.pools.create_pool(PoolSpec(name=name, type="dir", path=str(path)))
    try:
        yield name, path
    finally:
        with bed.client() as client, contextlib.suppress(VirtkitError):
            client.pools.delete_pool(name, delete_dir=True)
        shutil.rmtree(path, ignore_errors=True)


def test_removed_pool_directory_is_diagnosed_and_fixed(
    bed: Bed, doc_pool: tuple[str, Path], vm_name: str
) -> None:
    pool, path = doc_pool
    with bed.client() as client:
        client.pools.stop_pool(pool)
    shutil.rmtree(path)
    rc, report, _err = doctor(bed.env())
    assert rc == 1
    found = findings(report, "pool.path", f"pool {pool}")
    assert found and found[0]["severity"] == "error" and found[0]["fixable"], report
    assert str(path) in found[0]["summary"]

    settings = bed.settings.model_copy(update={"storage_pool": pool, "storage_pool_path": path})
    with Client(settings=settings) as client:
        with pytest.raises(VirtkitError):
            client.vms.create(parse_vm_spec(tiny_spec(bed, vm_name, disks=[{"size": "16M"}])))
        assert not client.host.exists(vm_name)

    fixed = subprocess.run(
        [VIRTKIT, "doctor", "--fix", "--yes", "--only", "pool.path"],
        env=bed.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert f"fixed: pool {pool}" in fixed.stdout, fixed.stdout + fixed.stderr
    assert path.is_dir()
    _rc, after, _err = doctor(bed.env())
    assert not findings(after, "pool.path", f"pool {pool}")
    assert findings(after, "pool.space", f"pool {pool}")[0]["severity"] == "ok"
    with Client(settings=settings) as client:
        client.vms.create(
            parse_vm_spec(tiny_spec(bed, vm_name, disks=[{"size": "16M"}])), start=True
        )
        wait_state(client, vm_name, VMState.RUNNING)


def test_full_pool_pauses_the_vm_on_enospc_and_fix_resumes_it(bed: Bed, vm_name: str) -> None:
    small = bed.daemon.shared / "small" / "docfull"
    small.mkdir()
    disk = small / f"{vm_name}-vda.qcow2"
    filler = small / "filler"
    pool = f"{PREFIX}docfull"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    try:
        with bed.client() as client:
            client.pools.create_pool(PoolSpec(name=pool, type="dir", path=str(small)))
            spec = tiny_spec(bed, vm_name, disks=[{"path": str(disk), "format": "qcow2"}])
            client.vms.create(parse_vm_spec(spec), start=True)
            shell = GuestShell(client, vm_name)
            shell.run("echo ready")
            free = os.statvfs(small).f_bavail * os.statvfs(small).f_frsize
            with open(filler, "wb") as fh:  # leave about 1 MiB
                fh.write(b"\0" * max(0, free - 1024 * 1024))
            # the write that cannot fit: the guest pauses in the middle of it
            # (dd's report into a file: read when it has ended, whatever the console's timing)
            shell._open().write(
                b"dd if=/dev/urandom of=/dev/vda bs=1M count=8 oflag=direct 2>/dd.log\n"
            )
            wait_state(client, vm_name, VMState.PAUSED)

            rc, report, _err = doctor(bed.env(), "vm", vm_name)
            assert rc == 1
            paused = findings(report, "vm.paused-enospc")
            assert paused and paused[0]["severity"] == "error" and paused[0]["fixable"], report
            assert "vda" in paused[0]["summary"] and "ENOSPC" in paused[0]["summary"]
            _rc, host, _err = doctor(bed.env())
            space = findings(host, "pool.space", f"pool {pool}")
            assert space[0]["severity"] == "error" and "full" in space[0]["summary"], space

            # still full: the fix refuses rather than resume into the same error
            again = subprocess.run(
                [VIRTKIT, "doctor", "vm", vm_name, "--fix", "--yes"],
                env=bed.env(), capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert "NOT fixed" in again.stdout and "Free space there first" in again.stdout
            assert client.vms.get(vm_name).state is VMState.PAUSED

            filler.unlink()
            fixed = subprocess.run(
                [VIRTKIT, "doctor", "vm", vm_name, "--fix", "--yes"],
                env=bed.env(), capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert f"fixed: vm {vm_name}: VM {vm_name} resumed" in fixed.stdout, fixed.stdout
            wait_state(client, vm_name, VMState.RUNNING)
            # the guest carried on where it stopped: the write that paused it completed
            out = shell.run("cat /dd.log; echo alive")
            assert "8+0 records out" in out and out.endswith("alive"), out
    finally:
        with bed.client() as client:
            with contextlib.suppress(NotFound):
                client.vms.delete(vm_name, force=True, remove_storage=True)
            with contextlib.suppress(VirtkitError):
                client.pools.delete_pool(pool)
        shutil.rmtree(small, ignore_errors=True)


def test_missing_kernel_is_named_with_its_path(bed: Bed, vm_name: str, tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinuz-gone"
    shutil.copyfile(bed.guest.kernel, kernel)
    with bed.client() as client:
        client.vms.create(parse_vm_spec(tiny_spec(bed, vm_name, kernel=str(kernel))))
        kernel.unlink()
        with pytest.raises(VirtkitError):
            client.vms.start(vm_name)
    rc, report, _err = doctor(bed.env(), "vm", vm_name)
    assert rc == 1
    missing = findings(report, "vm.kernel")
    assert missing and missing[0]["severity"] == "error", report
    assert str(kernel) in missing[0]["summary"] and missing[0]["fix"]
    # a trial start hears libvirt's own reason, and names the file
    _rc, tried, _err = doctor(bed.env(), "vm", vm_name, "--try-start")
    trial = [f for f in tried["findings"] if f["summary"].startswith("a trial start failed")]
    assert trial and trial[0]["severity"] == "error", tried
    assert str(kernel) in trial[0]["summary"] + trial[0]["explanation"]
    # the fix it names: restore the file; then a trial start works and the VM starts
    shutil.copyfile(bed.guest.kernel, kernel)
    _rc, tried, _err = doctor(bed.env(), "vm", vm_name, "--try-start", "--all")
    assert findings(tried, "start.trial")[0]["severity"] == "ok"
    with bed.client() as client:
        assert client.vms.get(vm_name).state is VMState.SHUTOFF  # stopped again
    with bed.client() as client:
        client.vms.start(vm_name)
        wait_state(client, vm_name, VMState.RUNNING)
    _rc, after, _err = doctor(bed.env(), "vm", vm_name)
    assert not findings(after, "vm.kernel")


def _hugepage_vm(client: Client, bed: Bed, name: str) -> None:
    """A tiny guest whose memory is backed by (2 MiB) hugepages."""
    client.vms.create(parse_vm_spec(tiny_spec(bed, name)))
    root = ET.fromstring(client.host.lookup(name).xml(inactive=True))
    backing = root.find("memoryBacking")
    if backing is None:
        backing = ET.SubElement(root, "memoryBacking")
    ET.SubElement(backing, "hugepages")
    client.host.define(ET.tostring(root, encoding="unicode"))


@pytest.fixture
def no_hugepages() -> Iterator[Path]:
    knob = Path("/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")
    if not knob.exists() or int(knob.read_text()) != 0:
        pytest.skip("needs 2 MiB hugepages with none reserved")
    try:
        yield knob
    finally:
        knob.write_text("0\n")  # as it was


def test_hugepage_vm_without_reserved_pages(bed: Bed, vm_name: str, no_hugepages: Path) -> None:
    with bed.client() as client:
        _hugepage_vm(client, bed, vm_name)
    rc, report, _err = doctor(bed.env(), "vm", vm_name)
    assert rc == 1
    need = findings(report, "vm.hugepages")
    assert need and need[0]["severity"] == "error" and need[0]["fixable"], report
    assert "needs 64 hugepages of 2 MiB; 0 free" in need[0]["summary"]
    assert "nr_hugepages" in need[0]["fix"]
    _rc, host, _err = doctor(bed.env())
    demand = [f for f in findings(host, "hugepages") if vm_name in f["summary"]]
    assert demand and demand[0]["severity"] == "error", host


def test_hugepage_fix_reserves_the_pages_and_the_vm_starts(
    bed: Bed, no_hugepages: Path, tmp_path: Path
) -> None:
    """With a hugetlbfs mounted before its daemon starts (libvirt finds mounts at start-up),
    --fix reserves what the VM needs and it boots."""
    mount = tmp_path / "hugepages"
    mount.mkdir()
    subprocess.run(["mount", "-t", "hugetlbfs", "hugetlbfs", str(mount)], check=True)
    name = f"{PREFIX}dochuge"
    try:
        with PrivateLibvirtd(name="vktest-huge") as daemon:
            settings = bed.settings.model_copy(
                update={"uri": daemon.uri, "state_dir": tmp_path / "state"}
            )
            env = cli_env(settings)
            with Client(settings=settings) as client:
                _hugepage_vm(client, bed, name)
                _rc, report, _err = doctor(env, "vm", name)
                assert findings(report, "vm.hugepages")[0]["severity"] == "error"
                fixed = subprocess.run(
                    [VIRTKIT, "doctor", "vm", name, "--fix", "--yes", "--only", "vm.hugepages"],
                    env=env, capture_output=True, text=True, timeout=60,
                )  # fmt: skip
                assert "64 hugepages of 2 MiB reserved (was 0)" in fixed.stdout, fixed.stdout
                assert int(no_hugepages.read_text()) == 64
                _rc, after, _err = doctor(env, "vm", name)
                assert not findings(after, "vm.hugepages")
                client.vms.start(name)
                wait_state(client, name, VMState.RUNNING)
                assert "ready" in GuestShell(client, name).run("echo ready")
                client.vms.delete(name, force=True, remove_storage=True)
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_running_guest_checks_out(bed: Bed, vm_name: str) -> None:
    with bed.client() as client:
        client.vms.create(parse_vm_spec(tiny_spec(bed, vm_name)), start=True)
        GuestShell(client, vm_name).run("echo ready")
    rc, report, stderr = doctor(bed.env(), "vm", vm_name, "--all")
    assert rc == 0, stderr
    assert findings(report, "vm.state")[0]["summary"].startswith("running")
    console = findings(report, "vm.console")[0]
    assert console["severity"] == "ok" and "answers" in console["summary"], console
    assert findings(report, "vm.files")[0]["severity"] == "ok"
    # virtkit gives every VM an agent channel; the tiny guest runs no agent
    agent = findings(report, "vm.agent")[0]
    assert agent["severity"] == "warning" and "does not answer" in agent["summary"]
    problems = [f for f in report["findings"] if f["severity"] in ("warning", "error")]
    assert problems == [agent], problems
    # a console someone holds is not taken from them to test it
    with bed.client() as client:
        holder = client.consoles.open(vm_name)
        try:
            _rc, held, _err = doctor(bed.env(), "vm", vm_name, "--all")
        finally:
            holder.close()
    assert "held by another client" in findings(held, "vm.console")[0]["summary"]
