"""Snapshots of a VM: create, list, show, revert, delete; internal and external.

Internal snapshots live inside the qcow2 files: libvirt takes, reverts and deletes them.

External snapshots put a new overlay on each disk; the file below it, now read-only, holds the
snapshot's data (the disk's source in the snapshot's own ``<domain>``). libvirt 9.0 (Debian 12)
cannot revert them and its delete is limited, so virtkit does both itself, the same way on
every libvirt version (one path, tested):

- **revert** puts a new overlay on the snapshot's data, restores the saved memory when there
  is one, and removes only the abandoned current layer (the unsnapshotted changes, which the
  plan names). Other snapshots' files are never written: the branch they are on stays.
- **delete** merges the one layer that builds on the snapshot's data down into it (a block
  commit in the running VM, the active layer included, the pivot checked; ``qemu-img commit``
  otherwise), points what built on the merged layer at the data file, and re-records the
  snapshots whose data moved. A data file that two branches build on is never merged: that
  delete is refused with the reason, and nothing changes.

A VM's snapshots are all internal or all external: internal snapshots inside the overlays of an
external chain are what made virt-manager's delete lose data (virt-manager#811), so mixing is
refused. External revert and delete read image headers and run ``qemu-img``: they need the VM's
host to be this one.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import functools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from virtkit.backend import snapshots as backend
from virtkit.backend.guest import Guest
from virtkit.backend.host import Host
from virtkit.errors import (
    AlreadyExists,
    BackendError,
    InvalidInput,
    InvalidState,
    NotFound,
    Unsupported,
    VirtkitError,
)
from virtkit.services import qemuimg
from virtkit.services.backing import local_chain, qcow2_backing, same_file
from virtkit.services.transaction import Transaction
from virtkit.services.vmfiles import VMFiles, revert_overlay, snapshot_memory, snapshot_overlay
from virtkit.services.vmstate import describe, lookup
from virtkit.specs.common import validate_name
from virtkit.specs.snapshot import (
    DiskChain,
    DiskChainLayer,
    RevertPlan,
    SnapshotCreated,
    SnapshotDeletePlan,
    SnapshotDiskView,
    SnapshotFile,
    SnapshotKind,
    SnapshotView,
)
from virtkit.specs.states import VMState
from virtkit.xml.domain import Disk, Domain, OwnedDisk
from virtkit.xml.snapshot import DomainSnapshot

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (done, total) of one merge


def writable_disks(dom: Domain) -> list[Disk]:
    """The disks a snapshot covers: writable images (not CD-ROMs, not read-only)."""
    return [
        d
        for d in dom.disks
        if (d.device or "disk") == "disk" and not d.readonly and d.source and d.target_dev
    ]


@dataclass
class _Snap:
    name: str
    parent: str | None
    current: bool
    xml: str
    doc: DomainSnapshot
    frozen: dict[str, str] = field(default_factory=dict)  # target -> the file with its data
    overlays: dict[str, str] = field(default_factory=dict)  # target -> overlay made at creation

    @property
    def kind(self) -> SnapshotKind:
        external = self.doc.memory == "external" or any(
            d.snapshot == "external" for d in self.doc.disks
        )
        return "external" if external else "internal"

    @property
    def memory_file(self) -> str | None:
        return self.doc.memory_file if self.doc.memory == "external" else None


def _load(record: backend.SnapshotRecord) -> _Snap:
    doc = DomainSnapshot.parse(record.xml)
    snap = _Snap(record.name, record.parent, record.current, record.xml, doc)
    dom = doc.domain
    for disk in doc.disks:
        if disk.snapshot != "external" or not disk.name:
            continue
        if disk.source_file:
            snap.overlays[disk.name] = disk.source_file
        source = None
        if dom is not None:
            source = next((d.source for d in dom.disks if d.target_dev == disk.name), None)
        if source:
            snap.frozen[disk.name] = source
    return snap


def _size(path: str) -> int | None:
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return None


@dataclass
class _Layers:
    """Which file builds on which: read from the image headers (the truth QEMU follows)."""

    backing: dict[str, str | None]

    @classmethod
    def read(cls, files: builtins.list[str]) -> _Layers:
        backing: dict[str, str | None] = {}
        for path in files:
            top = same_file(path)
            if top in backing or not os.path.exists(top):
                continue
            chain = [top, *local_chain(top)]
            for upper, lower in zip(chain, [*chain[1:], None], strict=True):
                backing.setdefault(upper, lower)
        return cls(backing)

    def children(self, path: str) -> builtins.list[str]:
        target = same_file(path)
        return sorted(f for f, below in self.backing.items() if below == target)


class SnapshotService:
    def __init__(self, host: Host, files: VMFiles) -> None:
        self.host = host
        self.files = files

    # -- reading ----------------------------------------------------------------------------

    def _snaps(self, guest: Guest) -> builtins.list[_Snap]:
        return [_load(r) for r in backend.list_snapshots(guest)]

    def _find(self, guest: Guest, vm: str, name: str) -> tuple[_Snap, builtins.list[_Snap]]:
        validate_name(name, "snapshot")
        snaps = self._snaps(guest)
        for snap in snaps:
            if snap.name == name:
                return snap, snaps
        raise NotFound(f"VM {vm!r} has no snapshot {name!r}", code="snapshot_not_found")

    def _view(self, vm: str, snap: _Snap, snaps: builtins.list[_Snap]) -> SnapshotView:
        local = self.host.is_local
        disks = [
            SnapshotDiskView(
                target=d.name or "?",
                kind=d.snapshot or "no",
                data=snap.frozen.get(d.name or ""),
            )
            for d in snap.doc.disks
        ]
        files: builtins.list[SnapshotFile] = []
        for path in snap.frozen.values():
            files.append(SnapshotFile(path=path, size=_size(path) if local else None, role="data"))
        if snap.memory_file:
            mem = snap.memory_file
            files.append(SnapshotFile(path=mem, size=_size(mem) if local else None, role="memory"))
        return SnapshotView(
            name=snap.name,
            vm=vm,
            kind=snap.kind,
            state=snap.doc.state or "unknown",
            memory=snap.doc.memory in ("internal", "external"),
            created=snap.doc.creation_time or 0,
            description=snap.doc.description,
            parent=snap.parent,
            children=[s.name for s in snaps if s.parent == snap.name],
            current=snap.current,
            disks=disks,
            files=files,
        )

    def list(self, vm: str) -> builtins.list[SnapshotView]:
        """Every snapshot of the VM, oldest first, each with its parent and children."""
        guest = lookup(self.host, vm)
        snaps = self._snaps(guest)
        return [self._view(vm, s, snaps) for s in snaps]

    def show(self, vm: str, name: str) -> SnapshotView:
        guest = lookup(self.host, vm)
        snap, snaps = self._find(guest, vm, name)
        return self._view(vm, snap, snaps)

    # -- create -----------------------------------------------------------------------------

    def create(
        self,
        vm: str,
        name: str,
        *,
        kind: SnapshotKind = "external",
        memory: bool | None = None,
        description: str | None = None,
        quiesce: bool = True,
    ) -> SnapshotCreated:
        """Take a snapshot of every writable disk at once (atomically). ``memory`` (default:
        when the VM runs) also saves the running state, so a revert resumes it; a disk-only
        snapshot of a running VM is quiesced through the guest agent when one answers."""
        validate_name(name, "snapshot")
        guest = lookup(self.host, vm)
        state = guest.state()[0]
        running = state in (VMState.RUNNING, VMState.PAUSED)
        if memory is None:
            memory = running
        if kind == "internal" and running and not memory:
            raise InvalidInput(
                f"VM {vm!r} is running: an internal snapshot of a running VM always saves its "
                "memory; take an external disk-only snapshot instead",
                code="snapshot_needs_memory",
            )
        if memory and not running:
            raise InvalidState(
                f"VM {vm!r} is {describe(state)}: there is no memory to save; take a "
                "disk snapshot (without --memory)",
                code="vm_not_running",
            )
        snaps = self._snaps(guest)
        if any(s.name == name for s in snaps):
            raise AlreadyExists(
                f"VM {vm!r} already has a snapshot {name!r}", code="snapshot_exists"
            )
        other = {s.kind for s in snaps} - {kind}
        if other:
            raise InvalidInput(
                f"VM {vm!r} has {other.pop()} snapshots: virtkit does not mix internal and "
                f"external snapshots on one VM (internal snapshots stored inside an external "
                "chain's overlays are how deleting one loses data); delete them first, or "
                f"take a {'internal' if kind == 'external' else 'external'} snapshot",
                code="snapshot_kinds_mixed",
            )
        config = guest.config()
        disks = writable_disks(guest.definition() if running else config)
        if not disks:
            raise InvalidInput(f"VM {vm!r} has no writable disk to snapshot", code="no_disks")
        doc = DomainSnapshot()
        doc.name = name
        if description:
            doc.description = description
        notes: builtins.list[str] = []
        if kind == "internal":
            made = self._internal_doc(vm, doc, config, disks, memory)
        else:
            made = self._external_doc(vm, doc, config, disks, memory)
        quiesced: bool | None = None
        disk_only = not memory
        try:
            if disk_only and running and quiesce and kind == "external":
                quiesced = self._create_quiesced(guest, doc, notes)
            else:
                backend.create_snapshot(
                    guest, doc.to_xml(), disk_only=disk_only and kind == "external"
                )
        except VirtkitError:
            for path in made:  # ATOMIC: libvirt undid its part; a stray file of ours goes
                _remove_file(path)
            raise
        if made:
            self._own(guest, add=made)
        self._refresh_pool()
        snap, snaps = self._find(guest, vm, name)
        log.info("snapshot %s of VM %s taken (%s)", name, vm, kind)
        return SnapshotCreated(snapshot=self._view(vm, snap, snaps), quiesced=quiesced, notes=notes)

    def _internal_doc(
        self, vm: str, doc: DomainSnapshot, config: Domain, disks: builtins.list[Disk], memory: bool
    ) -> builtins.list[str]:
        raw = [d.target_dev for d in disks if (d.driver_type or "raw") != "qcow2"]
        if raw:
            raise InvalidInput(
                f"VM {vm!r}: disk {', '.join(str(t) for t in raw)} is not qcow2, and only qcow2 "
                "holds internal snapshots; take an external snapshot (--kind external)",
                code="snapshot_needs_qcow2",
            )
        doc.memory = "internal" if memory else "no"
        covered = {d.target_dev for d in disks}
        for disk in config.disks:
            if disk.target_dev:
                doc.add_disk(disk.target_dev, "internal" if disk.target_dev in covered else "no")
        return []

    def _external_doc(
        self, vm: str, doc: DomainSnapshot, config: Domain, disks: builtins.list[Disk], memory: bool
    ) -> builtins.list[str]:
        made: builtins.list[str] = []
        name = doc.name or ""
        for disk in disks:
            directory = os.path.dirname(disk.source or "") or str(self.files.pool_path)
            path = os.path.join(directory, snapshot_overlay(vm, disk.target_dev or "", name))
            if os.path.exists(path) if self.host.is_local else False:
                raise AlreadyExists(
                    f"{path} exists already: remove it or name the snapshot differently",
                    code="snapshot_file_exists",
                )
            doc.add_disk(disk.target_dev or "", "external", file=path)
            made.append(path)
        covered = {d.target_dev for d in disks}
        for disk in config.disks:
            if disk.target_dev and disk.target_dev not in covered:
                doc.add_disk(disk.target_dev, "no")
        if memory:
            directory = os.path.dirname(made[0])
            mem = os.path.join(directory, snapshot_memory(vm, name))
            doc.memory = "external"
            doc.memory_file = mem
            made.append(mem)
        else:
            doc.memory = "no"
        return made

    def _create_quiesced(
        self, guest: Guest, doc: DomainSnapshot, notes: builtins.list[str]
    ) -> bool:
        if guest.config().guest_agent is not None:
            try:
                backend.create_snapshot(guest, doc.to_xml(), disk_only=True, quiesce=True)
                return True
            except VirtkitError as exc:
                notes.append(
                    f"not quiesced: the guest agent did not freeze the filesystems ({exc.message})"
                )
        else:
            notes.append("not quiesced: the VM has no guest agent channel (crash-consistent)")
        backend.create_snapshot(guest, doc.to_xml(), disk_only=True)
        return False

    # -- revert -----------------------------------------------------------------------------

    def revert_plan(self, vm: str, name: str, *, start: bool | None = None) -> RevertPlan:
        """What a revert to ``name`` would do and what the current state loses."""
        guest = lookup(self.host, vm)
        snap, snaps = self._find(guest, vm, name)
        return self._revert_plan(guest, vm, snap, snaps, start)

    def _state_after(self, snap: _Snap, start: bool | None) -> str:
        saved = snap.doc.state or "shutoff"
        has_memory = snap.doc.memory in ("internal", "external")
        if start is False:
            return "shutoff"
        if has_memory and saved in ("running", "paused"):
            return saved
        return "running" if start else "shutoff"

    def _revert_plan(
        self, guest: Guest, vm: str, snap: _Snap, snaps: builtins.list[_Snap], start: bool | None
    ) -> RevertPlan:
        state = guest.state()[0]
        loses = []
        if state in (VMState.RUNNING, VMState.PAUSED):
            loses.append(f"the VM's running state (it is {describe(state)} now; it is powered off)")
        removes: builtins.list[str] = []
        if snap.kind == "internal":
            loses.append("every disk's changes since the snapshot was taken")
        else:
            self._require_local("revert an external snapshot")
            config = guest.config()
            frozen = {same_file(p) for s in snaps for p in s.frozen.values()}
            for target in snap.frozen:
                active = _source_of(config, target)
                if active is None:
                    continue
                if same_file(active) in frozen:
                    raise InvalidState(
                        f"disk {target} of VM {vm!r} writes to {active}, which holds a "
                        "snapshot's data: virtkit will not revert over it",
                        code="snapshot_chain_unsafe",
                    )
                loses.append(f"disk {target}: the changes since the newest snapshot ({active})")
                removes.append(active)
            missing = [p for p in snap.frozen.values() if not os.path.exists(p)]
            if missing:
                raise InvalidState(
                    f"snapshot {snap.name!r} cannot be reverted to: its data file "
                    f"{', '.join(missing)} is gone",
                    code="snapshot_broken",
                )
        return RevertPlan(
            vm=vm,
            snapshot=snap.name,
            kind=snap.kind,
            loses=loses,
            removes=removes,
            state_after=self._state_after(snap, start),
        )

    def revert(self, vm: str, name: str, *, start: bool | None = None) -> RevertPlan:
        """Put the VM back to snapshot ``name``: its disks, and its running state when the
        snapshot saved memory (``start``: True to boot after a disk-only snapshot, False to
        stay off). Returns what was done (see :meth:`revert_plan` to ask first)."""
        guest = lookup(self.host, vm)
        snap, snaps = self._find(guest, vm, name)
        plan = self._revert_plan(guest, vm, snap, snaps, start)
        if snap.kind == "internal":
            after = plan.state_after
            backend.revert_internal(
                guest, name, running=after == "running", paused=after == "paused"
            )
            if after == "shutoff" and guest.is_active():
                guest.destroy()
        else:
            self._revert_external(guest, vm, snap, plan)
        log.info("VM %s reverted to snapshot %s", vm, name)
        return plan

    def _revert_external(self, guest: Guest, vm: str, snap: _Snap, plan: RevertPlan) -> None:
        if snap.doc.domain is None:
            raise InvalidState(
                f"snapshot {snap.name!r} records no VM definition", code="snapshot_broken"
            )
        old_config = guest.config()
        new = Domain.parse(snap.doc.domain.to_xml())
        # virtkit's metadata (tags, owner, its own files) is today's, not the snapshot's
        meta = old_config.virtkit
        new.virtkit = copy.deepcopy(meta) if meta is not None else None
        taken = set(os.listdir(self.files.pool_path)) if self.files.pool_path.is_dir() else set()
        overlays: builtins.list[str] = []
        with Transaction(f"revert of VM {vm} to {snap.name}") as tx:
            for target, data in snap.frozen.items():
                disk = next((d for d in new.disks if d.target_dev == target), None)
                if disk is None:
                    continue
                directory = os.path.dirname(data)
                taken |= set(os.listdir(directory))
                path = os.path.join(directory, revert_overlay(vm, target, snap.name, taken))
                taken.add(os.path.basename(path))
                qemuimg.create_overlay(path, data, _format_of(data))
                tx.on_rollback(f"remove {path}", functools.partial(_remove_file, path))
                overlays.append(path)
                _point_disk(disk, path)
            _own_in(new, add=overlays, drop=plan.removes)
            if guest.is_active():
                guest.destroy()
            tx.on_rollback(
                "restore the VM's definition", lambda: self.host.define(old_config.to_xml())
            )
            self.host.define(new.to_xml())
            if plan.state_after in ("running", "paused"):
                if snap.memory_file:
                    backend.restore_memory(
                        self.host,
                        snap.memory_file,
                        new.to_xml(),
                        paused=plan.state_after == "paused",
                    )
                else:
                    guest.start(paused=plan.state_after == "paused")
            backend.create_snapshot(guest, snap.xml, redefine=True, current=True)
        for path in plan.removes:
            _remove_file(path)
        self._refresh_pool()

    # -- delete -----------------------------------------------------------------------------

    def delete_plan(self, vm: str, name: str) -> SnapshotDeletePlan:
        """What deleting snapshot ``name`` merges, removes and keeps (refused with the reason
        when it cannot be done without losing another snapshot's data)."""
        guest = lookup(self.host, vm)
        snap, snaps = self._find(guest, vm, name)
        return self._delete_steps(guest, vm, snap, snaps)[0]

    def _delete_steps(
        self, guest: Guest, vm: str, snap: _Snap, snaps: builtins.list[_Snap]
    ) -> tuple[SnapshotDeletePlan, builtins.list[_Merge]]:
        if snap.kind == "internal":
            plan = SnapshotDeletePlan(
                vm=vm, snapshot=snap.name, kind="internal",
                removes=["the snapshot's data inside each qcow2 disk"],
                keeps=[f"child snapshot {s.name}" for s in snaps if s.parent == snap.name],
            )  # fmt: skip
            return plan, []
        self._require_local("delete an external snapshot")
        config = guest.config()
        actives = [d.source for d in writable_disks(config) if d.source]
        live = guest.definition() if guest.is_active() else None
        files = [*actives, *(p for s in snaps for p in [*s.frozen.values(), *s.overlays.values()])]
        layers = _Layers.read(files)
        merges: builtins.list[_Merge] = []
        plan_merges, removes, keeps = [], [], []
        for target, data in snap.frozen.items():
            kids = layers.children(data)
            if len(kids) > 1:
                raise InvalidState(
                    f"snapshot {snap.name!r} cannot be deleted: the data of disk {target} "
                    f"({data}) is the base of {len(kids)} branches ({', '.join(kids)}); "
                    "delete the snapshots of the other branch first",
                    code="snapshot_branch_point",
                )
            if not kids:
                removes.append(data)
                merges.append(_Merge(target, data, None, [], False, False))
                continue
            child = kids[0]
            live_disk = _disk_of(live, target) if live is not None else None
            live_chain = (
                [
                    same_file(live_disk.source or ""),
                    *(same_file(p) for p in live_disk.backing_sources),
                ]
                if live_disk is not None
                else []
            )
            in_live = child in live_chain
            active = in_live and live_chain[0] == child
            merges.append(_Merge(target, data, child, layers.children(child), in_live, active))
            how = (
                "block commit of the active layer, then pivot" if active
                else "block commit in the running VM" if in_live else "qemu-img commit"
            )  # fmt: skip
            plan_merges.append(f"disk {target}: {child} into {data} ({how})")
            removes.append(child)
        if snap.memory_file:
            removes.append(snap.memory_file)
        for s in snaps:
            if s.parent == snap.name:
                keeps.append(f"snapshot {s.name} (its parent becomes {snap.parent or 'none'})")
        plan = SnapshotDeletePlan(
            vm=vm, snapshot=snap.name, kind="external", merges=plan_merges, removes=removes,
            keeps=keeps,
        )  # fmt: skip
        return plan, merges

    def delete(self, vm: str, name: str, *, progress: Progress | None = None) -> SnapshotDeletePlan:
        """Delete snapshot ``name``; every other snapshot stays valid (see the module doc)."""
        guest = lookup(self.host, vm)
        snap, snaps = self._find(guest, vm, name)
        plan, merges = self._delete_steps(guest, vm, snap, snaps)
        if snap.kind == "internal":
            backend.delete_snapshot(guest, name)
            return plan
        for merge in merges:
            self._merge(guest, vm, merge, snaps, progress)
        backend.delete_snapshot(guest, name, metadata_only=True)
        gone = [m.child or m.data for m in merges]
        if snap.memory_file:
            gone.append(snap.memory_file)
        for path in gone:
            _remove_file(path)
        self._own(guest, add=[], drop=gone)
        self._refresh_pool()
        log.info("snapshot %s of VM %s deleted: %s", name, vm, plan.merges or "nothing merged")
        return plan

    def _merge(
        self,
        guest: Guest,
        vm: str,
        merge: _Merge,
        snaps: builtins.list[_Snap],
        progress: Progress | None,
    ) -> None:
        if merge.child is None:
            return
        data, child = merge.data, merge.child
        if merge.in_live:
            backend.block_commit(
                guest,
                merge.target,
                top=None if merge.active else child,
                base=data,
                progress=None if progress is None else lambda p: progress(p.done, p.total),
            )
            disk = _disk_of(guest.definition(), merge.target)
            now = (
                [same_file(disk.source or ""), *(same_file(p) for p in disk.backing_sources)]
                if disk
                else []
            )
            if child in now or same_file(data) not in now:
                raise BackendError(
                    f"disk {merge.target} of VM {vm!r} did not move off {child} after the "
                    "merge: nothing was removed; see `virtkit vm disk chain`"
                )
        else:
            qemuimg.commit(child, data)
            for grandchild in merge.grandchildren:
                qemuimg.rebase_unsafe(grandchild, data, _format_of(data))
        # libvirt moves the persistent definition along with a pivot; qemu-img does not
        config = guest.config()
        disk = _disk_of(config, merge.target)
        if disk is not None and disk.source and same_file(disk.source) == child:
            _point_disk(disk, data)
            self.host.define(config.to_xml())
        # the snapshots whose data was the merged layer now find it in the file below
        for other in snaps:
            old = other.frozen.get(merge.target)
            if old is not None and same_file(old) == child:
                doc = DomainSnapshot.parse(other.xml)
                inner = doc.domain
                disk = _disk_of(inner, merge.target) if inner is not None else None
                if disk is not None:
                    _point_disk(disk, data)
                    other.xml = doc.to_xml()
                    other.frozen[merge.target] = data
                    backend.create_snapshot(guest, other.xml, redefine=True, current=other.current)

    # -- chains -----------------------------------------------------------------------------

    def chain(self, vm: str) -> builtins.list[DiskChain]:
        """Each writable disk's backing chain, active image first, with sizes and the
        snapshot whose data each file holds."""
        self._require_local("read disk chains")
        guest = lookup(self.host, vm)
        snaps = self._snaps(guest)
        owner = {same_file(p): s.name for s in snaps for p in s.frozen.values()}
        result = []
        for disk in writable_disks(guest.config()):
            top = same_file(disk.source or "")
            layers = []
            for path in [top, *local_chain(top)]:
                info: dict[str, object] = {}
                with contextlib.suppress(VirtkitError):
                    info = qemuimg.qemu_img_info(path, force_share=True)
                vsize = info.get("virtual-size")
                layers.append(
                    DiskChainLayer(
                        path=path,
                        format=str(info["format"]) if "format" in info else None,
                        size=_size(path),
                        virtual_size=int(vsize) if isinstance(vsize, int) else None,
                        snapshot=owner.get(path),
                    )
                )
            result.append(DiskChain(vm=vm, target=disk.target_dev or "?", layers=layers))
        return result

    def flatten(self, vm: str, target: str, *, progress: Progress | None = None) -> DiskChain:
        """Copy a disk's whole backing chain into its active image, so that it stands alone;
        refused while a snapshot needs a file of the chain."""
        self._require_local("flatten a disk")
        guest = lookup(self.host, vm)
        snaps = self._snaps(guest)
        config = guest.config()
        disk = _disk_of(config, target)
        if disk is None or disk.source is None:
            raise NotFound(f"VM {vm!r} has no disk {target}", code="disk_not_found")
        top = same_file(disk.source)
        chain = local_chain(top)
        needed = sorted({s.name for s in snaps for p in s.frozen.values() if same_file(p) in chain})
        if needed:
            raise InvalidState(
                f"disk {target} of VM {vm!r} cannot be flattened: snapshot "
                f"{', '.join(needed)} needs its backing files; delete them first",
                code="snapshot_needs_chain",
            )
        if chain:
            if guest.is_active():
                backend.block_pull(
                    guest, target,
                    progress=None if progress is None else lambda p: progress(p.done, p.total),
                )  # fmt: skip
            else:
                qemuimg.flatten(top)
        return next(c for c in self.chain(vm) if c.target == target)

    # -- helpers ----------------------------------------------------------------------------

    def _require_local(self, what: str) -> None:
        if not self.host.is_local:
            raise Unsupported(
                f"to {what}, virtkit reads image headers and runs qemu-img on the VM's host: "
                f"run it there (this host is {self.host.uri})"
            )

    def _own(
        self, guest: Guest, *, add: builtins.list[str], drop: builtins.list[str] | None = None
    ) -> None:
        config = guest.config()
        _own_in(config, add=add, drop=drop or [])
        self.host.define(config.to_xml())

    def _refresh_pool(self) -> None:
        try:
            self.host.storage.refresh_pool(self.files.pool)
        except VirtkitError as exc:
            log.debug("pool %s not refreshed: %s", self.files.pool, exc)


@dataclass(frozen=True)
class _Merge:
    target: str
    data: str  # the deleted snapshot's data file: what stays
    child: str | None  # the one layer on it, merged down and removed (None: nothing builds on it)
    grandchildren: builtins.list[str]  # what builds on the child: pointed at ``data``
    in_live: bool  # the child is in the running VM's chain
    active: bool  # the child is the running VM's active layer


def _disk_of(dom: Domain | None, target: str) -> Disk | None:
    if dom is None:
        return None
    return next((d for d in dom.disks if d.target_dev == target), None)


def _source_of(dom: Domain, target: str) -> str | None:
    disk = _disk_of(dom, target)
    return disk.source if disk is not None else None


def _point_disk(disk: Disk, path: str) -> None:
    """Make a disk read ``path`` (qcow2); libvirt finds the backing chain from the header."""
    disk.type = "file"
    disk.source_dev = None
    disk.source_file = path
    disk.driver_type = "qcow2"
    disk.backing_store = None


def _format_of(path: str) -> str:
    try:
        return str(qemuimg.qemu_img_info(path, force_share=True).get("format") or "raw")
    except VirtkitError:
        return "qcow2" if qcow2_backing(path) is not None else "raw"


def _own_in(dom: Domain, *, add: builtins.list[str], drop: builtins.list[str]) -> None:
    meta = dom.ensure_virtkit_metadata()
    gone = {same_file(p) for p in drop}
    for entry in builtins.list(meta.owned_disks):
        if entry.path and same_file(entry.path) in gone:
            meta.owned_disks.remove(entry)
    have = {e.path for e in meta.owned_disks}
    for path in add:
        if path not in have:
            owned = OwnedDisk()
            owned.path = path
            meta.owned_disks.append(owned)


def _remove_file(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not remove %s: %s", path, exc)
