"""Which files on the host a caller may name by path: the rule behind ``host.path``.

QEMU (and libvirt for it) opens a VM's kernel, initrd, CD-ROM and disks with more rights than
an API user has: an operator naming ``/etc/shadow`` as a raw disk would read it in the guest.
So naming a host path takes the permission ``host.path`` (admins), except for a file inside an
active filesystem storage pool (``dir``, ``fs``, ``netfs``): those files an admin has handed to
VMs already. Templates and images named as ``image`` are not paths and need nothing more.

The exception resolves ``..`` and symlinks with :func:`os.path.realpath` on the machine virtkit
runs on, so it holds for local hosts only; a remote host's paths, a relative path, or anything
that cannot be resolved is refused (when in doubt, refuse).

A file in a pool can point out of it: a qcow2 header names a backing file and a data file, and
a guest that has the file as a raw disk can write that header. So a disk image named by a caller
without ``host.path`` is opened in a format decided here, never probed later: ``raw`` as asked
(QEMU reads no header in it), ``qcow2`` only if its whole chain stays inside the pools
(:mod:`virtkit.services.imagechain`); no format given means what the file is now (qcow2 by its
magic, else raw), and :func:`check_host_paths` returns that format for the service to use.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from virtkit.errors import PermissionDenied
from virtkit.services.imagechain import Escape, chain_escape
from virtkit.services.roles import allowed
from virtkit.services.storage import detect_local_format

if TYPE_CHECKING:  # the pools service imports this module: keep the VM specs out of its way
    from virtkit.specs.vm import VMSpec

PERMISSION = "host.path"
# Pools whose target is a directory holding the pool's files. The others' targets (/dev/VG,
# /dev/disk/by-path, ...) are views of host devices, not a place an admin filled for VMs.
FILE_POOL_TYPES = frozenset({"dir", "fs", "netfs"})


@dataclass(frozen=True)
class PoolTarget:
    """What the rule needs to know of a storage pool."""

    name: str
    type: str
    active: bool
    path: str | None


NamedPath = tuple[str, str]
"""A file a request names, with the field that names it: ``("kernel", "/srv/vmlinuz")``. QEMU
reads it as it is (a kernel, an initrd, a CD-ROM, which virtkit always gives as raw)."""


class NamedImage(NamedTuple):
    """A disk image a request names, with the field and the format asked for (None: detect)."""

    field: str
    path: str
    format: str | None = None


Named = NamedPath | NamedImage


def vm_spec_paths(spec: VMSpec) -> list[Named]:
    """The host paths a VM spec names: kernel, initrd, CD-ROM, and every disk ``path`` (as a
    :class:`NamedImage`, field ``disks[i].path``)."""
    named: list[Named] = [
        (field, value)
        for field, value in (
            ("kernel", spec.kernel),
            ("initrd", spec.initrd),
            ("cdrom", spec.cdrom),
        )
        if value is not None
    ]
    named += [
        NamedImage(_disk_field(i), d.path, d.format)
        for i, d in enumerate(spec.disks)
        if d.path is not None
    ]
    return named


def _disk_field(index: int) -> str:
    return f"disks[{index}].path"


def with_disk_formats(spec: VMSpec, formats: dict[str, str]) -> VMSpec:
    """``spec`` with each path disk's format set as :func:`check_host_paths` decided it."""
    if not formats:
        return spec
    disks = [
        d.model_copy(update={"format": formats[_disk_field(i)]}) if _disk_field(i) in formats else d
        for i, d in enumerate(spec.disks)
    ]
    return spec.model_copy(update={"disks": disks})


def _resolved(path: str) -> str | None:
    """The real absolute path (``..`` and symlinks resolved), or None if it cannot be told."""
    if not os.path.isabs(path):
        return None
    try:
        return os.path.realpath(path)
    except (OSError, ValueError):  # a NUL byte, a symlink loop (strict), ...
        return None


def _pool_dirs(pools: Iterable[PoolTarget]) -> list[str]:
    dirs = []
    for pool in pools:
        if pool.active and pool.type in FILE_POOL_TYPES and pool.path:
            real = _resolved(pool.path)
            if real is not None:
                dirs.append(real)
    return dirs


def _inside(real: str, directory: str) -> bool:
    return real != directory and os.path.commonpath([real, directory]) == directory


def _forbidden(message: str, role: str) -> PermissionDenied:
    return PermissionDenied(
        f"{message}: naming files on the host by path needs the permission {PERMISSION!r}, "
        f"which role {role!r} lacks",
        code="host_path_forbidden",
    )


def _opened_format(path: str, asked: str | None) -> str:
    """The format a disk image is opened as: the one asked for, else what the file is now.
    A file that cannot be read is given as raw (safe: QEMU follows nothing in raw) and left to
    the service to report."""
    if asked is not None:
        return asked
    try:
        return detect_local_format(path)
    except OSError:
        return "raw"


def _escape_message(field: str, path: str, escape: Escape) -> str:
    of = "" if escape.image == path else f" (of {escape.image!r})"
    if escape.what in ("image", "format"):
        return f"{field} {path!r}: {escape.what} {escape.name!r}{of} {escape.why}"
    return f"{field} {path!r}: its {escape.what} {escape.name!r}{of} {escape.why}"


def check_host_paths(
    named: Sequence[Named],
    *,
    role: str,
    local: bool,
    pools: Callable[[], Iterable[PoolTarget]],
) -> dict[str, str]:
    """Raise :class:`PermissionDenied` (``host_path_forbidden``, naming the field and the path)
    unless ``role`` may name every path in ``named``: it has ``host.path``, or the host is local
    and each path, resolved, lies inside an active filesystem pool, and so does every file that
    a :class:`NamedImage` makes QEMU open (backing files, data file). ``pools`` is asked only
    when the answer depends on it.

    Returns the format each named image must be opened as, by field (``{}`` for a role with
    ``host.path``, which keeps today's behaviour): the caller passes it on, so that what was
    checked is what libvirt is told."""
    if not named or allowed(role, PERMISSION):
        return {}
    dirs = _pool_dirs(pools()) if local else []

    def in_pool(path: str) -> bool:
        real = _resolved(path)
        return real is not None and any(_inside(real, d) for d in dirs)

    for field, path, *_ in named:
        if not (local and in_pool(path)):
            where = "is not inside an active storage pool" if local else "is on a remote host"
            raise _forbidden(f"{field} {path!r} {where}", role)
    formats: dict[str, str] = {}
    for item in named:
        if isinstance(item, NamedImage):
            fmt = _opened_format(item.path, item.format)
            escape = chain_escape(item.path, fmt, in_pool)
            if escape is not None:
                raise _forbidden(_escape_message(item.field, item.path, escape), role)
            formats[item.field] = fmt
    return formats


__all__ = [
    "FILE_POOL_TYPES",
    "PERMISSION",
    "Named",
    "NamedImage",
    "NamedPath",
    "PoolTarget",
    "check_host_paths",
    "vm_spec_paths",
    "with_disk_formats",
]
