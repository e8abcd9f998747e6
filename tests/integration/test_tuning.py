"""The tuning advisor against the real private libvirtd and the tiny guest (TCG here): `tune
apply` makes the definition say what the plan says, the pins hold in the running QEMU, the guest
boots tuned, another latency VM is refused the last core, and `tune host` reads this machine."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Bed, run_cli, tiny_spec, wait_for_text
from virtkit import Client
from virtkit.errors import Unsupported
from virtkit.services.tinyguest import BOOT_MARKER
from virtkit.specs import parse_vm_spec
from virtkit.tuning.topology import parse_cpuset


def _pinned(cpumap: tuple[bool, ...]) -> set[int]:
    return {cpu for cpu, on in enumerate(cpumap) if on}


def test_tune_apply_latency_on_a_running_guest(bed: Bed, vm_name: str, vk: Client) -> None:
    spec = tiny_spec(bed, vm_name, disks=[{"size": "16M"}])
    vk.vms.create(parse_vm_spec(spec), start=True)
    wait_for_text(bed, vm_name)

    check = vk.tuning.check(vm_name, "latency")
    assert check.running and check.domain_type == "qemu"
    assert any("TCG" in w for w in check.warnings)  # CPU mode left alone under TCG
    assert not [c for c in check.changes if c.area == "cpu"]
    assert check.diff.startswith("---") and "+    <vcpupin" in check.diff
    topology = vk.tuning.topology()
    assert len(topology.cpus) >= 2

    report = vk.tuning.apply(vm_name, "latency")
    assert report.applied
    outcomes = {c.area: c.outcome for c in report.changes}
    assert outcomes["vcpupin"] == "applied live and at next boot"
    assert outcomes["emulatorpin"] == "applied live and at next boot"
    assert outcomes["numatune"] == "at next boot"
    vcpu_cpus = parse_cpuset(report.vcpu_pins[0])
    emulator = parse_cpuset(report.emulator_cpus or "")
    assert len(vcpu_cpus) == 1 and emulator and not (emulator & vcpu_cpus)

    guest = vk.host.lookup(vm_name)
    # live: QEMU's threads are pinned now
    assert _pinned(guest.handle.vcpuPinInfo(0)[0]) == vcpu_cpus
    assert _pinned(guest.handle.emulatorPinInfo(0)) == emulator
    # persistent: the definition has what the plan says
    config = guest.definition(inactive=True)
    assert config.cputune is not None
    assert config.cputune.vcpu_cpusets() == report.vcpu_pins
    assert parse_cpuset(config.cputune.emulatorpin or "") == emulator
    assert config.iothreads == 1
    assert [parse_cpuset(p.cpuset or "") for p in config.cputune.iothreadpins] == [emulator]
    assert config.numatune is not None
    assert (config.numatune.memory_mode, config.numatune.memory_nodeset) == ("strict", "0")
    backing = config.memory_backing
    assert backing is not None and backing.nosharepages and not backing.locked
    assert config.memballoon is not None and config.memballoon.model == "none"
    disk = next(d for d in config.disks if d.device in (None, "disk"))
    assert disk.driver_discard == "unmap" and disk.driver_io == "io_uring"  # QEMU 7.2
    assert disk.driver_iothread == 1
    assert config.virtkit is not None and config.virtkit.tuning is not None
    assert config.virtkit.tuning.profile == "latency"

    # the guest boots with the tuned definition, and its QEMU starts pinned
    first_id = guest.id
    vk.vms.stop(vm_name)
    vk.vms.start(vm_name)
    assert (
        vk.host.lookup(vm_name).id != first_id
    )  # a new QEMU, which truncated the console log when it started
    wait_for_text(bed, vm_name, BOOT_MARKER)
    wait_for_text(bed, vm_name, "VIRTKIT-BLOCK: [vda]")  # the guest sees the tuned disk
    live = guest.definition()
    assert live.cputune is not None and live.cputune.vcpu_cpusets() == report.vcpu_pins
    assert _pinned(guest.handle.vcpuPinInfo(0)[0]) == vcpu_cpus
    assert _pinned(guest.handle.emulatorPinInfo(0)) == emulator

    # a second check of the tuned VM finds nothing left to do
    again = vk.tuning.check(vm_name, "latency")
    assert [c for c in again.changes if c.when != "manual"] == []


def test_a_second_latency_vm_is_refused_the_last_core(bed: Bed, vm_name: str, vk: Client) -> None:
    first, second = vm_name, vm_name + "-b"
    try:
        vk.vms.create(parse_vm_spec(tiny_spec(bed, first)))
        vk.vms.create(parse_vm_spec(tiny_spec(bed, second)))
        vk.tuning.apply(first, "latency")
        if len(vk.tuning.topology().cores()) > 2:
            pytest.skip("this host has more than 2 cores: the last-core case needs 2")
        with pytest.raises(Unsupported) as err:
            vk.tuning.check(second, "latency")
        assert err.value.code == "tune_no_free_cores"
        # through the CLI: one clear line, exit 1
        proc = run_cli(bed, "tune", "check", second, "--profile", "latency")
        assert proc.returncode == 1 and "free whole core" in proc.stderr
        # density still fits: it floats over what the latency VM does not hold
        first_cpus = parse_cpuset(vk.tuning.check(first, "latency").vcpu_pins[0])
        density = vk.tuning.apply(second, "density")
        assert not (parse_cpuset(density.vcpu_pins[0]) & first_cpus)
    finally:
        vk.vms.delete(second, force=True, remove_storage=True)


def test_tune_cli_check_json_and_apply_needs_yes(bed: Bed, vm_name: str, vk: Client) -> None:
    vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name)))
    proc = run_cli(bed, "tune", "check", vm_name, "--profile", "throughput", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["profile"] == "throughput" and report["diff"]
    assert all(c["reason"] for c in report["changes"])
    refused = run_cli(bed, "tune", "apply", vm_name, "--profile", "throughput")
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert vk.host.lookup(vm_name).definition(inactive=True).cputune is None  # nothing changed
    done = run_cli(bed, "tune", "apply", vm_name, "--profile", "throughput", "--yes")
    assert done.returncode == 0, done.stderr
    assert "at next start" in done.stdout
    assert vk.host.lookup(vm_name).definition(inactive=True).cputune is not None


def test_tune_host_reads_this_machine(bed: Bed) -> None:
    proc = run_cli(bed, "tune", "host", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["profile"] == "virtualization" and not report["applied"]
    names = {k["name"]: k for k in report["knobs"]}
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    assert ("transparent hugepages" in names) == ("[madvise]" not in thp)
    if not list(Path("/sys/devices/system/cpu").glob("cpu0/cpufreq")):
        assert any("cpufreq" in n for n in report["notes"])
    ksm = Path("/sys/kernel/mm/ksm/run").read_text().strip()
    for knob in report["knobs"]:
        assert knob["revert"].startswith("echo ") and knob["path"].startswith("/sys/")
        if knob["name"] == "KSM":
            assert knob["current"] == ksm and knob["revert"] == f"echo {ksm} > {knob['path']}"


def test_tune_host_apply_on_this_machine_and_its_reverts(
    bed: Bed, vm_name: str, vk: Client
) -> None:
    """KSM is the knob this machine lets change (THP is madvise, no cpufreq, no hugepage VM):
    apply, see it written, then put it back with the printed revert commands."""
    vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name)))  # a VM that allows page sharing
    saved = {
        path: path.read_text().strip()
        for path in [
            Path("/sys/kernel/mm/ksm/run"),
            Path("/sys/kernel/mm/transparent_hugepage/enabled"),
            *Path("/sys/kernel/mm/hugepages").glob("hugepages-*/nr_hugepages"),
            *Path("/sys/devices/system/node").glob("node*/hugepages/hugepages-*/nr_hugepages"),
        ]
    }
    try:
        report = vk.tuning.host_apply()
        knobs = {k.name: k for k in report.knobs}
        if saved[Path("/sys/kernel/mm/ksm/run")] == "0":
            ksm = knobs["KSM"]
            assert ksm.applied and ksm.error is None and ksm.wanted == "1"
            assert Path("/sys/kernel/mm/ksm/run").read_text().strip() == "1"
        for knob in report.knobs:
            assert knob.applied, knob.error
            revert = subprocess.run(["sh", "-c", knob.revert], capture_output=True, text=True)
            assert revert.returncode == 0, revert.stderr
            assert Path(knob.path).read_text().split() and knob.current is not None
            assert knob.current in Path(knob.path).read_text()
    finally:
        for path, value in saved.items():
            mode = re.search(r"\[(\w+)\]", value)
            wanted = mode.group(1) if mode else value
            if path.read_text().strip() != value:
                path.write_text(wanted + "\n")
