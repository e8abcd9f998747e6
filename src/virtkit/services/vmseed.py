"""A VM's cloud-init seed: finding it (an owned CD-ROM named as a seed), reading its bytes
through the storage pool that holds it (so it works for remote hosts too), and showing what it
carries with its secrets hidden."""

from __future__ import annotations

from typing import TYPE_CHECKING

from virtkit.backend.host import Host
from virtkit.errors import InvalidInput, NotFound
from virtkit.services.vmfiles import is_seed
from virtkit.services.vmstate import lookup
from virtkit.specs.cloudinit import SeedView
from virtkit.xml.domain import Disk, Domain
from virtkit.xml.storage import Volume

if TYPE_CHECKING:
    from virtkit.services.pools import PoolService


def seed_disks(dom: Domain, owned: set[str]) -> list[Disk]:
    """The VM's seed CD-ROMs: owned by it (virtkit made them) and named as seeds."""
    return [d for d in dom.disks
            if d.device == "cdrom" and d.source in owned and is_seed(d.source)]  # fmt: skip


def seed_bytes(host: Host, pools: PoolService, path: str, vm: str) -> bytes:
    """The seed ISO at ``path`` (a volume in a pool), read through libvirt."""
    pool = host.storage.volume_pool_by_path(path)
    volume = Volume.parse(host.storage.volume_xml_by_path(path) or "")
    if pool is None or not volume.name:
        raise InvalidInput(
            f"the cloud-init seed of {vm!r} ({path}) is not a volume in a pool",
            code="disk_not_in_pool",
        )
    return b"".join(pools.download(pool, volume.name))


def describe(host: Host, pools: PoolService, name: str) -> SeedView:
    """What the VM's seed carries (:func:`virtkit.cloudinit.seedview.describe_seed`)."""
    from virtkit.cloudinit.seedview import describe_seed

    guest = lookup(host, name)
    config = guest.config()
    seeds = seed_disks(config, set(config.owned_disk_paths))
    if not seeds or not seeds[0].source:
        raise NotFound(f"VM {name!r} has no cloud-init seed", code="no_seed")
    path = seeds[0].source
    return describe_seed(seed_bytes(host, pools, path, name), path)
