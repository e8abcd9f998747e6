"""VM lifecycle: create, list, show, start, shutdown, stop, reboot, reset, pause, resume, set,
autostart, delete. The CLI and (later) the API call these and nothing else."""

from __future__ import annotations

import builtins
import contextlib
import functools
import io
import logging
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from virtkit import cloudinit
from virtkit.backend.capabilities import CapabilityProbe, HostFacts
from virtkit.backend.guest import Guest
from virtkit.backend.host import Host
from virtkit.backend.procfs import process_uptime, qemu_pids
from virtkit.errors import (
    AlreadyExists,
    InvalidInput,
    InvalidState,
    NotFound,
    Timeout,
    Unsupported,
    VirtkitError,
)
from virtkit.services import hostkeys, storage
from virtkit.services.domainbuilder import (
    CPU_MODES,
    SPARE_ROOT_PORTS,
    BuildPlan,
    ResolvedDisk,
    add_root_ports,
    build_domain,
    free_root_ports,
)
from virtkit.services.hostkeys import PendingHostKeys
from virtkit.services.images import ImageService
from virtkit.services.nics import macs_in_use, new_mac
from virtkit.services.pools import PoolService
from virtkit.services.transaction import Transaction
from virtkit.specs import (
    DeleteResult,
    DiskSpec,
    DiskView,
    GraphicsView,
    ImageInfo,
    SetResult,
    VMInfo,
    VMSetSpec,
    VMSpec,
    VMState,
    VMSummary,
    VolumeSpec,
    format_size,
    validate_name,
)
from virtkit.xml.domain import Disk, Domain, OwnedDisk
from virtkit.xml.storage import Pool, Volume

log = logging.getLogger(__name__)

DEFAULT_MACHINE = "q35"


@dataclass(frozen=True)
class _Prepared:
    """What the checks before a create decided."""

    facts: HostFacts
    machine: str
    cpu: str | None
    existing: list[ResolvedDisk]
    serial_log: str | None
    templates: dict[int, ImageInfo]  # disk index -> template to clone
    macs: list[str]  # one per spec.nics
    seed: bytes | None = None  # the cloud-init seed ISO, built and checked before anything
    host_keys: list[str] = field(default_factory=list)  # public halves of the seed's host keys


class VMService:
    """Everything one does to VMs on one host."""

    def __init__(
        self,
        host: Host,
        probe: CapabilityProbe,
        *,
        pools: PoolService | None = None,
        images: ImageService | None = None,
        storage_pool: str = "default",
        storage_pool_path: Path = Path("/var/lib/libvirt/images"),
        console_log_dir: Path | None = Path("/var/log/libvirt/qemu"),
    ) -> None:
        self.host = host
        self.probe = probe
        self.pools = pools
        self.images = images
        self.storage_pool = storage_pool
        self.storage_pool_path = storage_pool_path
        self.console_log_dir = console_log_dir

    # -- reading ----------------------------------------------------------------------------

    def _guest(self, name: str) -> Guest:
        validate_name(name)
        return self.host.lookup(name)

    def _uptimes(self) -> dict[str, float | None]:
        """UUID -> seconds since its QEMU started, for VMs running on this (local) host."""
        if not self.host.is_local:
            return {}
        return {uuid: process_uptime(pid) for uuid, pid in qemu_pids().items()}

    def _config(self, guest: Guest) -> Domain:
        """The persistent definition, where virtkit's metadata (tags, owned disks) lives."""
        return Domain.parse(guest.xml(inactive=guest.is_persistent()))

    def _summary_fields(
        self, guest: Guest, config: Domain, uptimes: dict[str, float | None]
    ) -> dict[str, object]:
        state, max_kib, cur_kib, vcpus = guest.info()
        persistent = guest.is_persistent()
        uuid = guest.uuid
        return {
            "name": guest.name,
            "uuid": uuid,
            "state": state,
            "vcpus": vcpus,
            "memory": cur_kib * 1024,
            "max_memory": max_kib * 1024,
            "uptime": uptimes.get(uuid) if state.is_active else None,
            "autostart": guest.autostart() if persistent else False,
            "persistent": persistent,
            "tags": config.tag_names,
        }

    def list(self) -> list[VMSummary]:
        summaries = []
        uptimes = self._uptimes()
        for guest in self.host.list_guests():
            try:
                fields = self._summary_fields(guest, self._config(guest), uptimes)
                summaries.append(VMSummary.model_validate(fields))
            except NotFound:
                continue  # undefined while we listed
        return sorted(summaries, key=lambda s: s.name)

    def get(self, name: str) -> VMInfo:
        guest = self._guest(name)
        config = self._config(guest)
        fields = self._summary_fields(guest, config, self._uptimes())
        _state, reason = guest.state()
        dom = Domain.parse(guest.xml())
        owned = set(config.owned_disk_paths)
        os_el = dom.os
        cpu = dom.cpu
        serial = next(iter(dom.serials), None)
        return VMInfo.model_validate(
            {
                **fields,
                "state_reason": reason,
                "domain_type": dom.type or "",
                "machine": os_el.machine if os_el else None,
                "arch": os_el.arch if os_el else None,
                "max_vcpus": dom.vcpu or 0,
                "cpu": (cpu.model or cpu.mode) if cpu else None,
                "description": dom.description,
                "boot": [b.dev for b in os_el.boot if b.dev] if os_el else [],
                "kernel": os_el.kernel if os_el else None,
                "initrd": os_el.initrd if os_el else None,
                "cmdline": os_el.cmdline if os_el else None,
                "disks": [
                    DiskView(
                        target=d.target_dev or "",
                        device=d.device or "disk",
                        bus=d.target_bus,
                        source=d.source,
                        format=d.driver_type,
                        readonly=d.readonly,
                        owned=d.source in owned,
                    )
                    for d in dom.disks
                ],
                "graphics": [
                    GraphicsView(
                        type=g.type or "",
                        listen=g.listen,
                        port=g.port if g.port and g.port > 0 else None,
                    )
                    for g in dom.graphics
                ],
                "serial_console": serial is not None,
                "ksm": not config.nosharepages,
                "serial_log": serial.log.file if serial is not None and serial.log else None,
                "console_pty": serial.source_path if serial is not None else None,
                "created_by_virtkit": config.virtkit is not None,
                "guest_agent": _agent_state(dom),
                "ssh_host_keys": config.virtkit.pinned_host_keys if config.virtkit else [],
            }
        )

    def xml(self, name: str, *, inactive: bool = False) -> str:
        return self._guest(name).xml(inactive=inactive)

    def state(self, name: str) -> VMState:
        return self._guest(name).state()[0]

    # -- creating ---------------------------------------------------------------------------

    def _check_memory(self, memory: int) -> None:
        total, _free = self.host.memory()
        if memory > total:
            raise InvalidInput(
                f"memory {format_size(memory)} is more than the host has ({format_size(total)})",
                code="memory_too_large",
            )

    def _vcpu_limit(self, arch: str, machine: str | None, domain_type: str) -> int:
        limit = self.probe.domain_capabilities(arch, machine, domain_type).max_vcpus
        return limit or self.host.max_vcpus(domain_type)

    def _check_vcpus(self, count: int, limit: int, machine: str | None) -> None:
        if count > limit:
            raise InvalidInput(
                f"{count} vCPUs is more than machine type {machine} allows ({limit})",
                code="too_many_vcpus",
            )

    def _check_against_host(self, spec: VMSpec, facts: HostFacts) -> tuple[str, str | None]:
        """Checks that need the host; returns (machine, cpu)."""
        machine = spec.machine or DEFAULT_MACHINE
        if machine not in facts.machines:
            shown = ", ".join(m for m in facts.machines if "-" not in m) or "none"
            raise InvalidInput(
                f"unknown machine type {machine!r} for {facts.domain_type} on "
                f"{spec.arch} (this host has: {shown}, and versioned names)",
                code="unknown_machine",
            )
        self._check_memory(spec.memory)
        self._check_vcpus(
            spec.vcpus, self._vcpu_limit(spec.arch, machine, facts.domain_type), machine
        )
        domcaps = self.probe.domain_capabilities(spec.arch, machine, facts.domain_type)
        cpu = spec.cpu or ("host-passthrough" if facts.domain_type == "kvm" else None)
        if cpu in CPU_MODES:
            if cpu not in domcaps.supported_cpu_modes():
                raise Unsupported(
                    f"CPU mode {cpu!r} is not available under "
                    f"{facts.domain_type} on this host (available: "
                    f"{', '.join(domcaps.supported_cpu_modes())})",
                    code="cpu_mode_unsupported",
                )
        elif cpu is not None and cpu not in domcaps.cpu_models():
            raise InvalidInput(
                f"unknown CPU model {cpu!r} (see 'virsh cpu-models {spec.arch}')",
                code="unknown_cpu_model",
            )
        return machine, cpu

    def _resolve_existing(self, spec: VMSpec, machine: str) -> builtins.list[ResolvedDisk]:
        """Check every file the VM will use, before anything is created."""
        resolved = []
        for disk in spec.disks:
            if disk.path is not None:
                if not disk.readonly and self.images and self.images.is_template(disk.path):
                    raise InvalidInput(
                        f"{disk.path} is a template: give it as 'image' (a clone) or attach it "
                        "readonly, so that its linked clones stay intact",
                        code="template_writable",
                    )
                fmt = storage.resolve_image(self.host, disk.path, disk.format, "disk image")
                resolved.append(ResolvedDisk(disk.path, fmt, disk.bus, readonly=disk.readonly))
        if spec.cdrom:
            storage.resolve_image(self.host, spec.cdrom, "raw", "CD-ROM image")
            bus = spec.cdrom_bus or ("ide" if "q35" not in machine else "sata")
            resolved.append(ResolvedDisk(spec.cdrom, "raw", bus, device="cdrom", readonly=True))
        for path, what in ((spec.kernel, "kernel"), (spec.initrd, "initrd")):
            if path and self.host.is_local:
                storage.check_local_file(path, what)
        return resolved

    def _prepare(self, spec: VMSpec, host_keys: PendingHostKeys | None = None) -> _Prepared:
        """Every check that can be made before anything is created. ``host_keys``, being made
        meanwhile, go into the seed."""
        if self.host.exists(spec.name):
            raise AlreadyExists(f"a VM named {spec.name!r} already exists", code="vm_exists")
        facts = self.probe.facts(spec.arch)
        machine, cpu = self._check_against_host(spec, facts)
        existing = self._resolve_existing(spec, machine)
        serial_log = (
            str(self.console_log_dir / f"{spec.name}-serial0.log")
            if spec.serial and self.console_log_dir
            else None
        )
        macs = self._macs(spec)
        templates = self._templates(spec)
        keys = host_keys.result() if host_keys is not None else []
        return _Prepared(
            facts, machine, cpu, existing, serial_log, templates, macs,
            self._seed(spec, macs, keys), [k.public for k in keys],
        )  # fmt: skip

    def _host_keys(self, spec: VMSpec) -> PendingHostKeys | None:
        """The guest's SSH host keys, being made, unless the spec or its user-data leaves them
        to the guest, or its template is Windows (cloudbase-init does not read ``ssh_keys``)."""
        c = spec.cloud_init
        if c is None or not c.host_keys or cloudinit.sets_host_keys(c.user_data):
            return None
        first = spec.disks[0] if spec.disks else None
        if first is not None and first.image is not None and self.images is not None:
            os_name = self.images.resolve_template(first.image, self.storage_pool).os or ""
            if os_name.lower().startswith("win"):
                log.info("%s: a Windows template (cloudbase-init) makes its own SSH host keys",
                         spec.name)  # fmt: skip
                return None
        return hostkeys.start()

    @staticmethod
    def _seed(
        spec: VMSpec, macs: builtins.list[str], host_keys: builtins.list[cloudinit.HostKey]
    ) -> bytes | None:
        """The cloud-init seed ISO for a spec (pure; every check of the user's input here)."""
        c = spec.cloud_init
        if c is None:
            return None
        network = c.network_config
        if c.ip:
            network = cloudinit.static_network(c.ip, c.gateway, c.dns, macs[0] if macs else None)
        ci = cloudinit.CloudInit(
            user=c.user, ssh_keys=list(c.ssh_keys), password_hash=c.password_hash,
            password=c.password.get_secret_value() if c.password else None,
            hostname=c.hostname, packages=list(c.packages), runcmd=list(c.runcmd),
            user_data=c.user_data, network_config=network, seed=c.seed, host_keys=host_keys,
        )  # fmt: skip
        return cloudinit.build_seed(ci, spec.name, cloudinit.new_instance_id())

    @staticmethod
    def _seed_name(name: str) -> str:
        return f"{name}-seed.iso"

    def _make_seed(self, name: str, data: bytes, tx: Transaction) -> ResolvedDisk:
        """The seed ISO as a raw volume beside the VM's disks (owned: removed with the VM)."""
        assert self.pools is not None
        volume = self.pools.create_volume(
            self.storage_pool,
            VolumeSpec.model_validate(
                {"name": self._seed_name(name), "size": f"{len(data)}B", "format": "raw"}
            ),
        )
        tx.on_rollback(
            f"delete volume {volume.path}",
            functools.partial(storage.delete_disk, self.host, volume.path),
        )
        self.pools.upload(self.storage_pool, volume.name, io.BytesIO(data), len(data))
        return ResolvedDisk(volume.path, "raw", "scsi", device="cdrom", readonly=True, owned=True)

    def _macs(self, spec: VMSpec) -> builtins.list[str]:
        """A MAC per NIC (given, or new and unique on the host), after checking what each NIC
        connects to exists."""
        if not spec.nics:
            return []
        taken = macs_in_use(self.host)
        macs: builtins.list[str] = []
        for nic in spec.nics:
            if nic.network:
                validate_name(nic.network, "network")
                self.host.networks.state(nic.network)  # NotFound: "no network named ..."
            for device, what in ((nic.bridge, "bridge"), (nic.direct, "interface")):
                if device and not self.host.interface_exists(device):
                    raise NotFound(
                        f"the host has no {what} named {device!r}", code="host_interface_not_found"
                    )
            if nic.mac is not None:
                if nic.mac in taken or nic.mac in macs:
                    raise InvalidInput(
                        f"MAC {nic.mac} is already used by a VM on this host", code="mac_in_use"
                    )
                macs.append(nic.mac)
            else:
                macs.append(new_mac(taken | set(macs)))
        return macs

    def _templates(self, spec: VMSpec) -> dict[int, ImageInfo]:
        found: dict[int, ImageInfo] = {}
        for index, disk in enumerate(d for d in spec.disks if d.is_new):
            if disk.image is None:
                continue
            if self.images is None:
                raise Unsupported("this client has no image service for templates")
            template = self.images.resolve_template(disk.image, self.storage_pool)
            if disk.size is not None and disk.size < template.capacity:
                raise InvalidInput(
                    f"disk size {format_size(disk.size)} is smaller than template "
                    f"{disk.image!r} ({format_size(template.capacity)})",
                    code="disk_smaller_than_template",
                )
            found[index] = template
        return found

    @staticmethod
    def _volume_name(spec: VMSpec, index: int) -> str:
        return f"{spec.name}-disk{index}.qcow2"

    def _make_disk(
        self, spec: VMSpec, index: int, disk: DiskSpec, prepared: _Prepared, tx: Transaction
    ) -> tuple[str, str]:
        """Create one of the VM's own disks (blank, or cloned from a template), registering its
        undo at once; returns its path and format."""
        volume = self._volume_name(spec, index)
        template = prepared.templates.get(index)
        if template is None:
            assert disk.size is not None
            path = storage.create_blank_disk(self.host, self.storage_pool, volume, disk.size)
            fmt = "qcow2"
        else:
            assert self.pools is not None
            clone = self.pools.clone_volume(
                template.pool,
                template.name,
                volume,
                linked=disk.linked,
                target_pool=self.storage_pool,
            )
            path, fmt = clone.path, clone.format or "qcow2"
        tx.on_rollback(
            f"delete volume {path}", functools.partial(storage.delete_disk, self.host, path)
        )
        if template is not None and disk.size is not None and disk.size > template.capacity:
            assert self.pools is not None
            self.pools.resize_volume(self.storage_pool, volume, disk.size)
        return path, fmt

    def _plan(
        self,
        spec: VMSpec,
        prepared: _Prepared,
        new_disks: builtins.list[ResolvedDisk],
        seed: ResolvedDisk | None = None,
    ) -> BuildPlan:
        # Keep the user's disk order: new disks take their places among existing ones.
        ordered: builtins.list[ResolvedDisk] = []
        new_iter, old_iter = iter(new_disks), iter(prepared.existing)
        for disk in spec.disks:
            ordered.append(next(new_iter) if disk.is_new else next(old_iter))
        ordered.extend(old_iter)  # the cdrom
        if seed is not None:
            ordered.append(seed)
        return BuildPlan(
            domain_type=prepared.facts.domain_type,
            machine=prepared.machine,
            disks=ordered,
            emulator=prepared.facts.emulator,
            cpu=prepared.cpu,
            serial_log=prepared.serial_log,
            macs=prepared.macs,
            host_keys=prepared.host_keys,
        )

    def _with_template_boot(self, spec: VMSpec) -> VMSpec:
        """A VM whose first disk is a template without a boot loader (``image build``) boots
        the kernel recorded with the template, unless the spec names its own."""
        first = spec.disks[0] if spec.disks else None
        if spec.kernel or first is None or first.image is None or self.images is None:
            return spec
        template = self.images.resolve_template(first.image, self.storage_pool)
        if not template.boot:
            return spec
        boot = template.boot
        return spec.model_copy(update={"kernel": boot["kernel"], "initrd": boot.get("initrd"),
                                       "cmdline": spec.cmdline or boot.get("cmdline")})  # fmt: skip

    def preview_xml(self, spec: VMSpec) -> str:
        """The domain XML ``create`` would define, after the same checks; creates nothing."""
        spec = self._with_template_boot(spec)
        prepared = self._prepare(spec)
        pool = self.host.storage.pool_xml(self.storage_pool)
        pool_dir = (Pool.parse(pool).target_path if pool else None) or str(self.storage_pool_path)
        new_disks = [
            ResolvedDisk(f"{pool_dir}/{self._volume_name(spec, i)}", "qcow2", d.bus, owned=True)
            for i, d in enumerate(d for d in spec.disks if d.is_new)
        ]
        seed = None
        if prepared.seed is not None:
            path = f"{pool_dir}/{self._seed_name(spec.name)}"
            seed = ResolvedDisk(path, "raw", "scsi", device="cdrom", readonly=True, owned=True)
        return build_domain(spec, self._plan(spec, prepared, new_disks, seed)).to_xml()

    def create(
        self, spec: VMSpec, *, start: bool = False, progress: Callable[[str], None] | None = None
    ) -> VMInfo:
        """Create a VM from a validated spec; on any failure nothing of it remains."""
        say = progress or (lambda _msg: None)
        spec = self._with_template_boot(spec)
        pending = self._host_keys(spec)  # ssh-keygen runs while the checks are made
        try:
            prepared = self._prepare(spec, pending)
        finally:
            if pending is not None:
                pending.cancel()
        with Transaction(f"creating VM {spec.name}") as tx:
            new_disks: builtins.list[ResolvedDisk] = []
            new = [d for d in spec.disks if d.is_new]
            needs_pool = bool(new) or prepared.seed is not None
            if needs_pool and storage.ensure_pool(
                self.host, self.storage_pool, self.storage_pool_path
            ):
                tx.on_rollback(
                    f"remove storage pool {self.storage_pool}",
                    functools.partial(self.host.storage.remove_pool, self.storage_pool),
                )
            for index, disk in enumerate(new):
                what = f"a clone of {disk.image}" if disk.image else format_size(disk.size or 0)
                say(f"creating disk {self._volume_name(spec, index)} ({what})")
                path, fmt = self._make_disk(spec, index, disk, prepared, tx)
                new_disks.append(
                    ResolvedDisk(path, fmt, disk.bus, readonly=disk.readonly, owned=True)
                )
            seed = None
            if prepared.seed is not None:
                say(f"writing the cloud-init seed {self._seed_name(spec.name)}")
                seed = self._make_seed(spec.name, prepared.seed, tx)
            xml = build_domain(spec, self._plan(spec, prepared, new_disks, seed)).to_xml()
            facts = prepared.facts
            log_file = Path(prepared.serial_log) if prepared.serial_log else None
            if log_file is not None and self.host.is_local and not log_file.exists():
                # a failed start leaves QEMU's console log behind; it is this VM's, so it goes
                tx.on_rollback(
                    f"remove console log {log_file}",
                    functools.partial(log_file.unlink, missing_ok=True),
                )
            say(f"defining {spec.name} ({facts.domain_type}, {prepared.machine})")
            guest = self.host.define(xml)
            # Undo by name: the guest object dies with its connection if libvirtd restarts.
            tx.on_rollback(f"undefine VM {spec.name}", functools.partial(self._undefine, spec.name))
            self._spare_root_ports(guest)
            if spec.autostart:
                guest.set_autostart(True)
            if start:
                say(f"starting {spec.name}")
                guest.start()
        log.info("created VM %s (%s)", spec.name, facts.domain_type)
        return self.get(spec.name)

    def _spare_root_ports(self, guest: Guest) -> None:
        """On a PCIe machine, free root ports for hot-plug, counted after libvirt has placed
        the devices (it fills any port it is given)."""
        dom = Domain.parse(guest.xml(inactive=True, secure=True))  # keeps graphics passwords
        if not any(c.model == "pcie-root" for c in dom.controllers):
            return
        missing = SPARE_ROOT_PORTS - free_root_ports(dom)
        if missing > 0:
            add_root_ports(dom, missing)
            self.host.define(dom.to_xml())

    @staticmethod
    def _renew_user_nics(dom: Domain, taken: set[str]) -> builtins.list[str]:
        """A clone's user-mode NICs (QEMU arguments): new MACs, and a new free local port for
        an SSH forward (the original's would collide, and lead to the original)."""
        macs = []
        for arg in dom.qemu_args:
            value = arg.value or ""
            if value.startswith("virtio-net-pci,") and "mac=" in value:
                mac = new_mac(taken)
                taken.add(mac)
                macs.append(mac)
                arg.value = re.sub(r"mac=[0-9a-fA-F:]+", f"mac={mac}", value)
            elif value.startswith("user,") and "hostfwd=tcp:127.0.0.1:" in value:
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", 0))
                    port = probe.getsockname()[1]
                forward = f"hostfwd=tcp:127.0.0.1:{port}-"
                arg.value = re.sub(r"hostfwd=tcp:127\.0\.0\.1:\d+-", forward, value)
        return macs

    def clone(self, name: str, new_name: str, *, linked: bool = False) -> VMInfo:
        """A new VM from a shut-off one: every disk copied (or, ``linked``, a qcow2 overlay on
        the source's disk, which must then stay unchanged), new UUID, new MAC addresses. CD-ROMs
        keep their media; the clone owns its new disks."""
        validate_name(new_name)
        guest = self._guest(name)
        state = guest.state()[0]
        if state != VMState.SHUTOFF:
            raise _state_error(name, "clone", state)
        if self.host.exists(new_name):
            raise AlreadyExists(f"a VM named {new_name!r} already exists", code="vm_exists")
        if self.pools is None:
            raise Unsupported("this client has no storage service for clones")
        dom = Domain.parse(guest.xml(inactive=True))
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
        dom.name = new_name
        dom.uuid = None
        taken = macs_in_use(self.host)
        for nic in dom.interfaces:
            nic.mac = new_mac(taken)  # unique on the host (libvirt's own pick is not checked)
            taken.add(nic.mac)
        user_macs = self._renew_user_nics(dom, taken)
        first_mac = next((i.mac for i in dom.interfaces if i.mac), None) or next(
            iter(user_macs), None
        )
        for serial in dom.serials:
            if serial.log is not None and self.console_log_dir is not None:
                serial.log.file = str(self.console_log_dir / f"{new_name}-serial0.log")
        meta = dom.ensure_virtkit_metadata()
        owned_before = set(dom.owned_disk_paths)
        for entry in list(meta.owned_disks):
            meta.owned_disks.remove(entry)
        seeds = [d for d in dom.disks if d.device == "cdrom" and d.source in owned_before
                 and (d.source or "").endswith("-seed.iso")]  # fmt: skip
        # a clone is another machine: new SSH host keys, if virtkit made the original's
        renew_keys = bool(seeds and meta.pinned_host_keys)
        pending = hostkeys.start() if renew_keys else None
        try:
            self._clone_storage(dom, sources, seeds, name, new_name, first_mac,
                                pending, renew_keys,
                                linked=linked)  # fmt: skip
        finally:
            if pending is not None:
                pending.cancel()
        log.info("cloned VM %s to %s (%s)", name, new_name, "linked" if linked else "full")
        return self.get(new_name)

    def _clone_storage(
        self,
        dom: Domain,
        sources: builtins.list[tuple[Disk, str]],
        seeds: builtins.list[Disk],
        name: str,
        new_name: str,
        first_mac: str | None,
        pending: PendingHostKeys | None,
        renew_keys: bool,
        *,
        linked: bool,
    ) -> None:
        """The clone's disks and seed, then its definition (a transaction)."""
        assert self.pools is not None
        meta = dom.ensure_virtkit_metadata()
        with Transaction(f"cloning {name} to {new_name}") as tx:
            if storage.ensure_pool(self.host, self.storage_pool, self.storage_pool_path):
                tx.on_rollback(
                    f"remove storage pool {self.storage_pool}",
                    functools.partial(self.host.storage.remove_pool, self.storage_pool),
                )
            for index, (disk, pool) in enumerate(sources):
                volume = Volume.parse(self.host.storage.volume_xml_by_path(disk.source or "") or "")
                copy = self.pools.clone_volume(
                    pool,
                    volume.name or "",
                    f"{new_name}-disk{index}.qcow2",
                    linked=linked,
                    target_pool=self.storage_pool,
                )
                tx.on_rollback(
                    f"delete volume {copy.path}",
                    functools.partial(storage.delete_disk, self.host, copy.path),
                )
                disk.source_dev = disk.source_pool = disk.source_volume = None
                disk.source_file = copy.path
                disk.type = "file"
                disk.driver_type = copy.format
                owned = OwnedDisk()
                owned.path = copy.path
                meta.owned_disks.append(owned)
            keys = None
            if renew_keys:
                # without ssh-keygen (pending None): the original's keys are taken out of the
                # seed and nothing is pinned; the clone's cloud-init makes new ones
                keys = pending.result() if pending is not None else []
                meta.pin_host_keys([k.public for k in keys])
            for cdrom in seeds:
                # a clone is a new instance: its own seed, with a fresh instance-id and name
                seed_pool = self.host.storage.volume_pool_by_path(cdrom.source or "")
                seed_volume = Volume.parse(
                    self.host.storage.volume_xml_by_path(cdrom.source or "") or ""
                )
                if seed_pool is None or not seed_volume.name:
                    raise InvalidInput(
                        f"the cloud-init seed of {name!r} ({cdrom.source}) is not a volume in a "
                        "pool: the clone cannot get a seed of its own",
                        code="disk_not_in_pool",
                    )
                data = b"".join(self.pools.download(seed_pool, seed_volume.name))
                fresh = cloudinit.reseed(data, new_name, cloudinit.new_instance_id(),
                                         mac=first_mac, host_keys=keys)  # fmt: skip
                made = self._make_seed(new_name, fresh, tx)
                cdrom.source_file = made.path
                owned = OwnedDisk()
                owned.path = made.path
                meta.owned_disks.append(owned)
            guest = self.host.define(dom.to_xml())
            tx.on_rollback(f"undefine VM {new_name}", functools.partial(self._undefine, new_name))
            self._spare_root_ports(guest)

    def _undefine(self, name: str) -> None:
        guest = self.host.lookup(name)
        with contextlib.suppress(InvalidState):
            guest.destroy()  # started by someone else meanwhile, or by autostart
        guest.undefine()

    # -- power ------------------------------------------------------------------------------

    def _require(self, name: str, allowed: tuple[VMState, ...], action: str) -> Guest:
        guest = self._guest(name)
        state = guest.state()[0]
        if state not in allowed:
            raise _state_error(name, action, state)
        return guest

    def start(self, name: str, *, paused: bool = False) -> None:
        guest = self._require(name, (VMState.SHUTOFF, VMState.CRASHED), "start")
        guest.start(paused=paused)

    def wait_for_state(self, name: str, states: tuple[VMState, ...], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.state(name) in states:
                    return True
            except NotFound:
                return True  # a transient VM that stopped is gone
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

    def shutdown(self, name: str, *, timeout: float = 60.0, force: bool = False) -> str:
        """Graceful shutdown (the guest agent when one answers, else ACPI), waiting up to
        ``timeout`` s; with ``force``, power off after that.

        Returns how it ended: ``shutdown``, ``forced`` (powered off after the timeout) or
        ``forced-paused`` (a paused VM, powered off at once with ``force``).
        """
        guest = self._guest(name)
        state = guest.state()[0]
        if state == VMState.PAUSED and not force:
            raise InvalidState(
                f"cannot shut down VM {name!r}: it is paused and cannot see the "
                "power button (resume it first, or use --force)",
                code="vm_paused",
            )
        if state not in (VMState.RUNNING, VMState.PAUSED, VMState.SHUTTING_DOWN):
            raise _state_error(name, "shut down", state)
        if state == VMState.PAUSED:
            log.warning("VM %s is paused and cannot see the power button; powering it off", name)
            self.stop(name)
            return "forced-paused"
        guest.shutdown()
        if self.wait_for_state(name, (VMState.SHUTOFF, VMState.CRASHED), timeout):
            return "shutdown"
        if not force:
            raise Timeout(
                f"VM {name!r} did not shut down within {timeout:.0f} s (the guest may ignore ACPI)",
                hint="use --force to power it off after the timeout",
            )
        log.warning("VM %s did not shut down within %.0f s; powering it off", name, timeout)
        self.stop(name)
        return "forced"

    def stop(self, name: str) -> None:
        """Power off at once (like pulling the plug)."""
        guest = self._require(
            name,
            (VMState.RUNNING, VMState.PAUSED, VMState.SHUTTING_DOWN, VMState.PMSUSPENDED),
            "power off",
        )
        try:
            guest.destroy()
        except InvalidState:
            # It stopped by itself meanwhile, which is what was asked (a transient VM is gone).
            with contextlib.suppress(NotFound):
                if guest.is_active():
                    raise

    def reboot(self, name: str) -> None:
        self._require(name, (VMState.RUNNING,), "reboot").reboot()

    def reset(self, name: str) -> None:
        self._require(name, (VMState.RUNNING, VMState.PAUSED), "reset").reset()

    def pause(self, name: str) -> None:
        self._require(name, (VMState.RUNNING,), "pause").suspend()

    def resume(self, name: str) -> None:
        self._require(name, (VMState.PAUSED,), "resume").resume()

    # -- changing ---------------------------------------------------------------------------

    def set_autostart(self, name: str, on: bool) -> None:
        guest = self._guest(name)
        if not guest.is_persistent():
            raise InvalidState(
                f"VM {name!r} is transient: it has no autostart", code="vm_transient"
            )
        guest.set_autostart(on)

    def set(
        self, name: str, *, vcpus: int | None = None, memory: int | str | None = None
    ) -> SetResult:
        """Change vCPUs and/or memory (bytes, or text such as ``2G``; bare: MiB): persistently
        always, live where libvirt can.

        Both values are checked before either is changed, so a refused change changes nothing.
        """
        change = VMSetSpec.check(vcpus=vcpus, memory=memory)
        vcpus, memory = change.vcpus, change.memory
        guest = self._guest(name)
        config = Domain.parse(guest.xml(inactive=True))
        if vcpus is not None:
            os_el = config.os
            machine = os_el.machine if os_el else None
            arch = (os_el.arch if os_el else None) or "x86_64"
            domain_type = config.type or self.probe.facts(arch).domain_type
            self._check_vcpus(vcpus, self._vcpu_limit(arch, machine, domain_type), machine)
        if memory is not None:
            self._check_memory(memory)
        active = guest.is_active()
        changes: builtins.list[str] = []
        if vcpus is not None:
            changes.append(self._set_vcpus(guest, vcpus, active))
        if memory is not None:
            changes.append(self._set_memory(guest, config, memory, active))
        return SetResult(name=name, changes=changes)

    def _set_vcpus(self, guest: Guest, count: int, active: bool) -> str:
        if count > guest.max_vcpus_config():
            guest.set_vcpus(count, config=True, maximum=True)
        guest.set_vcpus(count, config=True)
        if not active:
            return f"vCPUs: {count} from the next start"
        live_max = guest.max_vcpus_live()
        if count > live_max:
            return (
                f"vCPUs: {count} from the next start (the running VM was started with at most "
                f"{live_max})"
            )
        try:
            guest.set_vcpus(count, live=True)
        except VirtkitError as exc:
            log.info("live vCPU change refused: %s", exc)
            return f"vCPUs: {count} from the next start (not live: {exc.message})"
        return f"vCPUs: {count} now and from the next start"

    def _set_memory(self, guest: Guest, config: Domain, memory: int, active: bool) -> str:
        kib = memory // 1024
        shown = format_size(memory)
        _state, max_kib_live, _cur, _v = guest.info()
        if kib > (config.memory_kib or 0):
            guest.set_memory(kib, config=True, maximum=True)
        guest.set_memory(kib, config=True)
        if not active:
            return f"memory: {shown} from the next start"
        if kib > max_kib_live:
            return (
                f"memory: {shown} from the next start (more than the "
                f"{format_size(max_kib_live * 1024)} the running VM was started with)"
            )
        try:
            guest.set_memory(kib, live=True)
        except VirtkitError as exc:
            return f"memory: {shown} from the next start (not live: {exc.message})"
        return f"memory: {shown} now (balloon) and from the next start"

    # -- deleting ---------------------------------------------------------------------------

    def delete(
        self, name: str, *, force: bool = False, remove_storage: bool = False
    ) -> DeleteResult:
        """Undefine a VM. Running VMs only with ``force``; its own disks only with
        ``remove_storage`` (disks virtkit created for it; attached images are never removed)."""
        guest = self._guest(name)
        state = guest.state()[0]
        dom = Domain.parse(guest.xml(inactive=True))
        if state.is_active and not force:
            raise InvalidState(
                f"VM {name!r} is {_describe(state)}: stop it first, or delete "
                "with --force to power it off",
                code=_state_code(state),
            )
        persistent = guest.is_persistent()  # a transient VM is gone once destroyed
        if state.is_active:
            guest.destroy()
        if persistent:
            guest.undefine()
        owned = dom.owned_disk_paths
        attached = [d.source for d in dom.disks if d.source]
        removed: builtins.list[str] = []
        kept: builtins.list[str] = []
        # Its own disks, attached or not (one detached without --remove-storage is still its own).
        for source in dict.fromkeys([*attached, *owned]):
            if source not in owned:
                kept.append(f"{source} (not created by virtkit for this VM)")
            elif not remove_storage:
                kept.append(f"{source} (kept: no --remove-storage)")
            else:
                # The VM is gone already: report a disk that will not go, do not stop halfway.
                why = self._delete_own_disk(source)
                if why is None:
                    removed.append(source)
                else:
                    kept.append(f"{source} ({why})")
        console_log = self._own_console_log(dom)
        if remove_storage and console_log is not None and console_log.exists():
            try:
                console_log.unlink()
                removed.append(str(console_log))
            except OSError as exc:
                kept.append(f"{console_log} (could not remove: {exc.strerror})")
        log.info("deleted VM %s; removed %s", name, removed or "no storage")
        return DeleteResult(name=name, removed=removed, kept=kept, was_running=state.is_active)

    def _delete_own_disk(self, path: str) -> str | None:
        """Delete one of a VM's own disks; None when done, else why it stays."""
        if self.pools is not None:
            return self.pools.delete_owned_disk(path)
        try:
            return None if storage.delete_disk(self.host, path) else "already gone"
        except VirtkitError as exc:
            return f"could not remove: {exc.message}"

    def _own_console_log(self, dom: Domain) -> Path | None:
        """The console log file virtkit named for this VM, if it is on this host."""
        if not self.host.is_local or self.console_log_dir is None or not dom.name:
            return None
        expected = self.console_log_dir / f"{dom.name}-serial0.log"
        for serial in dom.serials:
            if serial.log is not None and serial.log.file == str(expected):
                return expected
        return None

    def storage_to_remove(self, name: str) -> builtins.list[str]:
        """What ``delete --remove-storage`` would remove, for a confirmation prompt."""
        dom = Domain.parse(self._guest(name).xml(inactive=True))
        console_log = self._own_console_log(dom)
        extra = [str(console_log)] if console_log is not None and console_log.exists() else []
        return dom.owned_disk_paths + extra


def _agent_state(dom: Domain) -> str | None:
    agent = dom.guest_agent
    if agent is None:
        return None
    return agent.target_state or "disconnected"


def _state_code(state: VMState) -> str:
    return "vm_" + state.value.replace("-", "_")


def _state_error(name: str, action: str, state: VMState) -> InvalidState:
    return InvalidState(
        f"cannot {action} VM {name!r}: it is {_describe(state)}", code=_state_code(state)
    )


def _describe(state: VMState) -> str:
    return {
        VMState.SHUTOFF: "shut off",
        VMState.RUNNING: "running",
        VMState.PAUSED: "paused",
        VMState.SHUTTING_DOWN: "shutting down",
        VMState.CRASHED: "crashed",
        VMState.PMSUSPENDED: "suspended by the guest",
        VMState.NOSTATE: "in no known state",
    }[state]
