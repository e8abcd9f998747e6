"""A real VM's whole life, through the CLI, against a private libvirtd and a QEMU guest."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import VIRTKIT, Bed, console_log, run_cli, tiny_spec, wait_for_text
from virtkit import Client, VMState
from virtkit.errors import InvalidState, Timeout
from virtkit.services.tinyguest import BOOT_MARKER, POWEROFF_MARKER
from virtkit.specs import MiB, parse_vm_spec

pytestmark = pytest.mark.integration


def test_full_lifecycle_through_the_cli(bed: Bed, vm_name: str) -> None:
    g = bed.guest
    created = run_cli(
        bed,
        "vm",
        "create",
        vm_name,
        "--memory",
        "128M",
        "--kernel",
        g.kernel,
        "--initrd",
        g.initrd,
        "--cmdline",
        g.cmdline,
        "--disk",
        "64M",
        "--tag",
        "lifecycle",
        "--description",
        "a test VM",
        "--start",
        "--json",
    )
    assert created.returncode == 0, created.stderr
    info = json.loads(created.stdout)
    assert info["state"] == "running"
    assert info["domain_type"] in ("kvm", "qemu")
    assert info["tags"] == ["lifecycle"]
    disk_path = info["disks"][0]["source"]
    assert info["disks"][0]["owned"] and disk_path.startswith(str(bed.pool_dir))
    wait_for_text(bed, vm_name)

    listed = json.loads(run_cli(bed, "vm", "list", "--json").stdout)
    row = next(v for v in listed if v["name"] == vm_name)
    assert row["state"] == "running" and row["vcpus"] == 1 and row["memory"] == 128 * MiB
    assert row["uptime"] is not None and row["uptime"] >= 0
    table = run_cli(bed, "vm", "list").stdout
    assert vm_name in table and "running" in table

    # pause and resume: the guest's CPUs stop and go on
    assert run_cli(bed, "vm", "pause", vm_name).returncode == 0
    assert json.loads(run_cli(bed, "vm", "show", vm_name, "--json").stdout)["state"] == "paused"
    assert run_cli(bed, "vm", "resume", vm_name).returncode == 0
    assert json.loads(run_cli(bed, "vm", "show", vm_name, "--json").stdout)["state"] == "running"

    # reboot through ACPI: the guest powers off on the button, libvirt restarts it
    assert run_cli(bed, "vm", "reboot", vm_name).returncode == 0
    wait_for_text(bed, vm_name, BOOT_MARKER, count=2)
    assert console_log(bed, vm_name).count(POWEROFF_MARKER) == 1

    # reset: a hard reset boots the kernel once more
    assert run_cli(bed, "vm", "reset", vm_name).returncode == 0
    wait_for_text(bed, vm_name, BOOT_MARKER, count=3)

    # graceful shutdown: the guest sees the power button and powers itself off
    down = run_cli(bed, "vm", "shutdown", vm_name, "--timeout", "30")
    assert down.returncode == 0, down.stderr
    assert "shut down" in down.stdout and "powered off" not in down.stdout
    assert console_log(bed, vm_name).count(POWEROFF_MARKER) == 2

    # set memory and vCPUs while stopped: persistent, seen at the next start
    changed = run_cli(bed, "vm", "set", vm_name, "--vcpus", "2", "--memory", "160M")
    assert changed.returncode == 0, changed.stderr
    assert "from the next start" in changed.stdout
    assert run_cli(bed, "vm", "start", vm_name).returncode == 0
    wait_for_text(bed, vm_name)
    shown = json.loads(run_cli(bed, "vm", "show", vm_name, "--json").stdout)
    assert shown["vcpus"] == 2 and shown["memory"] == 160 * MiB

    # live change within the running limits: memory through the balloon, now and persistent
    live = run_cli(bed, "vm", "set", vm_name, "--memory", "144M")
    assert live.returncode == 0 and "now" in live.stdout, live.stdout + live.stderr

    # delete refuses a running VM; --force powers it off; storage stays without the flag
    refused = run_cli(bed, "vm", "delete", vm_name)
    assert refused.returncode == 1 and "running" in refused.stderr
    deleted = run_cli(bed, "vm", "delete", vm_name, "--force")
    assert deleted.returncode == 0, deleted.stderr
    assert "kept" in deleted.stdout and disk_path in deleted.stdout
    assert (bed.pool_dir / disk_path.rsplit("/", 1)[1]).exists()
    assert run_cli(bed, "vm", "show", vm_name).returncode == 1


def test_delete_with_storage_leaves_no_files(bed: Bed, vm_name: str, vk: Client) -> None:
    vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name, disks=[{"size": "32M"}, {"size": "16M"}])))
    before = sorted(p.name for p in bed.pool_dir.glob(f"{vm_name}-*"))
    assert before == [f"{vm_name}-disk0.qcow2", f"{vm_name}-disk1.qcow2"]
    vk.vms.start(vm_name)
    wait_for_text(bed, vm_name)
    log = bed.log_dir / f"{vm_name}-serial0.log"
    assert log.exists()
    result = run_cli(bed, "vm", "delete", vm_name, "--force", "--remove-storage", "--yes")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("removed") == 3  # two disks and the console log
    assert list(bed.pool_dir.glob(f"{vm_name}-*")) == []
    assert not log.exists()
    assert not vk.host.exists(vm_name)


def test_delete_storage_asks_without_yes(bed: Bed, vm_name: str, vk: Client) -> None:
    vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name, disks=[{"size": "16M"}])))
    result = run_cli(bed, "vm", "delete", vm_name, "--remove-storage")
    assert result.returncode == 1
    assert "permanently deletes" in result.stderr and f"{vm_name}-disk0.qcow2" in result.stderr
    assert vk.host.exists(vm_name)
    assert (bed.pool_dir / f"{vm_name}-disk0.qcow2").exists()


def test_existing_image_is_attached_not_owned(
    bed: Bed, vm_name: str, vk: Client, tmp_path: object
) -> None:
    image = bed.daemon.shared / f"{vm_name}-external.raw"
    image.write_bytes(b"\0" * 1024 * 1024)
    try:
        info = vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name, disks=[{"path": str(image)}])))
        assert info.disks[0].format == "raw" and not info.disks[0].owned
        result = vk.vms.delete(vm_name, remove_storage=True)
        assert result.removed == [] and image.exists()
        assert "not created by virtkit" in result.kept[0]
    finally:
        image.unlink()


def test_shutdown_timeout_and_force(bed: Bed, vm_name: str, vk: Client) -> None:
    spec = tiny_spec(bed, vm_name, cmdline=bed.guest.cmdline + " virtkit.ignore_acpi")
    vk.vms.create(parse_vm_spec(spec), start=True)
    wait_for_text(bed, vm_name)
    with pytest.raises(Timeout, match="did not shut down within 2 s"):
        vk.vms.shutdown(vm_name, timeout=2)
    assert vk.vms.state(vm_name) == VMState.RUNNING
    forced = run_cli(bed, "vm", "shutdown", vm_name, "--timeout", "1", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "powered off" in forced.stdout
    assert vk.vms.state(vm_name) == VMState.SHUTOFF


def test_stop_force_and_state_errors(bed: Bed, vm_name: str, vk: Client) -> None:
    vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name)), start=True)
    assert run_cli(bed, "vm", "stop", vm_name).returncode == 2  # --force is required
    assert run_cli(bed, "vm", "stop", vm_name, "--force").returncode == 0
    assert vk.vms.state(vm_name) == VMState.SHUTOFF
    for action in ("pause", "resume", "reboot", "reset"):
        with pytest.raises(InvalidState, match="shut off"):
            getattr(vk.vms, action)(vm_name)


def test_autostart(bed: Bed, vm_name: str, vk: Client) -> None:
    vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name, autostart=True)))
    assert vk.vms.get(vm_name).autostart
    assert run_cli(bed, "vm", "autostart", vm_name, "off").returncode == 0
    assert not vk.vms.get(vm_name).autostart
    assert run_cli(bed, "vm", "autostart", vm_name, "on").returncode == 0
    assert vk.vms.get(vm_name).autostart


def test_live_vcpu_limit_is_explained(bed: Bed, vm_name: str, vk: Client) -> None:
    vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name)), start=True)
    wait_for_text(bed, vm_name)
    assert vk.vms.get(vm_name).max_vcpus == 2  # a new VM: room to hot-plug up to twice its count
    assert vk.vms.set(vm_name, vcpus=2).changes == ["vCPUs: 2 now and from the next start"]
    assert vk.vms.get(vm_name).vcpus == 2
    with pytest.raises(InvalidState) as refused:
        vk.vms.set(vm_name, vcpus=3)
    assert refused.value.code == "vcpus_over_maximum"
    assert f"virtkit vm set {vm_name} --max-vcpus 3 --vcpus 3" in refused.value.message
    cli = run_cli(bed, "vm", "set", vm_name, "--vcpus", "3")
    assert cli.returncode == 1 and "runs with its maximum of 2 vCPUs" in cli.stderr
    changed = run_cli(bed, "vm", "set", vm_name, "--max-vcpus", "4", "--vcpus", "3")
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.splitlines() == [
        "vCPU maximum: 4 from the next start",
        "vCPUs: 3 from the next start (the running VM was started with at most 2)",
    ]
    xml = vk.vms.xml(vm_name, inactive=True)
    assert 'current="3">4</vcpu>' in xml or "current='3'>4</vcpu>" in xml, xml


def test_console_log_from_the_file_and_live_from_the_stream(
    bed: Bed, vm_name: str, vk: Client
) -> None:
    vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name)), start=True)
    wait_for_text(bed, vm_name)
    from_file = run_cli(bed, "vm", "console-log", vm_name)
    assert from_file.returncode == 0, from_file.stderr
    assert BOOT_MARKER in from_file.stdout and "(the whole history)" in from_file.stderr
    # the stream (what remote hosts get): only what the guest prints from now on
    live = subprocess.Popen(
        [VIRTKIT, "vm", "console-log", vm_name, "--source", "stream", "--timeout", "60",
         "--idle", "20"],
        env=bed.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert live.stderr is not None
        first = live.stderr.readline()  # printed once the stream is open
        assert "live console" in first, first
        vk.vms.reset(vm_name)  # the guest boots again and prints its marker, live
        out, err = live.communicate(timeout=90)
        err = first + err
    finally:
        if live.poll() is None:
            live.kill()
    assert live.returncode == 0, err
    assert "live console" in err and "from now on" in err
    assert out.count(BOOT_MARKER) == 1  # the second boot only, not the history
    quiet = run_cli(bed, "vm", "console-log", vm_name, "--source", "stream", "--idle", "1")
    assert quiet.returncode == 0 and "until 1 s without output" in quiet.stderr
    vk.vms.stop(vm_name)
    refused = run_cli(bed, "vm", "console-log", vm_name, "--source", "stream")
    assert refused.returncode == 1 and "not running" in refused.stderr
