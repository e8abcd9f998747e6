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

A clean chain stays clean only while no guest can write its files raw: a VM that has an in-pool
file as a writable raw disk can turn it into a qcow2 header naming ``/etc/shadow``, and another
VM (or this one) that opens the same file as qcow2 follows it at its next start; the same with
the two asked for in the other order. So a file named here, or a file of its chain, may not be
opened in a format other than the one any VM's definition (live or persistent, this VM's too)
or another field of the request already opens it in. A raw use that is read-only (a CD-ROM, a
``readonly`` disk) writes nothing and does not count; a qcow2 or any other format counts read-only
too, since it is the reader of headers. A backing file that a VM's chain reads in the header
only (a shut-off VM's persistent definition names its top image alone) is guarded elsewhere:
writing into a backing file is refused for everyone (``volume_has_clones``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from virtkit.errors import PermissionDenied
from virtkit.services.imagechain import Escape, Link, walk_chain
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
    """A disk image a request names, with the field, the format asked for (None: detect) and
    whether the VM gets it read-only."""

    field: str
    path: str
    format: str | None = None
    readonly: bool = False


@dataclass(frozen=True)
class DiskUse:
    """A file that a VM's definition makes QEMU open: ``vm``'s disk ``disk`` (``vda``, or
    ``vda's backing file``), read as ``format``, writable or not."""

    vm: str
    disk: str
    path: str
    format: str
    writable: bool


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
        NamedImage(_disk_field(i), d.path, d.format, d.readonly)
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


class _Opening(NamedTuple):
    """One file (resolved) opened in one format, by a field of the request or by a VM."""

    real: str
    format: str
    writable: bool
    who: str  # how the message names the one who opens it


def _counts(opening: _Opening) -> bool:
    """Whether an opening takes part in the rule: a read-only raw reader neither writes a
    header nor follows one."""
    return opening.format != "raw" or opening.writable


def _as(opening: _Opening) -> str:
    if opening.format == "raw":
        return "writable raw" if opening.writable else "read-only raw"
    return opening.format


def _requested(item: NamedImage, links: Sequence[Link]) -> list[_Opening]:
    openings = []
    for link in links:
        real = _resolved(link.path)
        if real is None:
            continue  # checked and allowed by the chain walk, which resolved it
        writable = not item.readonly and link.what != "backing file"
        if link.what == "image":
            who = f"{item.field} {item.path!r}"
        else:
            who = f"{item.field} {item.path!r} (its {link.what} {link.path!r})"
        openings.append(_Opening(real, link.format, writable, who))
    return openings


def _held(uses: Iterable[DiskUse]) -> list[_Opening]:
    held = []
    for use in uses:
        real = _resolved(use.path)
        if real is not None:
            who = f"VM {use.vm!r} ({use.disk})"
            held.append(_Opening(real, use.format, use.writable, who))
    return held


def _refuse_format_clash(
    asked: Sequence[_Opening], uses: Callable[[], Iterable[DiskUse]], role: str
) -> None:
    """Refuse a file the request opens in one format while a VM, or the request elsewhere
    (another field, another link of a chain), opens it in another (see the module's
    docstring)."""
    counted = [a for a in asked if _counts(a)]
    if not counted:
        return
    others = [u for u in _held(uses()) if _counts(u)] + counted
    for mine in counted:
        for other in others:
            if other.real == mine.real and other.format != mine.format:
                raw = "raw" in (mine.format, other.format)
                why = "a guest that writes a file raw can write the header that the other reads"
                raise _forbidden(
                    f"{mine.who} would be opened as {_as(mine)}, but {other.who} opens it as "
                    f"{_as(other)} ({why if raw else 'one file is read in one format'})",
                    role,
                )


def check_host_paths(
    named: Sequence[Named],
    *,
    role: str,
    local: bool,
    pools: Callable[[], Iterable[PoolTarget]],
    uses: Callable[[], Iterable[DiskUse]],
) -> dict[str, str]:
    """Raise :class:`PermissionDenied` (``host_path_forbidden``, naming the field and the path)
    unless ``role`` may name every path in ``named``: it has ``host.path``, or the host is local
    and each path, resolved, lies inside an active filesystem pool, and so does every file that
    a :class:`NamedImage` makes QEMU open (backing files, data file), and none of those files is
    opened in another format by a VM on the host (``uses``: every VM's disks) or by another
    field of the request. ``pools`` and ``uses`` are asked only when the answer depends on them.

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
    asked: list[_Opening] = []
    for item in named:
        if isinstance(item, NamedImage):
            fmt = _opened_format(item.path, item.format)
            chain = walk_chain(item.path, fmt, in_pool)
            if chain.escape is not None:
                raise _forbidden(_escape_message(item.field, item.path, chain.escape), role)
            formats[item.field] = fmt
            asked += _requested(item, chain.links)
    _refuse_format_clash(asked, uses, role)
    return formats


__all__ = [
    "FILE_POOL_TYPES",
    "PERMISSION",
    "DiskUse",
    "Named",
    "NamedImage",
    "NamedPath",
    "PoolTarget",
    "check_host_paths",
    "vm_spec_paths",
    "with_disk_formats",
]
