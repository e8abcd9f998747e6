"""Cloning a shut-off VM: the definition's rewrite (pure functions on a ``Domain``), then a
transaction that copies its disks, gives it a seed of its own and defines it."""

from __future__ import annotations

import builtins
import functools
import logging
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from virtkit import cloudinit
from virtkit.backend.host import Host
from virtkit.errors import AlreadyExists, InvalidInput, Unsupported
from virtkit.services import hostkeys, storage
from virtkit.services.hostkeys import PendingHostKeys
from virtkit.services.nics import macs_in_use, new_mac
from virtkit.services.pools import PoolService
from virtkit.services.transaction import Transaction
from virtkit.services.vmcreate import make_seed, spare_root_ports, undefine
from virtkit.services.vmfiles import VMFiles
from virtkit.services.vmseed import seed_bytes, seed_disks
from virtkit.services.vmstate import lookup, state_error
from virtkit.specs import VMState, validate_name
from virtkit.xml.domain import Disk, Domain, OwnedDisk
from virtkit.xml.storage import Volume

log = logging.getLogger(__name__)

# -- the definition's rewrite (pure, but for the free port a user-mode NIC's forward needs) -----


def free_local_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def renew_user_nics(
    dom: Domain, taken: set[str], free_port: Callable[[], int] = free_local_port
) -> builtins.list[str]:
    """A clone's user-mode NICs (QEMU arguments): new MACs (added to ``taken``), and a new free
    local port for an SSH forward (the original's would collide, and lead to the original)."""
    macs = []
    for arg in dom.qemu_args:
        value = arg.value or ""
        if value.startswith("virtio-net-pci,") and "mac=" in value:
            mac = new_mac(taken)
            taken.add(mac)
            macs.append(mac)
            arg.value = re.sub(r"mac=[0-9a-fA-F:]+", f"mac={mac}", value)
        elif value.startswith("user,") and "hostfwd=tcp:127.0.0.1:" in value:
            forward = f"hostfwd=tcp:127.0.0.1:{free_port()}-"
            arg.value = re.sub(r"hostfwd=tcp:127\.0\.0\.1:\d+-", forward, value)
    return macs


def renew_identity(
    dom: Domain,
    new_name: str,
    taken: set[str],
    free_port: Callable[[], int] = free_local_port,
) -> str | None:
    """Name, no UUID (libvirt makes one), new MACs unique on the host (``taken``: libvirt's own
    pick is not checked) for NICs and user-mode NICs. Returns the first NIC's new MAC."""
    dom.name = new_name
    dom.uuid = None
    for nic in dom.interfaces:
        nic.mac = new_mac(taken)
        taken.add(nic.mac)
    user_macs = renew_user_nics(dom, taken, free_port)
    return next((i.mac for i in dom.interfaces if i.mac), None) or next(iter(user_macs), None)


def rename_serial_logs(dom: Domain, log_file: Path | None) -> None:
    """Logged serial consoles log to the clone's own file (``log_file``; None: left alone)."""
    for serial in dom.serials:
        if serial.log is not None and log_file is not None:
            serial.log.file = str(log_file)


def disown_disks(dom: Domain) -> builtins.list[Disk]:
    """Forget the disks the original owns (the clone owns only what is made for it); returns
    its cloud-init seeds (owned CD-ROMs named as seeds), which the clone gets anew."""
    meta = dom.ensure_virtkit_metadata()
    owned_before = set(dom.owned_disk_paths)
    for entry in list(meta.owned_disks):
        meta.owned_disks.remove(entry)
    return seed_disks(dom, owned_before)


def own_disk(dom: Domain, path: str) -> None:
    owned = OwnedDisk()
    owned.path = path
    dom.ensure_virtkit_metadata().owned_disks.append(owned)


def point_at_copy(dom: Domain, disk: Disk, path: str, fmt: str | None) -> None:
    """``disk`` is now the file ``path`` (a copy made for the clone, which owns it)."""
    disk.source_dev = disk.source_pool = disk.source_volume = None
    disk.source_file = path
    disk.type = "file"
    disk.driver_type = fmt
    own_disk(dom, path)


@dataclass(frozen=True)
class CloneRewrite:
    first_mac: str | None  # what the clone's seed matches its network config to
    seeds: builtins.list[Disk]  # the original's seed CD-ROMs, to be replaced
    renew_keys: bool  # virtkit made (and pinned) the original's SSH host keys


def rewrite_for_clone(
    dom: Domain,
    new_name: str,
    taken: set[str],
    log_file: Path | None,
    free_port: Callable[[], int] = free_local_port,
) -> CloneRewrite:
    """Everything a clone's definition changes before its storage is made."""
    first_mac = renew_identity(dom, new_name, taken, free_port)
    rename_serial_logs(dom, log_file)
    seeds = disown_disks(dom)
    # a clone is another machine: new SSH host keys, if virtkit made the original's
    renew_keys = bool(seeds and dom.ensure_virtkit_metadata().pinned_host_keys)
    return CloneRewrite(first_mac, seeds, renew_keys)


# -- the clone -----------------------------------------------------------------------------------


class VMCloner:
    def __init__(self, host: Host, pools: PoolService | None, files: VMFiles) -> None:
        self.host = host
        self.pools = pools
        self.files = files

    def clone(
        self, name: str, new_name: str, *, linked: bool = False, owner: str | None = None
    ) -> None:
        """A new VM from a shut-off one: every disk copied (or, ``linked``, a qcow2 overlay on
        the source's disk, which must then stay unchanged), new UUID, new MAC addresses.
        CD-ROMs keep their media; the clone owns its new disks. ``owner``: the clone's owner
        (default: the original's)."""
        validate_name(new_name)
        guest = lookup(self.host, name)
        state = guest.state()[0]
        if state != VMState.SHUTOFF:
            raise state_error(name, "clone", state)
        if self.host.exists(new_name):
            raise AlreadyExists(f"a VM named {new_name!r} already exists", code="vm_exists")
        if self.pools is None:
            raise Unsupported("this client has no storage service for clones")
        dom = guest.definition(inactive=True)
        sources = self._sources(dom, name, linked=linked)
        rewrite = rewrite_for_clone(
            dom, new_name, macs_in_use(self.host), self.files.serial_log(new_name)
        )
        if owner is not None:
            dom.ensure_virtkit_metadata().owner = owner
        pending = hostkeys.start() if rewrite.renew_keys else None
        try:
            self._clone_storage(dom, sources, rewrite, name, new_name, pending, linked=linked)
        finally:
            if pending is not None:
                pending.cancel()
        log.info("cloned VM %s to %s (%s)", name, new_name, "linked" if linked else "full")

    def _sources(self, dom: Domain, name: str, *, linked: bool) -> builtins.list[tuple[Disk, str]]:
        """The disks to copy, each with its pool: pool volumes only, templates if ``linked``."""
        assert self.pools is not None
        sources = []
        for disk in dom.disks:
            if disk.device != "disk":
                continue
            pool = self.host.storage.volume_pool_by_path(disk.source or "")
            if pool is None:
                raise InvalidInput(
                    f"disk {disk.target_dev} of {name!r} ({disk.source}) is not a volume in a "
                    "storage pool: virtkit clones only pool volumes",
                    code="disk_not_in_pool",
                )
            if linked and not self.pools.is_template(disk.source or ""):
                raise InvalidInput(
                    f"a linked clone needs bases that never change: disk {disk.target_dev} of "
                    f"{name!r} is not a template (make a full clone, or mark its disks as "
                    "templates with 'virtkit image template')",
                    code="not_a_template",
                )
            sources.append((disk, pool))
        return sources

    def _clone_storage(
        self,
        dom: Domain,
        sources: builtins.list[tuple[Disk, str]],
        rewrite: CloneRewrite,
        name: str,
        new_name: str,
        pending: PendingHostKeys | None,
        *,
        linked: bool,
    ) -> None:
        """The clone's disks and seed, then its definition (a transaction)."""
        assert self.pools is not None
        with Transaction(f"cloning {name} to {new_name}") as tx:
            self.files.ensure_pool(self.host, tx)
            for index, (disk, pool) in enumerate(sources):
                volume = Volume.parse(self.host.storage.volume_xml_by_path(disk.source or "") or "")
                copy = self.pools.clone_volume(
                    pool,
                    volume.name or "",
                    self.files.disk_volume(new_name, index),
                    linked=linked,
                    target_pool=self.files.pool,
                )
                tx.on_rollback(
                    f"delete volume {copy.path}",
                    functools.partial(storage.delete_disk, self.host, copy.path),
                )
                point_at_copy(dom, disk, copy.path, copy.format)
            keys = None
            if rewrite.renew_keys:
                # without ssh-keygen (pending None): the original's keys are taken out of the
                # seed and nothing is pinned; the clone's cloud-init makes new ones
                keys = pending.result() if pending is not None else []
                dom.ensure_virtkit_metadata().pin_host_keys([k.public for k in keys])
            for cdrom in rewrite.seeds:
                made = self._reseed(cdrom, name, new_name, rewrite.first_mac, keys, tx)
                cdrom.source_file = made
                own_disk(dom, made)
            guest = self.host.define(dom.to_xml())
            tx.on_rollback(
                f"undefine VM {new_name}", functools.partial(undefine, self.host, new_name)
            )
            spare_root_ports(self.host, guest)

    def _reseed(
        self,
        cdrom: Disk,
        name: str,
        new_name: str,
        first_mac: str | None,
        keys: builtins.list[cloudinit.HostKey] | None,
        tx: Transaction,
    ) -> str:
        """A clone is a new instance: its own seed, with a fresh instance-id and name; returns
        its path."""
        assert self.pools is not None
        data = seed_bytes(self.host, self.pools, cdrom.source or "", name)
        fresh = cloudinit.reseed(data, new_name, cloudinit.new_instance_id(),
                                 mac=first_mac, host_keys=keys)  # fmt: skip
        return make_seed(self.host, self.pools, self.files, new_name, fresh, tx).path
