"""What the snapshot service reports: snapshots, their disks and files, and what a revert or a
delete did (or would do)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from virtkit.specs.common import _View

SnapshotKind = Literal["internal", "external"]


class SnapshotFile(_View):
    path: str
    size: int | None = Field(None, description="Bytes allocated on the host; None if unknown.")
    role: str = Field(description="data (the snapshot's disk state), memory, or overlay.")


class SnapshotDiskView(_View):
    target: str
    kind: str = Field(description="internal, external, or no (not in this snapshot).")
    data: str | None = Field(None, description="External: the file holding this disk's state.")


class SnapshotView(_View):
    name: str
    vm: str
    kind: SnapshotKind
    state: str = Field(description="The VM's state when taken: running, paused, shutoff, ...")
    memory: bool = Field(description="Whether the VM's memory was saved (revert resumes it).")
    created: int = Field(description="Unix time.")
    description: str | None = None
    parent: str | None = None
    children: list[str] = Field(default_factory=list)
    current: bool = False
    disks: list[SnapshotDiskView] = Field(default_factory=list)
    files: list[SnapshotFile] = Field(
        default_factory=list, description="The files this snapshot alone needs."
    )


class SnapshotCreated(_View):
    snapshot: SnapshotView
    quiesced: bool | None = Field(
        None, description="Disk-only of a running VM: whether the guest agent froze its "
        "filesystems first (None: not asked).",
    )  # fmt: skip
    notes: list[str] = Field(default_factory=list)


class RevertPlan(_View):
    vm: str
    snapshot: str
    kind: SnapshotKind
    loses: list[str] = Field(description="What the current state loses.")
    removes: list[str] = Field(default_factory=list, description="Files removed by the revert.")
    state_after: str = Field(description="running, paused or shutoff")


class SnapshotDeletePlan(_View):
    vm: str
    snapshot: str
    kind: SnapshotKind
    merges: list[str] = Field(default_factory=list, description="Merges, one line each.")
    removes: list[str] = Field(default_factory=list, description="Files removed.")
    keeps: list[str] = Field(default_factory=list, description="What stays, and why.")


class DiskChainLayer(_View):
    path: str
    format: str | None = None
    size: int | None = Field(None, description="Bytes allocated on the host.")
    virtual_size: int | None = None
    snapshot: str | None = Field(None, description="The snapshot whose data this file holds.")


class DiskChain(_View):
    vm: str
    target: str
    layers: list[DiskChainLayer] = Field(description="The active image first, then its backing.")


def tree_order(snaps: list[SnapshotView]) -> list[tuple[str, SnapshotView]]:
    """Each snapshot with the prefix that draws its place in the tree (``├─ ``, ``│  └─ ``),
    parents before children, in the order given (oldest first)."""
    by_name = {s.name: s for s in snaps}
    rows: list[tuple[str, SnapshotView]] = []

    def walk(snap: SnapshotView, prefix: str, last: bool, root: bool) -> None:
        rows.append(("" if root else prefix + ("└─ " if last else "├─ "), snap))
        kids = [by_name[c] for c in snap.children if c in by_name]
        inner = "" if root else prefix + ("   " if last else "│  ")
        for i, kid in enumerate(kids):
            walk(kid, inner, i == len(kids) - 1, False)

    for root in [s for s in snaps if s.parent is None or s.parent not in by_name]:
        walk(root, "", True, True)
    return rows
