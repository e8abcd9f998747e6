"""Where a VM's files go and what they are called: the one owner of the names virtkit derives
from a VM's name (its disk volumes, its cloud-init seed, its serial console log) and of the
storage pool its volumes go into."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from virtkit.backend.host import Host
from virtkit.services import storage
from virtkit.services.transaction import Transaction

SEED_SUFFIX = "-seed.iso"
SERIAL_LOG_SUFFIX = "-serial0.log"


def disk_volume(vm: str, index: int) -> str:
    """The volume name of a VM's own disk number ``index`` (``web1-disk0.qcow2``)."""
    return f"{vm}-disk{index}.qcow2"


def free_disk_volume(vm: str, taken: set[str]) -> str:
    """The first ``<vm>-diskN.qcow2`` not in ``taken`` (disks may come and go)."""
    index = 0
    while disk_volume(vm, index) in taken:
        index += 1
    return disk_volume(vm, index)


def snapshot_overlay(vm: str, target: str, snapshot: str) -> str:
    """The file name of the overlay a snapshot puts on a disk (``web1-vda.s1.qcow2``): what the
    VM writes after the snapshot."""
    return f"{vm}-{target}.{snapshot}.qcow2"


def revert_overlay(vm: str, target: str, snapshot: str, taken: set[str]) -> str:
    """The file name of the overlay a revert puts on a snapshot's data (``web1-vda.s1-r1.qcow2``):
    the first not in ``taken``."""
    index = 1
    while f"{vm}-{target}.{snapshot}-r{index}.qcow2" in taken:
        index += 1
    return f"{vm}-{target}.{snapshot}-r{index}.qcow2"


def snapshot_memory(vm: str, snapshot: str) -> str:
    """The file name of a snapshot's saved memory (``web1.s1.mem``)."""
    return f"{vm}.{snapshot}.mem"


def seed_volume(vm: str) -> str:
    """The volume name of a VM's cloud-init seed ISO."""
    return f"{vm}{SEED_SUFFIX}"


def is_seed(path: str | None) -> bool:
    """Whether a (CD-ROM source) path is named as a virtkit seed ISO."""
    return (path or "").endswith(SEED_SUFFIX)


@dataclass(frozen=True)
class VMFiles:
    """The pool a host's VM volumes go into, and where their console logs are."""

    pool: str = "default"
    pool_path: Path = Path("/var/lib/libvirt/images")  # the pool's directory, if virtkit makes it
    console_log_dir: Path | None = Path("/var/log/libvirt/qemu")  # None: no console logs

    disk_volume = staticmethod(disk_volume)
    free_disk_volume = staticmethod(free_disk_volume)
    seed_volume = staticmethod(seed_volume)
    snapshot_overlay = staticmethod(snapshot_overlay)
    revert_overlay = staticmethod(revert_overlay)
    snapshot_memory = staticmethod(snapshot_memory)
    is_seed = staticmethod(is_seed)

    def serial_log(self, vm: str) -> Path | None:
        """The file a VM's first serial console is logged to (None: no console log dir)."""
        if self.console_log_dir is None:
            return None
        return self.console_log_dir / f"{vm}{SERIAL_LOG_SUFFIX}"

    def ensure_pool(self, host: Host, tx: Transaction) -> None:
        """Make the VM pool if there is none, its removal the undo."""
        if storage.ensure_pool(host, self.pool, self.pool_path):
            tx.on_rollback(
                f"remove storage pool {self.pool}",
                functools.partial(host.storage.remove_pool, self.pool),
            )
