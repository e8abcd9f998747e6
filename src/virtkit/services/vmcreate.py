"""Creating a VM: after the checks (``vmplan``), a transaction that makes its pool, disks and
seed, defines it, and starts it; on any failure nothing of it remains."""

from __future__ import annotations

import builtins
import contextlib
import functools
import io
import logging
from collections.abc import Callable
from pathlib import Path

from virtkit.backend.capabilities import CapabilityProbe
from virtkit.backend.guest import Guest
from virtkit.backend.host import Host
from virtkit.errors import InvalidState
from virtkit.services import storage
from virtkit.services.domainbuilder import (
    SPARE_ROOT_PORTS,
    BuildPlan,
    ResolvedDisk,
    add_root_ports,
    build_domain,
    free_root_ports,
)
from virtkit.services.images import ImageService
from virtkit.services.pools import PoolService
from virtkit.services.transaction import Transaction
from virtkit.services.vmfiles import VMFiles
from virtkit.services.vmplan import CreateChecks
from virtkit.specs import DiskSpec, VMSpec, VolumeSpec, format_size
from virtkit.xml.storage import Pool

log = logging.getLogger(__name__)


class VMCreator:
    """``vm create`` and its ``--print-xml`` preview."""

    def __init__(
        self,
        host: Host,
        probe: CapabilityProbe,
        pools: PoolService | None,
        images: ImageService | None,
        files: VMFiles,
    ) -> None:
        self.host = host
        self.pools = pools
        self.files = files
        self.checks = CreateChecks(host, probe, images, files)

    def _make_disk(
        self, spec: VMSpec, index: int, disk: DiskSpec, plan: BuildPlan, tx: Transaction
    ) -> tuple[str, str]:
        """Create one of the VM's own disks (blank, or cloned from a template), registering its
        undo at once; returns its path and format."""
        volume = self.files.disk_volume(spec.name, index)
        pool = self.files.pool
        template = plan.templates.get(index)
        if template is None:
            assert disk.size is not None
            path = storage.create_blank_disk(self.host, pool, volume, disk.size)
            fmt = "qcow2"
        else:
            assert self.pools is not None
            clone = self.pools.clone_volume(
                template.pool, template.name, volume, linked=disk.linked, target_pool=pool
            )
            path, fmt = clone.path, clone.format or "qcow2"
        tx.on_rollback(
            f"delete volume {path}", functools.partial(storage.delete_disk, self.host, path)
        )
        if template is not None and disk.size is not None and disk.size > template.capacity:
            assert self.pools is not None
            self.pools.resize_volume(pool, volume, disk.size)
        return path, fmt

    def preview_xml(self, spec: VMSpec) -> str:
        """The domain XML ``create`` would define, after the same checks; creates nothing."""
        spec, plan = self.checks.prepare(spec)
        pool = self.host.storage.pool_xml(self.files.pool)
        pool_dir = (Pool.parse(pool).target_path if pool else None) or str(self.files.pool_path)
        new_disks = [
            ResolvedDisk(f"{pool_dir}/{self.files.disk_volume(spec.name, i)}", "qcow2", d.bus,
                         owned=True)
            for i, d in enumerate(d for d in spec.disks if d.is_new)
        ]  # fmt: skip
        seed = None
        if plan.seed is not None:
            path = f"{pool_dir}/{self.files.seed_volume(spec.name)}"
            seed = ResolvedDisk(path, "raw", "scsi", device="cdrom", readonly=True, owned=True)
        return build_domain(spec, plan.with_new_disks(spec, new_disks, seed)).to_xml()

    def create(
        self, spec: VMSpec, *, start: bool = False, progress: Callable[[str], None] | None = None
    ) -> None:
        """Create a VM from a validated spec; on any failure nothing of it remains."""
        say = progress or (lambda _msg: None)
        # ssh-keygen runs while the checks are made
        spec, plan = self.checks.prepare(spec, host_keys=True)
        with Transaction(f"creating VM {spec.name}") as tx:
            new_disks: builtins.list[ResolvedDisk] = []
            new = [d for d in spec.disks if d.is_new]
            if new or plan.seed is not None:
                self.files.ensure_pool(self.host, tx)
            for index, disk in enumerate(new):
                what = f"a clone of {disk.image}" if disk.image else format_size(disk.size or 0)
                say(f"creating disk {self.files.disk_volume(spec.name, index)} ({what})")
                path, fmt = self._make_disk(spec, index, disk, plan, tx)
                new_disks.append(
                    ResolvedDisk(path, fmt, disk.bus, readonly=disk.readonly, owned=True)
                )
            seed = None
            if plan.seed is not None:
                say(f"writing the cloud-init seed {self.files.seed_volume(spec.name)}")
                seed = make_seed(self.host, self.pools, self.files, spec.name, plan.seed, tx)
            plan = plan.with_new_disks(spec, new_disks, seed)
            xml = build_domain(spec, plan).to_xml()
            log_file = Path(plan.serial_log) if plan.serial_log else None
            if log_file is not None and self.host.is_local and not log_file.exists():
                # a failed start leaves QEMU's console log behind; it is this VM's, so it goes
                tx.on_rollback(
                    f"remove console log {log_file}",
                    functools.partial(log_file.unlink, missing_ok=True),
                )
            say(f"defining {spec.name} ({plan.domain_type}, {plan.machine})")
            guest = self.host.define(xml)
            # Undo by name: the guest object dies with its connection if libvirtd restarts.
            tx.on_rollback(
                f"undefine VM {spec.name}", functools.partial(undefine, self.host, spec.name)
            )
            spare_root_ports(self.host, guest)
            if spec.autostart:
                guest.set_autostart(True)
            if start:
                say(f"starting {spec.name}")
                guest.start()
        log.info("created VM %s (%s)", spec.name, plan.domain_type)


def make_seed(
    host: Host,
    pools: PoolService | None,
    files: VMFiles,
    name: str,
    data: bytes,
    tx: Transaction,
) -> ResolvedDisk:
    """The seed ISO as a raw volume beside the VM's disks (owned: removed with the VM)."""
    assert pools is not None
    volume = pools.create_volume(
        files.pool,
        VolumeSpec.model_validate(
            {"name": files.seed_volume(name), "size": f"{len(data)}B", "format": "raw"}
        ),
    )
    tx.on_rollback(
        f"delete volume {volume.path}", functools.partial(storage.delete_disk, host, volume.path)
    )
    pools.upload(files.pool, volume.name, io.BytesIO(data), len(data))
    return ResolvedDisk(volume.path, "raw", "scsi", device="cdrom", readonly=True, owned=True)


def spare_root_ports(host: Host, guest: Guest) -> None:
    """On a PCIe machine, free root ports for hot-plug, counted after libvirt has placed
    the devices (it fills any port it is given)."""
    dom = guest.definition(inactive=True, secure=True)  # keeps graphics passwords
    if not any(c.model == "pcie-root" for c in dom.controllers):
        return
    missing = SPARE_ROOT_PORTS - free_root_ports(dom)
    if missing > 0:
        add_root_ports(dom, missing)
        host.define(dom.to_xml())


def undefine(host: Host, name: str) -> None:
    """Power off and undefine the VM ``name`` (an undo: looked up by name, which works after a
    reconnect)."""
    guest = host.lookup(name)
    with contextlib.suppress(InvalidState):
        guest.destroy()  # started by someone else meanwhile, or by autostart
    guest.undefine()
