"""Snapshots on a real guest: data written through its serial console comes back on revert, for
internal and external snapshots, running and stopped; deleting any snapshot keeps every other
one reverting to its own data."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Bed, run_cli, tiny_spec, wait_for_text
from tests.integration.guestshell import GuestShell
from virtkit import Client
from virtkit.errors import InvalidInput, InvalidState, NotFound
from virtkit.specs import parse_vm_spec

BLOCK = 100  # where the tests' data goes on /dev/vda (4 KiB blocks)


class SnapVM:
    """One tiny guest with a qcow2 disk, shared by a module's tests."""

    def __init__(self, bed: Bed, client: Client, name: str) -> None:
        self.bed, self.client, self.name = bed, client, name
        self.shell = GuestShell(client, name)
        self.boots = 0

    def boot(self) -> None:
        self.shell.close()
        self.client.vms.start(self.name)
        self.boots += 1
        wait_for_text(self.bed, self.name, count=self.boots)

    def stop(self) -> None:
        self.shell.close()
        self.client.vms.stop(self.name)

    def state(self) -> str:
        return self.client.vms.get(self.name).state.value

    def files(self) -> set[str]:
        return {p.name for p in self.bed.pool_dir.glob(f"{self.name}*") if "serial" not in p.name}

    def clear_snapshots(self) -> None:
        """Delete every snapshot, newest first (each delete merges)."""
        for snap in reversed(self.client.snapshots.list(self.name)):
            self.client.snapshots.delete(self.name, snap.name)


def _make(bed: Bed, client: Client, prefix: str) -> SnapVM:
    name = prefix + secrets.token_hex(3)
    client.vms.create(parse_vm_spec(tiny_spec(bed, name, disks=[{"size": "16M"}])))
    vm = SnapVM(bed, client, name)
    vm.boot()
    return vm


def _remove(bed: Bed, client: Client, vm: SnapVM) -> None:
    vm.shell.close()
    try:
        client.vms.delete(vm.name, force=True, remove_storage=True)
    except NotFound:
        pass
    for leftover in bed.pool_dir.glob(f"{vm.name}*"):
        leftover.unlink()


@pytest.fixture(scope="module")
def snapvm(bed: Bed) -> Iterator[SnapVM]:
    client = bed.client()
    vm = _make(bed, client, "vktest-snap-")
    yield vm
    _remove(bed, client, vm)
    client.close()


@pytest.fixture
def ext(snapvm: SnapVM) -> Iterator[SnapVM]:
    """The shared VM running, with no snapshots before and after the test."""
    if snapvm.state() != "running":
        snapvm.boot()
    yield snapvm
    if snapvm.state() == "shutoff":
        snapvm.boot()
    snapvm.clear_snapshots()


def test_external_snapshot_with_memory_reverts_the_running_guest(ext: SnapVM) -> None:
    snaps = ext.client.snapshots
    ext.shell.write(BLOCK, "alpha")
    made = snaps.create(ext.name, "s1")
    assert made.snapshot.kind == "external" and made.snapshot.memory
    assert made.snapshot.state == "running"
    roles = {f.role for f in made.snapshot.files}
    assert roles == {"data", "memory"}
    ext.shell.write(BLOCK, "beta")
    assert ext.shell.read(BLOCK) == "beta"

    plan = snaps.revert_plan(ext.name, "s1")
    assert plan.state_after == "running"
    assert any("changes since the newest snapshot" in line for line in plan.loses)
    lost = plan.removes
    snaps.revert(ext.name, "s1")
    assert ext.state() == "running"
    ext.shell.close()
    assert ext.shell.read(BLOCK) == "alpha"  # the memory came back too: no new boot
    assert not any(os.path.exists(p) for p in lost)
    [view] = snaps.list(ext.name)
    assert view.current

    # deleting the only snapshot merges the running VM's active layer down, with a pivot
    ext.shell.write(BLOCK, "gamma")
    plan = snaps.delete_plan(ext.name, "s1")
    assert "pivot" in plan.merges[0]
    snaps.delete(ext.name, "s1")
    assert snaps.list(ext.name) == []
    assert ext.shell.read(BLOCK) == "gamma"
    [chain] = [c for c in snaps.chain(ext.name) if c.target == "vda"]
    assert len(chain.layers) == 1  # back on the VM's own disk
