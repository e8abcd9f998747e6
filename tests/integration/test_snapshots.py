"""Snapshots on a real guest: data written through its serial console comes back on revert, for
internal and external snapshots, running and stopped; deleting any snapshot keeps every other
one reverting to its own data."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
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

    def boot(self) -> None:
        self.shell.close()
        self.client.vms.start(self.name)
        self.booted()

    def booted(self) -> None:
        """Wait for the boot marker (each start begins a new console log)."""
        self.shell.close()
        wait_for_text(self.bed, self.name)

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
    with contextlib.suppress(NotFound):
        client.vms.delete(vm.name, force=True, remove_storage=True)
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


def test_disk_only_snapshot_of_a_running_guest_says_it_was_not_quiesced(ext: SnapVM) -> None:
    snaps = ext.client.snapshots
    ext.shell.write(BLOCK, "crash1")
    made = snaps.create(ext.name, "d1", memory=False)
    assert made.snapshot.state == "disk-snapshot" and not made.snapshot.memory
    assert made.quiesced is False
    assert any(note.startswith("not quiesced") for note in made.notes), made.notes
    ext.shell.write(BLOCK, "crash2")
    plan = snaps.revert_plan(ext.name, "d1")
    assert plan.state_after == "shutoff"  # no memory: the VM is off until started
    assert any("running state" in line for line in plan.loses)
    snaps.revert(ext.name, "d1", start=True)
    ext.booted()
    assert ext.shell.read(BLOCK) == "crash1"


def test_three_deep_chain_delete_the_middle_and_every_other_snapshot_still_reverts(
    ext: SnapVM,
) -> None:
    snaps = ext.client.snapshots
    for i, word in enumerate(("one", "two", "three"), start=1):
        ext.shell.write(BLOCK, word)
        snaps.create(ext.name, f"c{i}", memory=False)
    ext.shell.write(BLOCK, "four")
    tree = {s.name: s for s in snaps.list(ext.name)}
    assert tree["c2"].parent == "c1" and tree["c2"].children == ["c3"]
    assert tree["c3"].current

    plan = snaps.delete_plan(ext.name, "c2")
    assert len(plan.merges) == 1 and "block commit in the running VM" in plan.merges[0]
    snaps.delete(ext.name, "c2")
    tree = {s.name: s for s in snaps.list(ext.name)}
    assert set(tree) == {"c1", "c3"} and tree["c3"].parent == "c1"
    assert ext.shell.read(BLOCK) == "four"  # the running guest did not notice
    [chain] = [c for c in snaps.chain(ext.name) if c.target == "vda"]
    assert [layer.snapshot for layer in chain.layers] == [None, "c3", "c1"]

    for name, word in (("c3", "three"), ("c1", "one"), ("c3", "three")):
        snaps.revert(ext.name, name, start=True)
        ext.booted()
        assert ext.shell.read(BLOCK) == word, name


def test_a_branch_point_is_not_merged_and_nothing_changes(ext: SnapVM) -> None:
    snaps = ext.client.snapshots
    ext.shell.write(BLOCK, "base")
    snaps.create(ext.name, "b1", memory=False)
    ext.shell.write(BLOCK, "branch")
    snaps.create(ext.name, "b2", memory=False)
    snaps.revert(ext.name, "b1")  # b1's data now has two branches: b2's and the new one
    before = ext.files()
    with pytest.raises(InvalidState) as refused:
        snaps.delete(ext.name, "b1")
    assert refused.value.code == "snapshot_branch_point"
    assert ext.files() == before
    # the other branch's snapshot goes first (nothing builds on its data), then b1 merges
    snaps.delete(ext.name, "b2")
    snaps.delete(ext.name, "b1")
    assert snaps.list(ext.name) == []
    ext.boot()
    assert ext.shell.read(BLOCK) == "base"


def test_stopped_vm_external_snapshot_reverts_and_mixing_kinds_is_refused(ext: SnapVM) -> None:
    snaps = ext.client.snapshots
    ext.shell.write(BLOCK, "cold")
    ext.stop()
    made = snaps.create(ext.name, "off1")
    assert made.snapshot.state == "shutoff" and not made.snapshot.memory
    with pytest.raises(InvalidInput) as mixed:
        snaps.create(ext.name, "int1", kind="internal")
    assert mixed.value.code == "snapshot_kinds_mixed"
    ext.boot()
    ext.shell.write(BLOCK, "warm")
    ext.stop()
    snaps.revert(ext.name, "off1")
    assert ext.state() == "shutoff"
    ext.boot()
    assert ext.shell.read(BLOCK) == "cold"
    # delete while stopped: qemu-img merges the active layer down
    ext.shell.write(BLOCK, "after")
    ext.stop()
    assert "qemu-img commit" in snaps.delete_plan(ext.name, "off1").merges[0]
    snaps.delete(ext.name, "off1")
    ext.boot()
    assert ext.shell.read(BLOCK) == "after"


def test_internal_snapshots_running_and_stopped(ext: SnapVM) -> None:
    snaps = ext.client.snapshots
    ext.shell.write(BLOCK, "inside1")
    made = snaps.create(ext.name, "i1", kind="internal")
    assert made.snapshot.kind == "internal" and made.snapshot.memory
    assert made.snapshot.files == []
    ext.shell.write(BLOCK, "inside2")
    snaps.revert(ext.name, "i1")
    assert ext.state() == "running"
    ext.shell.close()
    assert ext.shell.read(BLOCK) == "inside1"

    ext.stop()
    made = snaps.create(ext.name, "i2", kind="internal")
    assert made.snapshot.parent == "i1" and made.snapshot.state == "shutoff"
    ext.boot()
    ext.shell.write(BLOCK, "inside3")
    ext.stop()
    snaps.revert(ext.name, "i2")
    snaps.delete(ext.name, "i1")  # in place; i2 still reverts
    ext.boot()
    assert ext.shell.read(BLOCK) == "inside1"
    with pytest.raises(InvalidInput) as mixed:
        snaps.create(ext.name, "e1")
    assert mixed.value.code == "snapshot_kinds_mixed"


def test_deleting_a_vm_removes_its_snapshot_files(bed: Bed, vk: Client) -> None:
    vm = _make(bed, vk, "vktest-snapdel-")
    try:
        vk.snapshots.create(vm.name, "m1")  # with memory
        vk.snapshots.create(vm.name, "m2", memory=False)
        made = vm.files()
        assert len(made) == 4, made  # the disk, two overlays, one memory file
        listed = set(vk.vms.storage_to_remove(vm.name))
        assert {Path(p).name for p in listed} >= made
        result = vk.vms.delete(vm.name, force=True, remove_storage=True)
        assert {Path(p).name for p in result.removed} >= made, result
        assert vm.files() == set()
    finally:
        _remove(bed, vk, vm)


def test_snapshot_cli_tree_and_revert_asks_first(bed: Bed, ext: SnapVM) -> None:
    assert run_cli(bed, "vm", "snapshot", "create", ext.name, "k1", "--disk-only").returncode == 0
    assert run_cli(bed, "vm", "snapshot", "create", ext.name, "k2", "--disk-only").returncode == 0
    listing = run_cli(bed, "vm", "snapshot", "list", ext.name)
    assert listing.returncode == 0, listing.stderr
    assert "k1" in listing.stdout and "└─ k2" in listing.stdout and "*" in listing.stdout
    refused = run_cli(bed, "vm", "snapshot", "revert", ext.name, "k1", input="n\n")
    assert refused.returncode != 0 and "loses" in refused.stdout + refused.stderr
    assert ext.state() == "running"
    chain = run_cli(bed, "vm", "disk", "chain", ext.name)
    assert chain.returncode == 0 and "k1" in chain.stdout, chain.stderr
    deleted = run_cli(bed, "vm", "snapshot", "delete", ext.name, "k2", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    assert "merge" in deleted.stdout


def test_flatten_copies_the_chain_into_the_running_disk(bed: Bed, vk: Client) -> None:
    name = "vktest-flat-" + secrets.token_hex(3)
    base = bed.pool_dir / f"{name}-base.qcow2"
    top = bed.pool_dir / f"{name}-top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(top)],
        check=True,
    )
    spec = tiny_spec(bed, name, disks=[{"path": str(top), "format": "qcow2"}])
    vk.vms.create(parse_vm_spec(spec))
    vm = SnapVM(bed, vk, name)
    try:
        vm.boot()
        vm.shell.write(BLOCK, "flat")
        vk.snapshots.create(name, "f1", memory=False)
        with pytest.raises(InvalidState) as refused:
            vk.snapshots.flatten(name, "vda")
        assert refused.value.code == "snapshot_needs_chain"
        vk.snapshots.delete(name, "f1")
        [before] = [c for c in vk.snapshots.chain(name) if c.target == "vda"]
        assert [Path(layer.path).name for layer in before.layers] == [top.name, base.name]
        after = vk.snapshots.flatten(name, "vda")
        assert [Path(layer.path).name for layer in after.layers] == [top.name]
        base.unlink()  # nothing reads it any more
        assert vm.shell.read(BLOCK) == "flat"
        vm.stop()
        vm.boot()
        assert vm.shell.read(BLOCK) == "flat"
    finally:
        _remove(bed, vk, vm)
