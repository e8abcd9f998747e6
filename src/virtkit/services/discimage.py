"""Is a file a CD/DVD image? ISO 9660 and UDF recognised from their first sectors.

Both put their volume descriptors from byte 32768 on (sector 16 of 2048 bytes), each with a
five-letter identifier at byte 1: ISO 9660 ``CD001`` (so ISO-hybrid images, which add a boot
record and partition table in the first 32 KiB, are ISO 9660 too), UDF a volume recognition
sequence ``BEA01``, ``NSR02``/``NSR03``, ``TEA01`` (ECMA-167 2/9; a UDF-bridge disc has ISO 9660
descriptors before it). Nothing else is read: a disc with a broken directory is still a disc.
:func:`disc_format` and :func:`describe` are pure; :func:`check_cdrom` reads the head of a file
on the host (locally, or through a volume download stream on a remote host).
"""

from __future__ import annotations

import codecs
import os
from typing import Literal

from virtkit.backend.host import Host
from virtkit.errors import InvalidInput
from virtkit.services import storage
from virtkit.services.storage import QCOW2_MAGIC
from virtkit.xml.storage import Volume

SECTOR = 2048
DESCRIPTORS_AT = 16 * SECTOR
# The recognition sequence may follow several ISO 9660 descriptors (a bridge disc); 32 is
# more than any disc has before its UDF descriptors.
_SCANNED = 32
HEAD_BYTES = DESCRIPTORS_AT + _SCANNED * SECTOR
"""How many bytes from the start of a file :func:`disc_format` looks at."""

_VRS_IDS = {b"BEA01", b"NSR02", b"NSR03", b"TEA01", b"BOOT2", b"CD001", b"CDW02"}
DiscFormat = Literal["iso9660", "udf"]


def _identifier(head: bytes, sector: int) -> bytes:
    at = DESCRIPTORS_AT + sector * SECTOR + 1
    return head[at : at + 5]


def disc_format(head: bytes) -> DiscFormat | None:
    """``iso9660`` or ``udf`` if ``head`` (the first :data:`HEAD_BYTES` of a file, or all of a
    smaller one) starts a disc image, else None."""
    if _identifier(head, 0) == b"CD001":
        return "iso9660"
    for sector in range(_SCANNED):
        ident = _identifier(head, sector)
        if ident in (b"NSR02", b"NSR03"):
            return "udf"
        if ident not in _VRS_IDS:
            return None
    return None


def describe(head: bytes, size: int) -> str:
    """What a file that is not a disc image looks like, for an error message."""
    if size == 0:
        return "an empty file"
    if head.startswith(QCOW2_MAGIC):
        return "a qcow2 disk image"
    if _is_text(head[:4096]):
        return "a text file"
    if size < DESCRIPTORS_AT + SECTOR:
        return f"too small for a disc image ({size} bytes)"
    if not head.strip(b"\0"):
        return "all zeros where a disc has its volume descriptors"
    return "no ISO 9660 or UDF volume descriptors at sector 16"


def _is_text(sample: bytes) -> bool:
    if b"\0" in sample:
        return False
    try:  # not final: the sample may end inside a character
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
    except UnicodeDecodeError:
        return False
    return True


def _local_head(path: str) -> tuple[bytes, int]:
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
        size = f.seek(0, os.SEEK_END)  # a block device's size too
    return head, size


def check_cdrom(host: Host, path: str) -> None:
    """Raise ``invalid_cdrom`` unless the file at ``path`` on the host (checked to exist and be
    readable first) is an ISO 9660 or UDF image."""
    what = "CD-ROM image"
    if host.is_local:
        storage.check_local_file(path, what)
        try:
            head, size = _local_head(path)
        except OSError as exc:
            raise InvalidInput(
                f"{what} {path} cannot be read: {exc.strerror}", code="image_unreadable"
            ) from None
    else:
        storage.resolve_image(host, path, "raw", what)  # a volume in a pool, or image_not_found
        size = Volume.parse(host.storage.volume_xml_by_path(path) or "<volume/>").capacity or 0
        head = host.storage.read_head_by_path(path, HEAD_BYTES)
    if disc_format(head) is None:
        raise InvalidInput(
            f"{what} {path} is not an ISO 9660 or UDF image: {describe(head, size)}",
            code="invalid_cdrom",
        )
