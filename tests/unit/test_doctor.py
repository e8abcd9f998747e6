"""The doctor's logic: checks over made-up /proc and /sys trees and libvirt's test driver
(a per-test ``test:///FILE``), log patterns, fixes, and the CLI's output and exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from virtkit import Client, Settings
from virtkit.doctor import localfacts as lf
from virtkit.doctor import validate
from virtkit.doctor.fixes import FixContext, hugepages_reserve, thp_madvise, vm_resume
from virtkit.doctor.hostchecks import (
    HostContext,
    apparmor,
    hugepages,
    memory_pressure,
    networks,
    thp_and_ksm,
)
from virtkit.doctor.patterns import match
from virtkit.errors import InvalidState
from virtkit.specs.doctor import DoctorReport, Finding, Severity
from virtkit.specs.states import VMState

VIRTKIT = str(Path(sys.executable).with_name("virtkit"))

NODE = """<node>
  <domain type="test">
    <name>vkdoc-huge</name>
    <memory unit="MiB">256</memory>
    <memoryBacking><hugepages/></memoryBacking>
    <vcpu>1</vcpu>
    <os><type arch="x86_64">hvm</type></os>
  </domain>
  <domain type="test">
    <name>vkdoc-plain</name>
    <memory unit="MiB">128</memory>
    <vcpu>1</vcpu>
    <os><type arch="x86_64">hvm</type></os>
  </domain>
  <network>
    <name>vkdoc-net</name>
    <bridge name="vkdocbr0"/>
    <ip address="198.18.7.1" netmask="255.255.255.0"/>
  </network>
</node>
"""


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    write(root, "proc/cpuinfo", "processor : 0\nflags : fpu vme sse2 vmx\n")
    write(
        root,
        "proc/meminfo",
        "MemTotal: 16000000 kB\nMemAvailable: 8000000 kB\nSwapTotal: 0 kB\nSwapFree: 0 kB\n"
        "Hugepagesize: 2048 kB\n",
    )
    write(root, "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "0\n")
    write(root, "sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "0\n")
    write(root, "sys/kernel/mm/transparent_hugepage/enabled", "[always] madvise never\n")
    write(root, "sys/kernel/mm/ksm/run", "1\n")
    write(root, "sys/fs/cgroup/cgroup.controllers", "cpuset cpu io memory pids\n")
    write(root, "proc/mounts", "proc /proc proc rw 0 0\n")
    # 198.18.7.0/24 routed out of eth1: the virtual network above collides with it
    write(
        root,
        "proc/net/route",
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
        "eth0\t00000000\t0102000A\t0003\t0\t0\t0\t00000000\n"
        "eth1\t000712C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\n",
    )
    return root


@pytest.fixture
def client(tmp_path: Path) -> Client:
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    return Client(
        settings=Settings(
            uri=f"test://{node}", cache_dir=tmp_path / "cache", state_dir=tmp_path / "state"
        )
    )


def ctx(client: Client, root: Path) -> HostContext:
    return HostContext(client.host, client.probe, client.pools.list_pools, root)


def test_localfacts_read_a_made_up_tree(fake_root: Path) -> None:
    assert "vmx" in lf.cpu_flags(fake_root)
    assert lf.meminfo(fake_root)["MemAvailable"] == 8000000 * 1024
    assert lf.thp_mode(fake_root) == "always"
    groups = lf.cgroups(fake_root)
    assert groups.version == 2 and {"cpuacct", "blkio", "devices"} <= groups.controllers
    routes = lf.ipv4_routes(fake_root)
    assert [(r.interface, str(r.network)) for r in routes] == [("eth1", "198.18.7.0/24")]
    assert lf.hugepages(fake_root)[0] == lf.HugePagePool(2048, 0, 0)


def test_validate_checks_name_virt_host_validates_lines(fake_root: Path) -> None:
    found = validate.checks(fake_root, Path("/dev/kvm"))
    covered = {line for f in found for line in f.validate_checks}
    assert validate.HW in covered and validate.VHOST in covered and validate.IOMMU in covered
    by_check = {f.check: f for f in found}
    assert by_check["validate.hw-virt"].severity is Severity.OK  # vmx in the flags
    assert by_check["validate.kvm-device"].severity is Severity.ERROR  # no dev/kvm in the tree
    vhost = by_check["validate.vhost-net"]
    assert vhost.severity is Severity.WARNING and vhost.fix_action == "modprobe"
    assert by_check["validate.cgroups"].severity is Severity.OK
    # Intel CPU, no DMAR table: the firmware has no IOMMU on
    assert "DMAR" in by_check["validate.iommu"].summary


def test_no_vmx_is_an_error(fake_root: Path) -> None:
    write(fake_root, "proc/cpuinfo", "flags : fpu sse2\n")
    (hw,) = validate.hardware(fake_root)
    assert hw.severity is Severity.ERROR and "vmx" in hw.summary


def test_hugepage_vm_without_pages_and_mount(client: Client, fake_root: Path) -> None:
    found = hugepages(ctx(client, fake_root))
    by_check = {f.check: f for f in found}
    assert by_check["hugepages.mount"].severity is Severity.ERROR
    need = by_check["hugepages"]
    assert need.severity is Severity.ERROR and "vkdoc-huge" in need.summary
    assert "need 128 hugepages of 2 MiB; 0 reserved" in need.summary
    assert need.fix_action == "hugepages-reserve" and need.fix_args["pages"] == "128"


def test_network_colliding_with_a_route(client: Client, fake_root: Path) -> None:
    (found,) = networks(ctx(client, fake_root))
    assert found.severity is Severity.ERROR and found.subject == "network vkdoc-net"
    assert "198.18.7.0/24" in found.summary and "eth1" in found.summary
    # the network's own bridge carrying the route is no collision
    write(
        fake_root,
        "proc/net/route",
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
        "vkdocbr0\t000712C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\n",
    )
    (clean,) = networks(ctx(client, fake_root))
    assert clean.severity is Severity.OK


def test_thp_always_with_ksm_is_a_warning_with_a_fix(client: Client, fake_root: Path) -> None:
    (found,) = thp_and_ksm(ctx(client, fake_root))
    assert found.severity is Severity.WARNING and found.fix_action == "thp-madvise"
    message = thp_madvise(FixContext(client.host, Path("/dev/kvm"), fake_root), {})
    assert "always -> madvise" in message
    knob = fake_root / "sys/kernel/mm/transparent_hugepage/enabled"
    assert knob.read_text() == "madvise\n"
    assert f"echo always > {knob}" in message  # how to revert it


def test_oom_kill_of_qemu_and_apparmor_denials(client: Client, fake_root: Path) -> None:
    write(
        fake_root,
        "var/log/kern.log",
        "[ 10.0] Out of memory: Killed process 4242 (qemu-system-x86) total-vm:1kB\n"
        '[ 11.0] audit: type=1400 apparmor="DENIED" operation="open" '
        'profile="libvirt-0d2f4a1e-1111-2222-3333-444455556666" name="/srv/vm/disk.img"\n',
    )
    context = ctx(client, fake_root)
    oom = [f for f in memory_pressure(context) if f.check == "memory.oom"]
    assert oom and oom[0].severity is Severity.ERROR and "qemu-system-x86" in oom[0].summary
    (denied,) = apparmor(context)
    assert denied.severity is Severity.ERROR and "/srv/vm/disk.img" in denied.summary


def test_quiet_logs_give_no_problem(client: Client, fake_root: Path) -> None:
    context = ctx(client, fake_root)
    assert all(f.severity is Severity.OK for f in memory_pressure(context))
    assert apparmor(context)[0].severity is Severity.OK


def test_hugepage_reservation_refuses_more_than_available(client: Client, fake_root: Path) -> None:
    fix = FixContext(client.host, Path("/dev/kvm"), fake_root)
    with pytest.raises(InvalidState, match="only"):
        hugepages_reserve(fix, {"size_kib": "2048", "pages": "100000"})
    assert "128 hugepages" in hugepages_reserve(fix, {"size_kib": "2048", "pages": "128"})
    assert (fake_root / "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages").read_text() == (
        "128\n"
    )


def test_resume_fix_resumes_only_a_paused_vm(client: Client, fake_root: Path) -> None:
    fix = FixContext(client.host, Path("/dev/kvm"), fake_root)
    guest = client.host.lookup("vkdoc-plain")
    assert "nothing to resume" in vm_resume(fix, {"vm": "vkdoc-plain"})
    guest.suspend()
    assert vm_resume(fix, {"vm": "vkdoc-plain"}) == "VM vkdoc-plain resumed"
    assert guest.state()[0] is VMState.RUNNING


def test_vm_report_of_a_paused_vm_offers_resume(client: Client) -> None:
    guest = client.host.lookup("vkdoc-plain")
    guest.suspend()
    report = client.doctor.vm_report("vkdoc-plain")
    paused = [f for f in report.findings if f.check == "vm.paused"]
    assert paused and paused[0].fix_action == "vm-resume"
    results = client.doctor.apply_fixes(report.findings)
    assert [r.applied for r in results] == [True]
    assert guest.state()[0] is VMState.RUNNING


def test_one_failing_check_does_not_hide_the_others(client: Client, fake_root: Path) -> None:
    from virtkit.doctor import service

    def broken(context: HostContext) -> list[Finding]:
        raise RuntimeError("boom")

    found = service._run([broken, thp_and_ksm], ctx(client, fake_root), "host")
    assert found[0].check == "doctor.broken" and "boom" in found[0].summary
    assert found[1].check == "memory.thp-ksm"


@pytest.mark.parametrize(
    ("line", "check", "detail"),
    [
        (
            "2026-12-07 qemu-system-x86_64: Could not open '/var/lib/libvirt/images/a.qcow2': "
            "Permission denied",
            "start.permission",
            "/var/lib/libvirt/images/a.qcow2",
        ),
        (
            "qemu-system-x86_64: -vnc 127.0.0.1:0: Failed to bind socket: Address already in "
            "use 5900",
            "start.port-in-use",
            "5900",
        ),
        (
            "Could not access KVM kernel module: Permission denied",
            "start.kvm-denied",
            "Permission denied",
        ),
        (
            "error: Cannot access storage file '/srv/gone.qcow2': No such file or directory",
            "start.missing-file",
            "/srv/gone.qcow2",
        ),
    ],
)
def test_log_patterns(line: str, check: str, detail: str) -> None:
    found = {m.check: m for m in match(f"noise\n{line}\nmore noise\n")}
    assert check in found, found
    assert detail in found[check].cause and found[check].fix


def test_report_worst_and_problems() -> None:
    ok = Finding(check="a", severity=Severity.OK, subject="host", summary="fine")
    bad = Finding(check="b", severity=Severity.WARNING, subject="host", summary="meh")
    report = DoctorReport(uri="x", subject="host", checked_at=0, findings=[ok, bad])
    assert report.worst is Severity.WARNING and report.problems() == [bad]


def test_cli_json_and_exit_code(tmp_path: Path) -> None:
    node = tmp_path / "node.xml"
    node.write_text(NODE)
    env = {
        **os.environ,
        "VIRTKIT_CONFIG": "/nonexistent",
        "VIRTKIT_CACHE_DIR": str(tmp_path / "cache"),
        "VIRTKIT_STATE_DIR": str(tmp_path / "state"),
    }
    done = subprocess.run(
        [VIRTKIT, "-c", f"test://{node}", "doctor", "vm", "vkdoc-plain", "--json", "--all"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    report = json.loads(done.stdout)
    assert report["subject"] == "vm vkdoc-plain" and report["worst"] in ("ok", "info")
    assert done.returncode == 0, done.stderr
    refused = subprocess.run(
        [VIRTKIT, "-c", f"test://{node}", "doctor", "--fix"],
        env=env,
        input="n\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    # the host report has fixable findings (the test pool's directory): asked, refused
    assert "apply these fixes?" in refused.stdout and "aborted" in refused.stderr.lower()


def test_api_doctor_routes_permissions_and_fix(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from tests.unit.apiclients import token_clients
    from virtkit.api.app import create_app

    node = tmp_path / "node.xml"
    node.write_text(NODE)
    settings = Settings(
        uri=f"test://{node}", state_dir=tmp_path / "state", cache_dir=tmp_path / "cache"
    )
    client = Client(settings=settings)
    app = create_app(settings, client=client)
    users: dict[str, TestClient] = token_clients(
        client, app, (("ada", "admin"), ("vera", "viewer"))
    )
    ada, vera = users["ada"], users["vera"]
    with ada:
        host = vera.get("/api/v1/host/doctor")
        assert host.status_code == 200, host.text
        assert any(f["check"] == "kvm.usable" for f in host.json()["findings"])
        guest = client.host.lookup("vkdoc-plain")
        guest.suspend()
        report = vera.get("/api/v1/vms/vkdoc-plain/doctor").json()
        assert any(f["check"] == "vm.paused" and f["fixable"] for f in report["findings"])
        assert (
            vera.post("/api/v1/vms/vkdoc-plain/doctor/fix", json={"confirm": True}).status_code
            == 403
        )
        unconfirmed = ada.post("/api/v1/vms/vkdoc-plain/doctor/fix", json={"confirm": False})
        assert unconfirmed.status_code == 422
        assert unconfirmed.json()["code"] == "confirmation_required"
        assert guest.state()[0] is VMState.PAUSED
        done = ada.post(
            "/api/v1/vms/vkdoc-plain/doctor/fix", json={"confirm": True, "checks": ["vm.paused"]}
        )
        assert done.status_code == 200, done.text
        assert done.json()["fixes"] == [
            {"check": "vm.paused", "subject": "vm vkdoc-plain", "applied": True,
             "message": "VM vkdoc-plain resumed"}
        ]  # fmt: skip
        assert guest.state()[0] is VMState.RUNNING
        assert vera.get("/api/v1/vms/nosuchvm/doctor").status_code == 404
    client.close()
