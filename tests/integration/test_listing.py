"""`vm list` from bulk calls, with tags from virtkit's copy: right after another tool (virsh)
changes a domain, for a long-lived client (events) and for the CLI (a new process)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.conftest import Bed, run_cli, tiny_spec, wait_for_text
from virtkit import Client
from virtkit.specs import VMState, VMSummary, parse_vm_spec
from virtkit.xml.base import VIRTKIT_NS

pytestmark = pytest.mark.integration


def virsh(bed: Bed, *args: str) -> str:
    done = subprocess.run(
        ["virsh", "-c", bed.uri, *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def row(vk: Client, name: str) -> VMSummary:
    return next(v for v in vk.vms.list() if v.name == name)


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    """For what arrives by libvirt's events (delivered on their own thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


def cli_row(bed: Bed, name: str, *flags: str) -> dict[str, object]:
    done = run_cli(bed, "vm", "list", "--json", *flags)
    assert done.returncode == 0, done.stderr
    return next(v for v in json.loads(done.stdout) if v["name"] == name)


def test_list_stays_right_when_virsh_changes_a_domain(bed: Bed, vm_name: str, vk: Client) -> None:
    vk.vms.create(parse_vm_spec(tiny_spec(bed, vm_name, tags=["web", "blue"])))
    first = row(vk, vm_name)
    assert first.state == VMState.SHUTOFF and first.tags == ["web", "blue"]
    assert first.vcpus == 1 and first.memory == 128 * 1024 * 1024 and first.persistent
    assert not first.autostart and first.uptime is None
    assert cli_row(bed, vm_name)["tags"] == ["web", "blue"]

    # state, vCPUs, memory, autostart come from bulk calls on every listing
    virsh(bed, "setmem", vm_name, "96M", "--config")
    assert row(vk, vm_name).memory == 96 * 1024 * 1024
    virsh(bed, "autostart", vm_name)
    virsh(bed, "start", vm_name)
    wait_for_text(bed, vm_name)
    now = row(vk, vm_name)
    assert now.state == VMState.RUNNING and now.autostart
    assert now.uptime is not None and now.uptime >= 0
    cli = cli_row(bed, vm_name)
    assert cli["state"] == "running" and cli["autostart"] is True
    virsh(bed, "destroy", vm_name)
    virsh(bed, "autostart", vm_name, "--disable")
    assert row(vk, vm_name).state == VMState.SHUTOFF and not row(vk, vm_name).autostart

    # virtkit's metadata rewritten in place by virsh: the long-lived client hears the event
    virsh(
        bed, "metadata", vm_name, "--config", "--uri", VIRTKIT_NS, "--key", "vk",
        "--set", "<virtkit version='0'><tags><tag>db</tag></tags></virtkit>",
    )  # fmt: skip
    assert eventually(lambda: row(vk, vm_name).tags == ["db"]), row(vk, vm_name)
    # ... and a new process reads the copy the long-lived client kept
    assert cli_row(bed, vm_name)["tags"] == ["db"]

    # the same name defined anew by virsh (a new UUID) is read afresh, even by a new process
    old_uuid = row(vk, vm_name).uuid
    xml = virsh(bed, "dumpxml", vm_name, "--inactive")
    virsh(bed, "undefine", vm_name)
    assert eventually(lambda: all(v.name != vm_name for v in vk.vms.list()))
    xml = xml.replace(f"<uuid>{old_uuid}</uuid>", "").replace(">db</", ">new</")
    defined = subprocess.run(
        ["virsh", "-c", bed.uri, "define", "/dev/stdin"],
        input=xml, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert defined.returncode == 0, defined.stderr
    assert cli_row(bed, vm_name)["tags"] == ["new"]
    assert eventually(lambda: row(vk, vm_name).tags == ["new"])
    assert row(vk, vm_name).uuid != old_uuid


def test_list_refresh_reads_each_domain(bed: Bed, vm_name: str) -> None:
    """With no virtkit process listening, an in-place rewrite is seen with --refresh (and by
    vm show, which reads the whole definition)."""
    done = run_cli(bed, "vm", "create", vm_name, "--memory", "128M", "--kernel", bed.guest.kernel,
                   "--initrd", bed.guest.initrd, "--tag", "one")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert cli_row(bed, vm_name)["tags"] == ["one"]
    virsh(
        bed, "metadata", vm_name, "--config", "--uri", VIRTKIT_NS, "--key", "vk",
        "--set", "<virtkit version='0'><tags><tag>two</tag></tags></virtkit>",
    )  # fmt: skip
    assert cli_row(bed, vm_name, "--refresh")["tags"] == ["two"]
    assert cli_row(bed, vm_name)["tags"] == ["two"]  # the refreshed copy is kept
