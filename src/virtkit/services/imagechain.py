"""The other files QEMU opens for an image: its backing chain and a qcow2 external data file.

A qcow2 header may name a backing file and a data file anywhere on the host, and whoever can
write the image (a guest that has it as a raw disk) can write that header. So an image read as
qcow2 is only as confined as every file its chain names. :func:`chain_escape` walks the chain
one link at a time, checking each name with ``allowed`` *before* qemu-img reads that file, so
a hostile header never makes virtkit open ``/dev/sda``, a FIFO or an ``nbd://`` URL either.

Only ``raw`` (which names no other file) and ``qcow2`` are known here; any other format in a
chain, a backing file without a recorded format (QEMU would probe it), a ``json:`` or protocol
name, a loop, or an image qemu-img cannot read is refused: when in doubt, refuse.

:func:`walk_chain` also hands back the files it found and the format each is opened in, so
that :mod:`virtkit.services.hostpaths` can tell whether another VM reads one of them in
another format (the one who writes a file raw writes the header another one follows).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

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


class Link(NamedTuple):
    """A file QEMU opens for an image: the image itself (``what`` is ``image``), a ``backing
    file`` or a ``data file``, by the name QEMU takes, and the format it reads it in (a data
    file holds the guest's bytes as they are: raw)."""

    path: str
    format: str
    what: str


@dataclass(frozen=True)
class Chain:
    """What an image opened in some format makes QEMU open: the ``links`` found, top down (as
    far as the walk got), and the first ``escape`` (None: every link is allowed)."""

    links: tuple[Link, ...]
    escape: Escape | None


def walk_chain(path: str, fmt: str, allowed: Callable[[str], bool]) -> Chain:
    """The files an image at ``path`` (an allowed file), opened as ``fmt``, makes QEMU open,
    and the first of them that ``allowed`` refuses or that cannot be told."""
    links = [Link(path, fmt, "image")]

    def escape(found: Escape) -> Chain:
        return Chain(tuple(links), found)

    image, seen = path, set[str]()
    for _ in range(CHAIN_MAX):
        if fmt == "raw":
            return Chain(tuple(links), None)
        if fmt not in FOLLOWED_FORMATS:
            return escape(Escape(image, "format", fmt, "is not one virtkit can check (raw, qcow2)"))
        real = os.path.realpath(image)
        if real in seen:
            return escape(Escape(image, "backing chain", real, "loops"))
        seen.add(real)
        try:
            info = qemu_img_info(real, fmt=fmt, force_share=True)
        except VirtkitError as exc:
            return escape(Escape(image, "image", image, f"cannot be inspected ({exc.message})"))
        data = _data_file(info)
        if data is not None and not os.path.isabs(data):
            return escape(Escape(image, "data file", data, "is a relative name"))
        if data is not None and not allowed(data):
            return escape(Escape(image, "data file", data, _not_in_pool(data, data)))
        if data is not None:
            links.append(Link(data, "raw", "data file"))
        backing = info.get("backing-filename")
        if not backing:
            return Chain(tuple(links), None)
        names = _as_qemu_names(image, str(backing))
        if names is None:
            return escape(Escape(image, "backing file", str(backing), "is not a plain file path"))
        outside = next((n for n in names if not allowed(n)), None)
        if outside is not None:
            why = _not_in_pool(str(backing), outside)
            return escape(Escape(image, "backing file", str(backing), why))
        below = info.get("backing-filename-format")
        if not below:
            return escape(Escape(image, "backing file", names[0], "has no recorded format"))
        image, fmt = names[0], str(below)
        links.append(Link(image, fmt, "backing file"))
    return escape(Escape(path, "backing chain", image, f"is longer than {CHAIN_MAX}"))
