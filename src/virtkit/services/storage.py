"""The storage a VM needs: checking existing images, creating and removing VM disks.

Pools and volumes as objects of their own (list, resize, upload, ...) come with the storage work;
this module holds what VM creation and deletion need, through libvirt's storage API so it also
works on remote hosts.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from virtkit.backend.host import Host
from virtkit.errors import InvalidInput, NotFound
from virtkit.xml.storage import Pool, Volume

log = logging.getLogger(__name__)

QCOW2_MAGIC = b"QFI\xfb"
# qcow2 v3 (zero clusters, lazy refcounts); without it libvirt writes the old v2 (compat 0.10)
QCOW2_COMPAT = "1.1"


def check_local_file(path: str, what: str) -> None:
    """Raise a clear InvalidInput unless ``path`` is an existing, readable regular file."""
    if not os.path.isabs(path):
        raise InvalidInput(f"{what} {path!r}: give an absolute path", code="invalid_path")
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise InvalidInput(f"{what} {path} does not exist", code="image_not_found") from None
    except OSError as exc:
        raise InvalidInput(
            f"{what} {path} cannot be read: {exc.strerror}", code="image_unreadable"
        ) from None
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISBLK(info.st_mode)):
        raise InvalidInput(
            f"{what} {path} is not a regular file or block device", code="image_unreadable"
        )
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise InvalidInput(
            f"{what} {path} cannot be read: {exc.strerror}", code="image_unreadable"
        ) from None


def detect_local_format(path: str) -> str:
    with open(path, "rb") as f:
        return "qcow2" if f.read(4) == QCOW2_MAGIC else "raw"


def resolve_image(host: Host, path: str, declared: str | None, what: str) -> str:
    """Check an existing image on the host and return its format."""
    if host.is_local:
        check_local_file(path, what)
        detected = detect_local_format(path)
        if declared == "qcow2" and detected != "qcow2":
            raise InvalidInput(
                f"{what} {path} is not a qcow2 image (no qcow2 header)",
                code="image_format_mismatch",
            )
        return declared or detected
    xml = host.storage.volume_xml_by_path(path)
    if xml is None:
        raise InvalidInput(
            f"{what} {path} is not a volume in any storage pool of {host.uri} "
            "(remote images must live in a pool)",
            code="image_not_found",
        )
    return declared or Volume.parse(xml).format or "raw"


def ensure_pool(host: Host, name: str, path: Path) -> bool:
    """Make sure the directory pool for new disks exists and runs (like virt-install does).

    Returns True if it had to define the pool (so a failed VM creation can remove it again).
    """
    xml = host.storage.pool_xml(name)
    if xml is None:
        pool = Pool()
        pool.type = "dir"
        pool.name = name
        pool.target_path = str(path)
        log.info("creating storage pool %s at %s", name, path)
        host.storage.define_pool(pool.to_xml())
        return True
    if not host.storage.pool_is_active(name):
        host.storage.start_pool(name)
    return False


def create_blank_disk(host: Host, pool: str, name: str, size: int) -> str:
    """Create an empty qcow2 volume; returns its path."""
    vol = Volume()
    vol.name = name
    vol.capacity = size
    vol.capacity_unit = "bytes"
    vol.format = "qcow2"
    vol.compat = QCOW2_COMPAT
    return host.storage.create_volume(pool, vol.to_xml())


def delete_disk(host: Host, path: str) -> bool:
    """Delete a volume by path; False if no such volume exists any more."""
    try:
        host.storage.delete_volume_by_path(path)
    except NotFound:
        return False
    return True
