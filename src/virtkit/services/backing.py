"""Backing chains read from the images themselves (qcow2 headers), not from pool listings.

libvirt lists the volumes of running pools only, so a linked clone whose overlay sits in a
stopped pool (or in no pool at all) is invisible to a volume listing; the overlay's own header
still names its backing file. These helpers read it on the local host.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Iterator

from virtkit.services.storage import QCOW2_MAGIC

log = logging.getLogger(__name__)

CHAIN_MAX = 64
_HEADER = struct.Struct(">4sIQI")  # magic, version, backing_file_offset, backing_file_size
_NAME_MAX = 4096


def same_file(path: str) -> str:
    """The path a file is known by when comparing (symlinks and ``..`` resolved)."""
    return os.path.realpath(path)


def qcow2_backing(path: str) -> str | None:
    """The backing file named in a qcow2 image's header (relative names resolved against the
    image's directory), or None: no backing file, not qcow2, or unreadable."""
    try:
        with open(path, "rb") as f:
            header = f.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return None
            magic, _version, offset, size = _HEADER.unpack(header)
            if magic != QCOW2_MAGIC or offset == 0 or not 0 < size <= _NAME_MAX:
                return None
            f.seek(offset)
            name = f.read(size).decode("utf-8", "surrogateescape")
    except OSError as exc:
        log.debug("cannot read the header of %s: %s", path, exc)
        return None
    if name.startswith("json:") or os.path.isabs(name):
        return name
    return os.path.join(os.path.dirname(path), name)


def local_chain(path: str) -> list[str]:
    """The files below ``path`` (its backing file, that one's, ...), resolved, top down."""
    chain: list[str] = []
    below = qcow2_backing(path)
    while below is not None and len(chain) < CHAIN_MAX:
        resolved = same_file(below)
        if resolved in chain:
            break  # a loop: qemu would refuse it, never spin on it
        chain.append(resolved)
        below = qcow2_backing(resolved)
    return chain


def image_files(directory: str) -> Iterator[str]:
    """The regular files directly in ``directory`` (a stopped directory pool's volumes)."""
    try:
        entries = list(os.scandir(directory))
    except OSError as exc:
        log.debug("cannot list %s: %s", directory, exc)
        return
    for entry in sorted(entries, key=lambda e: e.name):
        try:
            if entry.is_file():
                yield entry.path
        except OSError:
            continue
