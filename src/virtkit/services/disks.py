"""A VM's disks after creation: list, attach (hot-plug), detach, CD-ROM media change and eject."""

from __future__ import annotations

import builtins
import functools
import logging
import time

from virtkit.backend.guest import Guest
from virtkit.backend.host import Host
from virtkit.errors import InUse, InvalidInput, InvalidState, NotFound
from virtkit.services import discimage, storage
from virtkit.services.domainbuilder import (
    ResolvedDisk,
    disk_element,
    disk_letters,
    target_prefix,
)
from virtkit.services.pools import refuse_writable_base
from virtkit.services.transaction import Transaction
from virtkit.services.vmdelete import delete_own_disk
from virtkit.services.vmfiles import free_disk_volume
from virtkit.services.vms import VMService
from virtkit.specs import DiskAttachSpec, DiskView, validate_name
from virtkit.xml.domain import Disk, Domain, OwnedDisk
from virtkit.xml.storage import Volume

log = logging.getLogger(__name__)


def _next_target(taken: set[str], bus: str) -> str:
    prefix = target_prefix(bus)
    for index in range(26 * 27):
        name = prefix + disk_letters(index)
        if name not in taken:
            return name
    raise InvalidInput(f"no free {bus} disk name left", code="too_many_disks")


class DiskService:
    def __init__(self, host: Host, vms: VMService) -> None:
        self.host = host
        self.vms = vms

    def _guest(self, name: str) -> tuple[Guest, Domain, Domain | None]:
        """The guest, its persistent config, and its live definition if it runs."""
        validate_name(name)
        guest = self.host.lookup(name)
        return (guest, *guest.definitions())

    def list(self, name: str) -> list[DiskView]:
        return self.vms.get(name).disks

    @staticmethod
    def _find(dom: Domain, target: str) -> Disk | None:
        return next((d for d in dom.disks if d.target_dev == target), None)

    def attach(
        self,
        name: str,
        *,
        path: str | None = None,
        size: int | str | None = None,
        bus: str = "virtio",
        readonly: bool = False,
        format: str | None = None,
    ) -> DiskView:
        """Attach an existing image (``path``, read as ``format``: qcow2 or raw, detected when
        None) or a new blank qcow2 volume of ``size`` (bytes, or text such as ``10G``; bare:
        GiB); live on a running VM (hot-plug) and in its persistent definition."""
        want = DiskAttachSpec.check(path=path, size=size, bus=bus, readonly=readonly, format=format)
        path, size, bus, readonly = want.path, want.size, want.bus, want.readonly
        guest, config, live = self._guest(name)
        persistent = guest.is_persistent()
        if bus == "scsi" and not any(c.type == "scsi" for c in (live or config).controllers):
            raise InvalidInput(
                f"VM {name!r} has no SCSI controller: use bus virtio", code="invalid_bus"
            )
        taken = {d.target_dev for dom in (config, live) if dom for d in dom.disks if d.target_dev}
        target = _next_target(taken, bus)
        with Transaction(f"attaching a disk to {name}") as tx:
            owned = False
            if size is not None:
                files = self.vms.files
                files.ensure_pool(self.host, tx)
                path = storage.create_blank_disk(
                    self.host, files.pool, self._free_volume(name), size
                )
                tx.on_rollback(
                    f"delete volume {path}", functools.partial(storage.delete_disk, self.host, path)
                )
                fmt, owned = "qcow2", True
                if persistent:  # record it first: a failed attach undoes this too
                    self._set_owned(guest, path, True)
                    tx.on_rollback(
                        f"forget {path}", functools.partial(self._set_owned, guest, path, False)
                    )
            else:
                assert path is not None
                images = self.vms.images
                if not readonly and images is not None and images.is_template(path):
                    raise InvalidInput(
                        f"{path} is a template: attach it readonly, or attach a clone",
                        code="template_writable",
                    )
                if not readonly and self.vms.pools is not None:
                    refuse_writable_base(self.vms.pools, path)
                fmt = storage.resolve_image(self.host, path, want.format, "disk image")
            xml = disk_element(ResolvedDisk(path, fmt, bus, readonly=readonly), target).to_xml()
            guest.attach_device(xml, live=live is not None, config=persistent)
        if owned and not persistent:
            log.warning("VM %s is transient: delete %s yourself when it is gone", name, path)
        log.info("attached %s to %s as %s", path, name, target)
        return next(d for d in self.list(name) if d.target == target)

    def _free_volume(self, name: str) -> str:
        """The first ``<vm>-diskN.qcow2`` not taken in the VM pool (disks may come and go)."""
        pool = self.vms.files.pool
        taken = {Volume.parse(xml).name or "" for xml in self.host.storage.volume_xmls(pool)}
        return free_disk_volume(name, taken)

    def _set_owned(self, guest: Guest, path: str, owned: bool) -> None:
        config = guest.definition(inactive=True)
        meta = config.ensure_virtkit_metadata()
        for entry in list(meta.owned_disks):
            if entry.path == path:
                meta.owned_disks.remove(entry)
        if owned:
            entry = OwnedDisk()
            entry.path = path
            meta.owned_disks.append(entry)
        self.host.define(config.to_xml())

    def detach(self, name: str, target: str, *, remove_storage: bool = False) -> builtins.list[str]:
        """Detach the disk at ``target`` (e.g. vdb) live and persistently; with
        ``remove_storage``, delete it too if virtkit created it for this VM. Returns what
        was removed."""
        guest, config, live = self._guest(name)
        disk = self._find(live or config, target) or self._find(config, target)
        if disk is None:
            raise NotFound(f"VM {name!r} has no disk {target!r}", code="disk_not_found")
        if disk.device == "cdrom":
            raise InvalidInput(f"{target} is a CD-ROM: eject it instead", code="invalid_target")
        in_live = live is not None and self._find(live, target) is not None
        in_config = guest.is_persistent() and self._find(config, target) is not None
        xml = disk.to_xml()
        guest.detach_device(xml, live=in_live, config=in_config)
        if in_live and not self._gone_live(guest, target):
            raise InvalidState(
                f"the guest has not released {target} yet (it must support hot-unplug); it is "
                "gone from the VM's definition and goes at the next power-off",
                code="detach_pending",
            )
        removed: builtins.list[str] = []
        source = disk.source
        if remove_storage and source and source in config.owned_disk_paths:
            why = delete_own_disk(self.host, self.vms.pools, source)
            if why is not None:
                raise InUse(f"detached {target}, but {source} stays: {why}", code="volume_kept")
            removed.append(source)
            if guest.is_persistent():
                self._set_owned(guest, source, False)
        return removed

    def _gone_live(self, guest: Guest, target: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._find(guest.definition(), target) is None:
                return True
            time.sleep(0.2)
        return False

    def change_media(self, name: str, iso: str | None, target: str | None = None) -> str:
        """Insert ``iso`` into the VM's CD-ROM (the first, or ``target``); None ejects."""
        guest, config, live = self._guest(name)
        dom = live or config
        cdroms = [d for d in dom.disks if d.device == "cdrom"]
        if target is not None:
            cdroms = [d for d in cdroms if d.target_dev == target]
        if not cdroms:
            raise NotFound(
                f"VM {name!r} has no CD-ROM{' ' + target if target else ''}", code="cdrom_not_found"
            )
        cdrom = cdroms[0]
        if iso is not None:
            discimage.check_cdrom(self.host, iso)
        cdrom.source_file = iso
        cdrom.driver_type = "raw"
        guest.update_device(cdrom.to_xml(), live=live is not None, config=guest.is_persistent())
        return cdrom.target_dev or "?"
