"""The other files QEMU opens for an image: its backing chain and a qcow2 external data file.

A qcow2 header may name a backing file and a data file anywhere on the host, and whoever can
write the image (a guest that has it as a raw disk) can write that header. So an image read as
qcow2 is only as confined as every file its chain names. :func:`chain_escape` walks the chain
one link at a time, checking each name with ``allowed`` *before* qemu-img reads that file, so
a hostile header never makes virtkit open ``/dev/sda``, a FIFO or an ``nbd://`` URL either.

Only ``raw`` (which names no other file) and ``qcow2`` are known here; any other format in a
chain, a backing file without a recorded format (QEMU would probe it), a ``json:`` or protocol
name, a loop, or an image qemu-img cannot read is refused: when in doubt, refuse.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from virtkit.errors import VirtkitError
from virtkit.services.backing import CHAIN_MAX
from virtkit.services.qemuimg import qemu_img_info

FOLLOWED_FORMATS = frozenset({"raw", "qcow2"})
"""The formats a chain may hold: raw names nothing, qcow2's names are read and checked."""


@dataclass(frozen=True)
class Escape:
    """Why an image's chain leaves the allowed files: ``image`` (as QEMU names it) has a
    ``what`` (``backing file``, ``data file``) named ``name`` that ``why``."""

    image: str
    what: str
    name: str
    why: str


def _as_qemu_names(image: str, name: str) -> list[str] | None:
    """The file paths QEMU may take a backing file name in ``image``'s header for, the one it
    takes first (a relative name is relative to the directory of the image as named; the
    image's real directory is checked too); None for a name that is no plain file path
    (``json:{...}``, ``nbd://``, ``host:file``)."""
    if os.path.isabs(name):
        return [name]
    if not name or ":" in name.split("/", 1)[0]:
        return None
    named = os.path.join(os.path.dirname(image), name)
    real = os.path.join(os.path.dirname(os.path.realpath(image)), name)
    return [named] if real == named else [named, real]


def _not_in_pool(name: str, path: str) -> str:
    real = os.path.realpath(path)
    if real == name:
        return "is not inside an active storage pool"
    return f"resolves to {real!r}, not inside an active storage pool"


def _data_file(info: dict[str, object]) -> str | None:
    specific = info.get("format-specific")
    data = specific.get("data") if isinstance(specific, dict) else None
    name = data.get("data-file") if isinstance(data, dict) else None
    return str(name) if name else None


def chain_escape(path: str, fmt: str, allowed: Callable[[str], bool]) -> Escape | None:
    """The first file that an image at ``path`` (an allowed file), opened as ``fmt``, would
    make QEMU open and that ``allowed`` refuses, or that cannot be told; None if there is
    none."""
    image, seen = path, set[str]()
    for _ in range(CHAIN_MAX):
        if fmt == "raw":
            return None
        if fmt not in FOLLOWED_FORMATS:
            return Escape(image, "format", fmt, "is not one virtkit can check (raw, qcow2)")
        real = os.path.realpath(image)
        if real in seen:
            return Escape(image, "backing chain", real, "loops")
        seen.add(real)
        try:
            info = qemu_img_info(real, fmt=fmt, force_share=True)
        except VirtkitError as exc:
            return Escape(image, "image", image, f"cannot be inspected ({exc.message})")
        data = _data_file(info)
        if data is not None and not os.path.isabs(data):
            return Escape(image, "data file", data, "is a relative name")
        if data is not None and not allowed(data):
            return Escape(image, "data file", data, _not_in_pool(data, data))
        backing = info.get("backing-filename")
        if not backing:
            return None
        names = _as_qemu_names(image, str(backing))
        if names is None:
            return Escape(image, "backing file", str(backing), "is not a plain file path")
        outside = next((n for n in names if not allowed(n)), None)
        if outside is not None:
            return Escape(image, "backing file", str(backing), _not_in_pool(str(backing), outside))
        below = info.get("backing-filename-format")
        if not below:
            return Escape(image, "backing file", names[0], "has no recorded format")
        image, fmt = names[0], str(below)
    return Escape(path, "backing chain", image, f"is longer than {CHAIN_MAX}")
