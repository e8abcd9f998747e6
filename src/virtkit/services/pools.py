"""Storage pools and volumes as a user manages them: ``virtkit pool ...`` and ``virtkit volume``."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from virtkit.backend.host import Host
from virtkit.errors import (
    AlreadyExists,
    InUse,
    InvalidInput,
    InvalidState,
    NotFound,
    VirtkitError,
)
from virtkit.services import backing
from virtkit.services.hostpaths import DiskUse, PoolTarget
from virtkit.services.storage import QCOW2_COMPAT
from virtkit.services.store import Store
from virtkit.specs import (
    PoolInfo,
    PoolSpec,
    VolumeInfo,
    VolumeResizeSpec,
    VolumeSpec,
    format_size,
    validate_name,
    validate_volume_name,
)
from virtkit.xml.domain import Disk
from virtkit.xml.storage import Pool, SourceDevice, SourceHost, Volume

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


def build_pool(spec: PoolSpec) -> Pool:
    """The pool XML for a spec (pure)."""
    pool = Pool()
    pool.type = spec.type
    pool.name = spec.name
    if spec.source_host:
        host = SourceHost()
        host.name = spec.source_host
        pool.source_hosts.append(host)
    if spec.type == "netfs":
        pool.source_dir = spec.source_path
        pool.source_format = spec.source_format or "nfs"
    if spec.type == "iscsi":
        device = SourceDevice()
        device.path = spec.source_path
        pool.source_devices.append(device)
    for path in spec.source_devices:
        device = SourceDevice()
        device.path = path
        pool.source_devices.append(device)
    if spec.type in ("logical", "rbd"):
        pool.source_name = spec.source_name
    if spec.type == "logical" and spec.source_format:
        pool.source_format = spec.source_format
    if spec.auth_username:
        pool.auth_type = "ceph"
        pool.auth_username = spec.auth_username
        pool.auth_secret_uuid = spec.auth_secret_uuid
    if spec.type == "iscsi":
        pool.target_path = spec.path or "/dev/disk/by-path"
    elif spec.type == "logical":
        pool.target_path = spec.path or f"/dev/{spec.source_name}"
    elif spec.path:
        pool.target_path = spec.path
    return pool


def _source(pool: Pool) -> str | None:
    hosts = [h.name for h in pool.source_hosts if h.name]
    where = (
        pool.source_dir
        or pool.source_name
        or next((d.path for d in pool.source_devices if d.path), None)
    )
    if hosts and where:
        return f"{','.join(hosts)}:{where}"
    return where or (hosts[0] if hosts else None)


def refuse_writable_base(pools: PoolService, path: str) -> None:
    """A VM must not write into an image that linked clones build on (it would corrupt them)."""
    children = pools.clones_of(path)
    if children:
        raise InUse(
            f"{path} is the backing file of {', '.join(children)}: attach it readonly, or "
            "attach a clone of it",
            code="volume_has_clones",
        )


class PoolService:
    """Pools and their volumes on one host."""

    def __init__(
        self, host: Host, store: Store | None = None, host_uuid: Callable[[], str] | None = None
    ) -> None:
        self.host = host
        self.storage = host.storage
        self.store = store
        self._host_uuid = host_uuid or (lambda: host.uri)

    # -- what must not be written or deleted --------------------------------------------------

    def is_template(self, path: str) -> bool:
        if self.store is None:
            return False
        row = self.store.image(self._host_uuid(), path)
        return bool(row and row["template"])

    def write_guard(self, info: VolumeInfo, action: str) -> None:
        """Refuse to write into a volume others depend on: a VM's disk, a template, or the
        backing file of linked clones."""
        if info.used_by:
            raise InUse(
                f"cannot {action} {info.name!r}: it is a disk of VM(s) "
                f"{', '.join(sorted(info.used_by))}",
                code="volume_in_use",
            )
        if self.is_template(info.path):
            raise InUse(
                f"cannot {action} {info.name!r}: it is a template (unmark it first: "
                f"virtkit image template {info.name} --off)",
                code="volume_is_template",
            )
        children = self.clones_of(info.path)
        if children:
            raise InUse(
                f"cannot {action} {info.name!r}: it is the backing file of {', '.join(children)}",
                code="volume_has_clones",
            )

    def delete_owned_disk(self, path: str) -> str | None:
        """Delete a disk virtkit created for a VM; None if done, else why it was kept."""
        clones = self.clones_of(path)
        if clones:
            return f"kept: backing file of {', '.join(clones)}"
        try:
            self.storage.delete_volume_by_path(path)
        except NotFound:
            return "kept: not found in any running pool"
        except VirtkitError as exc:
            return f"could not remove: {exc.message}"
        self.forget(path)
        return None

    def forget(self, path: str) -> None:
        if self.store is not None:
            self.store.forget_image(self._host_uuid(), path)

    # -- pools ------------------------------------------------------------------------------

    def _pool_info(self, name: str) -> PoolInfo:
        xml = self.storage.pool_xml(name)
        if xml is None:
            raise NotFound(f"no storage pool named {name!r}", code="pool_not_found")
        pool = Pool.parse(xml)
        active, autostart, persistent = self.storage.pool_state(name)
        return PoolInfo(
            name=name,
            type=pool.type or "?",
            active=active,
            autostart=autostart,
            persistent=persistent,
            path=pool.target_path,
            capacity=pool.capacity if active else None,
            allocation=pool.allocation if active else None,
            available=pool.available if active else None,
            source=_source(pool),
            volumes=len(self.storage.volume_xmls(name)) if active else None,
        )

    def list_pools(self) -> list[PoolInfo]:
        infos = []
        for name in self.storage.pool_names():
            try:
                infos.append(self._pool_info(name))
            except NotFound:
                continue  # removed while we listed
        return infos

    def pool_targets(self) -> list[PoolTarget]:
        """Every pool's type, state and target path: what :mod:`~virtkit.services.hostpaths`
        needs, without the sizes and volume counts of :meth:`list_pools`."""
        targets = []
        for name in self.storage.pool_names():
            xml = self.storage.pool_xml(name)
            if xml is None:
                continue  # removed while we listed
            pool = Pool.parse(xml)
            try:
                active = self.storage.pool_state(name)[0]
            except NotFound:
                continue
            targets.append(PoolTarget(name, pool.type or "?", active, pool.target_path))
        return targets

    def get_pool(self, name: str) -> PoolInfo:
        validate_name(name, "pool")
        return self._pool_info(name)

    def create_pool(self, spec: PoolSpec, *, start: bool = True) -> PoolInfo:
        """Define a pool, build and start it (directory pools fully; other types are defined
        from the same spec and start where the host can reach their source)."""
        if self.storage.pool_xml(spec.name) is not None:
            raise AlreadyExists(f"a storage pool named {spec.name!r} exists", code="pool_exists")
        if spec.type == "dir" and spec.path and self.host.is_local:
            target = Path(spec.path)
            if target.exists() and not target.is_dir():
                raise InvalidInput(
                    f"pool path {spec.path} is a file, not a directory", code="invalid_path"
                )
        for other in self.list_pools():
            if spec.type in ("dir", "netfs") and other.path == spec.path:
                raise AlreadyExists(
                    f"pool {other.name!r} already uses {spec.path}", code="pool_path_taken"
                )
        xml = build_pool(spec).to_xml()
        self.storage.define_pool(
            xml,
            build=start and spec.type in ("dir", "netfs"),
            start=start,
            autostart=spec.autostart,
        )
        log.info("created %s pool %s", spec.type, spec.name)
        return self._pool_info(spec.name)

    def start_pool(self, name: str) -> None:
        if self.get_pool(name).active:
            raise InvalidState(f"pool {name!r} is already running", code="pool_active")
        self.storage.start_pool(name)

    def stop_pool(self, name: str) -> None:
        if not self.get_pool(name).active:
            raise InvalidState(f"pool {name!r} is not running", code="pool_inactive")
        self.storage.stop_pool(name)

    def set_pool_autostart(self, name: str, on: bool) -> None:
        self.get_pool(name)
        self.storage.set_pool_autostart(name, on)

    def refresh_pool(self, name: str) -> None:
        if not self.get_pool(name).active:
            raise InvalidState(f"pool {name!r} is not running", code="pool_inactive")
        self.storage.refresh_pool(name)

    def delete_pool(self, name: str, *, delete_dir: bool = False) -> None:
        """Undefine a pool. Refused while it holds volumes (delete them first). An inactive
        pool's volumes cannot be counted: undefining it leaves its files where they are."""
        info = self.get_pool(name)
        if delete_dir and info.type not in ("dir", "netfs"):
            raise InvalidInput(
                f"--delete-dir removes a directory; pool {name!r} is {info.type} (for it libvirt "
                "would remove the underlying storage): undefine it without the flag",
                code="invalid_option",
            )
        if info.active and info.volumes:
            raise InUse(
                f"pool {name!r} still holds {info.volumes} volume(s): delete them first",
                code="pool_not_empty",
            )
        self.storage.remove_pool(name, delete_dir=delete_dir)

    # -- volumes ----------------------------------------------------------------------------

    def _vm_disks(self) -> Iterator[tuple[str, Disk]]:
        """(VM name, disk) for every disk in every VM's live and persistent definition."""
        for guest in self.host.list_guests():
            try:
                name = guest.name
                doms = (guest.definition(), guest.definition(inactive=True))
            except NotFound:
                continue  # gone while we listed
            for dom in doms:
                for disk in dom.disks:
                    yield name, disk

    def _users(self) -> dict[str, list[str]]:
        """Disk source path -> names of the VMs whose (live or persistent) XML uses it."""
        users: dict[str, list[str]] = {}
        for name, disk in self._vm_disks():
            if disk.source and name not in users.setdefault(disk.source, []):
                users[disk.source].append(name)
        return users

    def disk_uses(self) -> list[DiskUse]:
        """Every file that a VM's live or persistent definition has QEMU open, in the format
        it is read in (libvirt reads a disk without one as raw), with the layers below it
        that the definition names: what :mod:`~virtkit.services.hostpaths` needs to know
        which file is read in which format."""
        found: list[DiskUse] = []
        for name, disk in self._vm_disks():
            path = self._disk_path(disk)
            if path is None:
                continue
            target = disk.target_dev or "?"
            fmt, writable = disk.driver_type or "raw", not disk.readonly
            found.append(DiskUse(name, target, path, fmt, writable))
            below = f"{target}'s backing file"
            for layer in disk.backing_layers:
                if layer.source:  # backing files are opened read-only
                    found.append(DiskUse(name, below, layer.source, layer.format or "raw", False))
        return found

    def _disk_path(self, disk: Disk) -> str | None:
        """The file or device a disk reads: its source, or a pool volume's path."""
        if disk.type != "volume":
            return disk.source_file or disk.source_dev
        if not (disk.source_pool and disk.source_volume):
            return None
        try:
            return Volume.parse(
                self.storage.volume_xml(disk.source_pool, disk.source_volume)
            ).target_path
        except NotFound:
            return None  # its pool is stopped or gone: the VM cannot start either

    def _volume_info(self, pool: str, xml: str, users: dict[str, list[str]]) -> VolumeInfo:
        vol = Volume.parse(xml)
        path = vol.target_path or ""
        return VolumeInfo(
            name=vol.name or "",
            pool=pool,
            path=path,
            format=vol.format,
            capacity=vol.capacity or 0,
            allocation=vol.allocation or 0,
            backing=vol.backing_path,
            used_by=users.get(path, []),
        )

    def _active_pool(self, pool: str) -> None:
        if not self.get_pool(pool).active:
            raise InvalidState(
                f"pool {pool!r} is not running: start it first", code="pool_inactive"
            )

    def list_volumes(self, pool: str) -> list[VolumeInfo]:
        self._active_pool(pool)
        users = self._users()
        infos = [self._volume_info(pool, xml, users) for xml in self.storage.volume_xmls(pool)]
        return sorted(infos, key=lambda v: v.name)

    def get_volume(self, pool: str, name: str) -> VolumeInfo:
        validate_volume_name(name)
        self._active_pool(pool)
        info = self._volume_info(pool, self.storage.volume_xml(pool, name), self._users())
        chain: list[str] = []
        backing = info.backing
        while backing and backing not in chain and len(chain) < 64:
            chain.append(backing)
            parent = self.storage.volume_xml_by_path(backing)
            backing = Volume.parse(parent).backing_path if parent else None
        return info.model_copy(update={"backing_chain": chain})

    def _exists(self, pool: str, name: str) -> bool:
        try:
            self.storage.volume_xml(pool, name)
        except NotFound:
            return False
        return True

    def create_volume(self, pool: str, spec: VolumeSpec) -> VolumeInfo:
        self._active_pool(pool)
        if self._exists(pool, spec.name):
            raise AlreadyExists(
                f"a volume named {spec.name!r} exists in pool {pool!r}", code="volume_exists"
            )
        available = self.get_pool(pool).available
        if spec.preallocation == "full" and available is not None and spec.size > available:
            raise InvalidInput(
                f"{format_size(spec.size)} does not fit in pool {pool!r} "
                f"({format_size(available)} free)",
                code="pool_full",
            )
        vol = Volume()
        vol.name = spec.name
        vol.capacity = spec.size
        vol.capacity_unit = "bytes"
        vol.format = spec.format
        if spec.format == "qcow2":
            vol.compat = QCOW2_COMPAT
        # libvirt allocates a volume fully unless told otherwise: say what was asked
        vol.allocation = spec.size if spec.preallocation == "full" else 0
        vol.allocation_unit = "bytes"
        self.storage.create_volume(
            pool, vol.to_xml(), prealloc_metadata=spec.preallocation == "metadata"
        )
        return self.get_volume(pool, spec.name)

    def resize_volume(self, pool: str, name: str, size: int | str, *, shrink: bool = False) -> str:
        """Grow (or, with ``shrink``, shrink) a volume to ``size``: bytes, or text such as
        ``10G`` (bare: GiB)."""
        size = VolumeResizeSpec.check(size=size, shrink=shrink).size
        info = self.get_volume(pool, name)
        if size < info.capacity and not shrink:
            raise InvalidInput(
                f"{format_size(size)} is smaller than {name!r} ({format_size(info.capacity)}): "
                "shrinking loses the data past the new end; add --shrink if that is what you want",
                code="shrink_refused",
            )
        if size == info.capacity:
            return f"{name}: already {format_size(size)}"
        self.write_guard(info, "resize")
        self.storage.resize_volume(pool, name, size, shrink=size < info.capacity)
        return f"{name}: {format_size(info.capacity)} -> {format_size(size)}"

    def delete_volume(self, pool: str, name: str, *, wipe: bool = False) -> VolumeInfo:
        """Delete a volume; refused while a VM uses it (names the VMs) or clones build on it."""
        info = self.get_volume(pool, name)
        if info.used_by:
            raise InUse(
                f"volume {name!r} is used by VM(s) {', '.join(sorted(info.used_by))}",
                code="volume_in_use",
            )
        children = self.clones_of(info.path)
        if children:
            raise InUse(
                f"volume {name!r} is the backing file of {', '.join(children)}",
                code="volume_has_clones",
            )
        self.storage.delete_volume(pool, name, wipe=wipe)
        self.forget(info.path)
        return info

    def clones_of(self, path: str) -> list[str]:
        """What builds on ``path``, whatever state the pools holding it are in: volumes
        (``pool/name``) of running pools whose backing file it is; on a local host, images in
        stopped directory pools whose qcow2 header names it (``pool/name (pool stopped)``);
        and VM disks whose backing chain holds it (``/path (disk of VM x)``), read from the
        image headers on a local host and from the running VMs' definitions anywhere."""
        local = self.host.is_local
        same = backing.same_file if local else (lambda p: p)
        target = same(path)
        found: list[str] = []
        seen: set[str] = set()  # overlays already named
        for pool in self.list_pools():
            if pool.active:
                for xml in self.storage.volume_xmls(pool.name):
                    vol = Volume.parse(xml)
                    if vol.backing_path and same(vol.backing_path) == target:
                        found.append(f"{pool.name}/{vol.name}")
                        seen.add(same(vol.target_path or ""))
            elif local and pool.path and pool.type in ("dir", "fs", "netfs"):
                for file in backing.image_files(pool.path):
                    if backing.local_chain(file)[:1] == [target]:
                        found.append(f"{pool.name}/{os.path.basename(file)} (pool stopped)")
                        seen.add(same(file))
        for vm, source, chain in self._disk_chains(local):
            if same(source) not in seen and target in chain:
                seen.add(same(source))
                found.append(f"{source} (disk of VM {vm})")
        return found

    def _disk_chains(self, local: bool) -> Iterator[tuple[str, str, list[str]]]:
        """(VM name, disk source, the files below it) for every disk with a backing chain in
        every VM's live and persistent definition."""
        same = backing.same_file if local else (lambda p: p)
        for name, disk in self._vm_disks():
            if not disk.source or disk.device == "cdrom":
                continue
            chain = [same(p) for p in disk.backing_sources]
            if local:
                chain += [p for p in backing.local_chain(disk.source) if p not in chain]
            if chain:
                yield name, disk.source, chain

    def clone_volume(
        self,
        pool: str,
        name: str,
        new_name: str,
        *,
        linked: bool = False,
        target_pool: str | None = None,
    ) -> VolumeInfo:
        """A full copy (libvirt copies the data), or a linked clone: a qcow2 overlay whose
        backing file is the source (instant; the source must then stay unchanged)."""
        validate_volume_name(new_name)
        source = self.get_volume(pool, name)
        if linked and source.used_by:
            raise InUse(
                f"cannot base a linked clone on {name!r}: VM(s) {', '.join(source.used_by)} "
                "write to it (clone a template, or shut them down and make it one)",
                code="volume_in_use",
            )
        target = target_pool or pool
        self._active_pool(target)
        if self._exists(target, new_name):
            raise AlreadyExists(
                f"a volume named {new_name!r} exists in pool {target!r}", code="volume_exists"
            )
        vol = Volume()
        vol.name = new_name
        vol.capacity = source.capacity
        vol.capacity_unit = "bytes"
        if linked or source.format == "qcow2":
            vol.compat = QCOW2_COMPAT
        if linked:
            vol.format = "qcow2"
            vol.backing_path = source.path
            vol.backing_format = source.format or "raw"
            self.storage.create_volume(target, vol.to_xml())
        else:
            vol.format = source.format or "raw"
            self.storage.clone_volume(target, vol.to_xml(), pool, name)
        return self.get_volume(target, new_name)

    # -- data -------------------------------------------------------------------------------

    def upload(
        self,
        pool: str,
        name: str,
        source: BinaryIO,
        length: int | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Copy bytes into an existing volume through a libvirt stream (remote hosts too)."""
        info = self.get_volume(pool, name)
        self.write_guard(info, "upload into")
        if length is None:
            length = os.fstat(source.fileno()).st_size
        if length > info.capacity:
            raise InvalidInput(
                f"{format_size(length)} does not fit into {name!r} ({format_size(info.capacity)})",
                code="upload_too_large",
            )
        self.storage.upload(pool, name, source, length, progress)
        return length

    def download(self, pool: str, name: str, progress: Progress | None = None) -> Iterator[bytes]:
        self.get_volume(pool, name)
        return self.storage.download(pool, name, progress)
