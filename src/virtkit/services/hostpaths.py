"""Which files on the host a caller may name by path: the rule behind ``host.path``.

QEMU (and libvirt for it) opens a VM's kernel, initrd, CD-ROM and disks with more rights than
an API user has: an operator naming ``/etc/shadow`` as a raw disk would read it in the guest.
So naming a host path takes the permission ``host.path`` (admins), except for a file inside an
active filesystem storage pool (``dir``, ``fs``, ``netfs``): those files an admin has handed to
VMs already. Templates and images named as ``image`` are not paths and need nothing more.

The exception resolves ``..`` and symlinks with :func:`os.path.realpath` on the machine virtkit
runs on, so it holds for local hosts only; a remote host's paths, a relative path, or anything
that cannot be resolved is refused (when in doubt, refuse).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from virtkit.errors import PermissionDenied
from virtkit.services.roles import allowed

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
"""A path a request names, with the field that names it: ``("disks[0].path", "/srv/a.img")``."""


def vm_spec_paths(spec: VMSpec) -> list[NamedPath]:
    """The host paths a VM spec names: kernel, initrd, CD-ROM and every disk ``path``."""
    named = [
        (field, value)
        for field, value in (
            ("kernel", spec.kernel),
            ("initrd", spec.initrd),
            ("cdrom", spec.cdrom),
        )
        if value is not None
    ]
    named += [(f"disks[{i}].path", d.path) for i, d in enumerate(spec.disks) if d.path is not None]
    return named


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


def check_host_paths(
    named: Sequence[NamedPath],
    *,
    role: str,
    local: bool,
    pools: Callable[[], Iterable[PoolTarget]],
) -> None:
    """Raise :class:`PermissionDenied` (``host_path_forbidden``, naming the field and the path)
    unless ``role`` may name every path in ``named``: it has ``host.path``, or the host is local
    and each path, resolved, lies inside an active filesystem pool. ``pools`` is asked only when
    the answer depends on it."""
    if not named or allowed(role, PERMISSION):
        return
    dirs = _pool_dirs(pools()) if local else []
    for field, path in named:
        real = _resolved(path)
        if local and real is not None and any(_inside(real, d) for d in dirs):
            continue
        where = "is not inside an active storage pool" if local else "is on a remote host"
        raise PermissionDenied(
            f"{field} {path!r} {where}: naming files on the host by path needs the permission "
            f"{PERMISSION!r}, which role {role!r} lacks",
            code="host_path_forbidden",
        )


__all__ = [
    "FILE_POOL_TYPES",
    "PERMISSION",
    "NamedPath",
    "PoolTarget",
    "check_host_paths",
    "vm_spec_paths",
]
