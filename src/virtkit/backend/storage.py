"""Storage pools and volumes through libvirt's storage API (so they work on remote hosts too)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import BinaryIO

import libvirt

from virtkit.backend.connection import Connection
from virtkit.backend.guest import seam
from virtkit.errors import NotFound

CHUNK = 1024 * 1024
Progress = Callable[[int], None]  # called with the bytes done so far


def _not_found(code: int) -> bool:
    return code in (libvirt.VIR_ERR_NO_STORAGE_VOL, libvirt.VIR_ERR_NO_STORAGE_POOL)


class Storage:
    """Pools and volumes of one libvirt host. Every call goes through the error map."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def _conn(self) -> libvirt.virConnect:
        return self.connection.get()

    # -- pools ------------------------------------------------------------------------------

    def _pool(self, name: str) -> libvirt.virStoragePool:
        try:
            return self._conn().storagePoolLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_POOL:
                raise NotFound(f"no storage pool named {name!r}", code="pool_not_found") from exc
            raise

    def pool_names(self) -> list[str]:
        with seam(self.connection):
            return sorted(p.name() for p in self._conn().listAllStoragePools(0))

    def pool_xml(self, name: str) -> str | None:
        """The pool's XML, or None if there is no pool of that name."""
        with seam(self.connection):
            try:
                return str(self._pool(name).XMLDesc(0))
            except NotFound:
                return None

    def pool_state(self, name: str) -> tuple[bool, bool, bool]:
        """(active, autostart, persistent)."""
        with seam(self.connection):
            pool = self._pool(name)
            return bool(pool.isActive()), bool(pool.autostart()), bool(pool.isPersistent())

    def pool_is_active(self, name: str) -> bool:
        return self.pool_state(name)[0]

    def define_pool(
        self, xml: str, *, build: bool = True, start: bool = True, autostart: bool = True
    ) -> None:
        """Define, build, start and mark a pool autostart; undo the definition if a step fails."""
        with seam(self.connection):
            pool = self._conn().storagePoolDefineXML(xml, 0)
            try:
                if build:
                    pool.build(0)
                if start:
                    pool.create(0)
                if autostart:
                    pool.setAutostart(1)
            except libvirt.libvirtError:
                # Leave no half-made pool behind (a directory that build made stays).
                with contextlib.suppress(libvirt.libvirtError):
                    if pool.isActive():
                        pool.destroy()
                with contextlib.suppress(libvirt.libvirtError):
                    pool.undefine()
                raise

    def start_pool(self, name: str) -> None:
        with seam(self.connection):
            self._pool(name).create(0)

    def stop_pool(self, name: str) -> None:
        with seam(self.connection):
            self._pool(name).destroy()

    def set_pool_autostart(self, name: str, on: bool) -> None:
        with seam(self.connection):
            self._pool(name).setAutostart(1 if on else 0)

    def refresh_pool(self, name: str) -> None:
        with seam(self.connection):
            self._pool(name).refresh(0)

    def remove_pool(self, name: str, *, delete_dir: bool = False) -> None:
        """Stop and undefine a pool; with ``delete_dir``, also remove its (empty) directory."""
        with seam(self.connection):
            pool = self._pool(name)
            if pool.isActive():
                pool.destroy()
            if delete_dir:
                pool.delete(libvirt.VIR_STORAGE_POOL_DELETE_NORMAL)
            pool.undefine()

    # -- volumes ----------------------------------------------------------------------------

    def _volume(self, pool: str, name: str) -> libvirt.virStorageVol:
        storage_pool = self._pool(pool)
        try:
            return storage_pool.storageVolLookupByName(name)
        except libvirt.libvirtError as exc:
            if _not_found(exc.get_error_code()):
                raise NotFound(
                    f"no volume {name!r} in pool {pool!r}", code="volume_not_found"
                ) from exc
            raise

    def _volume_by_path(self, path: str) -> libvirt.virStorageVol | None:
        try:
            return self._conn().storageVolLookupByPath(path)
        except libvirt.libvirtError as exc:
            if _not_found(exc.get_error_code()):
                return None
            raise

    def volume_xmls(self, pool: str) -> list[str]:
        """Every volume's XML; a volume whose file went away behind libvirt's back (it lists
        what it saw at the last refresh) is skipped, not an error for the whole pool."""
        with seam(self.connection):
            xmls = []
            for volume in self._pool(pool).listAllVolumes(0):
                try:
                    xmls.append(str(volume.XMLDesc(0)))
                except libvirt.libvirtError as exc:
                    if not _not_found(exc.get_error_code()):
                        raise
            return xmls

    def volume_xml(self, pool: str, name: str) -> str:
        with seam(self.connection):
            return str(self._volume(pool, name).XMLDesc(0))

    def volume_xml_by_path(self, path: str) -> str | None:
        with seam(self.connection):
            vol = self._volume_by_path(path)
            return None if vol is None else str(vol.XMLDesc(0))

    def volume_pool_by_path(self, path: str) -> str | None:
        with seam(self.connection):
            vol = self._volume_by_path(path)
            return None if vol is None else str(vol.storagePoolLookupByVolume().name())

    def create_volume(self, pool: str, xml: str, *, prealloc_metadata: bool = False) -> str:
        """Create a volume from XML in a pool; returns its path."""
        flags = libvirt.VIR_STORAGE_VOL_CREATE_PREALLOC_METADATA if prealloc_metadata else 0
        with seam(self.connection):
            return str(self._pool(pool).createXML(xml, flags).path())

    def clone_volume(self, pool: str, xml: str, source_pool: str, source: str) -> str:
        """A full copy of a volume (libvirt copies the data, converting the format if asked)."""
        with seam(self.connection):
            original = self._volume(source_pool, source)
            return str(self._pool(pool).createXMLFrom(xml, original, 0).path())

    def resize_volume(self, pool: str, name: str, capacity: int, *, shrink: bool = False) -> None:
        flags = libvirt.VIR_STORAGE_VOL_RESIZE_SHRINK if shrink else 0
        with seam(self.connection):
            self._volume(pool, name).resize(capacity, flags)

    def delete_volume(self, pool: str, name: str, *, wipe: bool = False) -> None:
        with seam(self.connection):
            vol = self._volume(pool, name)
            if wipe:
                vol.wipe(0)
            vol.delete(0)

    def delete_volume_by_path(self, path: str) -> None:
        with seam(self.connection):
            vol = self._volume_by_path(path)
            if vol is None:
                raise NotFound(f"no storage volume at {path}", code="volume_not_found")
            vol.delete(0)

    # -- data through streams ---------------------------------------------------------------

    def upload(
        self, pool: str, name: str, source: BinaryIO, length: int, progress: Progress | None = None
    ) -> None:
        """Write ``length`` bytes from ``source`` into the volume, from its start."""
        with seam(self.connection):
            vol = self._volume(pool, name)
            stream = self._conn().newStream(0)
            vol.upload(stream, 0, length, 0)
            done = 0
            try:
                while done < length:
                    chunk = source.read(min(CHUNK, length - done))
                    if not chunk:
                        break
                    view = memoryview(chunk)
                    while view:
                        sent = stream.send(bytes(view))
                        view = view[sent:]
                    done += len(chunk)
                    if progress:
                        progress(done)
                stream.finish()
            except BaseException:
                with contextlib.suppress(libvirt.libvirtError):
                    stream.abort()
                raise

    def read_head_by_path(self, path: str, length: int) -> bytes:
        """Up to ``length`` bytes from the start of the volume at ``path`` (a format probe)."""
        with seam(self.connection):
            vol = self._volume_by_path(path)
            if vol is None:
                raise NotFound(f"no storage volume at {path}", code="volume_not_found")
            stream = self._conn().newStream(0)
            vol.download(stream, 0, length, 0)
            chunks: list[bytes] = []
            try:
                while chunk := stream.recv(CHUNK):  # libvirt ends the stream after ``length``
                    chunks.append(bytes(chunk))
                stream.finish()
            except BaseException:
                with contextlib.suppress(libvirt.libvirtError):
                    stream.abort()
                raise
            return b"".join(chunks)

    def download(self, pool: str, name: str, progress: Progress | None = None) -> Iterator[bytes]:
        """The volume's bytes, chunk by chunk (the caller writes them where it wants)."""
        with seam(self.connection):
            vol = self._volume(pool, name)
            stream = self._conn().newStream(0)
            vol.download(stream, 0, 0, 0)
        done = 0
        try:
            while True:
                with seam(self.connection):
                    chunk = stream.recv(CHUNK)
                if not chunk:
                    break
                done += len(chunk)
                if progress:
                    progress(done)
                yield bytes(chunk)
            with seam(self.connection):
                stream.finish()
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise
