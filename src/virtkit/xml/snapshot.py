"""Typed classes for libvirt's domain snapshot XML (https://libvirt.org/formatsnapshot.html).

A snapshot's ``<domain>`` is the VM's definition when it was taken: for an external snapshot,
its disks' sources are the files that hold the snapshot's data (they became read-only backing
files of the new overlays that ``<disks>`` names).
"""

from __future__ import annotations

from virtkit.xml.base import Child, Children, XMLObject, attr, int_text, text
from virtkit.xml.domain import Domain


class SnapshotDisk(XMLObject):
    """One disk of a snapshot: ``snapshot`` is internal, external or no."""

    TAG = "disk"
    name = attr("", "name")
    snapshot = attr("", "snapshot")
    type = attr("", "type")
    driver_type = attr("driver", "type")
    source_file = attr("source", "file")


class DomainSnapshot(XMLObject):
    TAG = "domainsnapshot"
    name = text("name")
    description = text("description")
    state = text("state")  # running, paused, shutoff, disk-snapshot, ...
    creation_time = int_text("creationTime")
    parent = text("parent/name")
    memory = attr("memory", "snapshot")  # internal, external, no
    memory_file = attr("memory", "file")
    disks = Children(SnapshotDisk, "disks/disk")
    domain = Child(Domain)

    def disk(self, target: str) -> SnapshotDisk | None:
        return next((d for d in self.disks if d.name == target), None)

    def add_disk(
        self, target: str, kind: str, *, file: str | None = None, fmt: str | None = None
    ) -> SnapshotDisk:
        disk = SnapshotDisk()
        disk.name = target
        disk.snapshot = kind
        if file is not None:
            disk.type = "file"
            disk.driver_type = fmt or "qcow2"
            disk.source_file = file
        return self.disks.append(disk)
