"""The checks before a VM is created: everything that can be decided and refused before
anything is made (name, host limits, machine type, CPU, every file, NICs, templates, the
cloud-init seed)."""

from __future__ import annotations

import builtins
import logging

from virtkit import cloudinit
from virtkit.backend.capabilities import CapabilityProbe, HostFacts
from virtkit.backend.host import Host
from virtkit.errors import AlreadyExists, InvalidInput, NotFound, Unsupported
from virtkit.services import discimage, hostkeys, storage
from virtkit.services.domainbuilder import CPU_MODES, BuildPlan, ResolvedDisk
from virtkit.services.hostkeys import PendingHostKeys
from virtkit.services.images import ImageService
from virtkit.services.nics import macs_in_use, new_mac
from virtkit.services.pools import refuse_writable_base
from virtkit.services.vmfiles import VMFiles
from virtkit.services.vmlimits import check_max_vcpus, check_memory, check_vcpus, vcpu_limit
from virtkit.specs import ImageInfo, VMSpec, format_size, validate_name

log = logging.getLogger(__name__)

DEFAULT_MACHINE = "q35"


class CreateChecks:
    """Every check of a create that needs the host, before anything is made."""

    def __init__(
        self, host: Host, probe: CapabilityProbe, images: ImageService | None, files: VMFiles
    ) -> None:
        self.host = host
        self.probe = probe
        self.images = images
        self.files = files

    def _check_against_host(self, spec: VMSpec, facts: HostFacts) -> tuple[str, str | None, int]:
        """Checks that need the host; returns (machine, cpu, vCPU maximum)."""
        machine = spec.machine or DEFAULT_MACHINE
        if machine not in facts.machines:
            shown = ", ".join(m for m in facts.machines if "-" not in m) or "none"
            raise InvalidInput(
                f"unknown machine type {machine!r} for {facts.domain_type} on "
                f"{spec.arch} (this host has: {shown}, and versioned names)",
                code="unknown_machine",
            )
        check_memory(self.host, spec.memory)
        limit = vcpu_limit(self.host, self.probe, spec.arch, machine, facts.domain_type)
        check_vcpus(spec.vcpus, limit, machine)
        max_vcpus = check_max_vcpus(spec.vcpus, spec.max_vcpus, limit, machine)
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
        return machine, cpu, max_vcpus

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
                if not disk.readonly and self.images:
                    refuse_writable_base(self.images.pools, disk.path)
                fmt = storage.resolve_image(self.host, disk.path, disk.format, "disk image")
                resolved.append(ResolvedDisk(disk.path, fmt, disk.bus, readonly=disk.readonly))
        if spec.cdrom:
            discimage.check_cdrom(self.host, spec.cdrom)
            bus = spec.cdrom_bus or ("ide" if "q35" not in machine else "sata")
            resolved.append(ResolvedDisk(spec.cdrom, "raw", bus, device="cdrom", readonly=True))
        for path, what in ((spec.kernel, "kernel"), (spec.initrd, "initrd")):
            if path and self.host.is_local:
                storage.check_local_file(path, what)
        return resolved

    def prepare(self, spec: VMSpec, *, host_keys: bool = False) -> tuple[VMSpec, BuildPlan]:
        """Every check that can be made before anything is created; returns the spec as it
        will be built (a template's kernel filled in) and the plan. Each template is resolved
        once (a resolution reads every domain on the host). With ``host_keys``, the guest's SSH
        host keys are made meanwhile and go into the seed."""
        templates = self._templates(spec)
        first = templates.get(0) if spec.disks and spec.disks[0].image is not None else None
        spec = with_template_boot(spec, first)
        pending = self._host_keys(spec, first) if host_keys else None
        try:
            plan = self._plan(spec, templates, pending)
        finally:
            if pending is not None:
                pending.cancel()
        return spec, plan

    def _plan(
        self, spec: VMSpec, templates: dict[int, ImageInfo], host_keys: PendingHostKeys | None
    ) -> BuildPlan:
        if self.host.exists(spec.name):
            raise AlreadyExists(f"a VM named {spec.name!r} already exists", code="vm_exists")
        facts = self.probe.facts(spec.arch)
        if facts.kvm.libvirt_reprobes:
            log.warning(
                "libvirt is denied /dev/kvm and re-probes QEMU for each device it checks: "
                "defining %s may take a minute or more. Fix: %s",
                spec.name,
                facts.kvm.fix,
            )
        machine, cpu, max_vcpus = self._check_against_host(spec, facts)
        existing = self._resolve_existing(spec, machine)
        log_file = self.files.serial_log(spec.name) if spec.serial else None
        macs = self._macs(spec)
        _check_template_sizes(spec, templates)
        keys = host_keys.result() if host_keys is not None else []
        return BuildPlan(
            domain_type=facts.domain_type,
            machine=machine,
            disks=existing,
            emulator=facts.emulator,
            cpu=cpu,
            serial_log=str(log_file) if log_file is not None else None,
            macs=macs,
            host_keys=[k.public for k in keys],
            templates=templates,
            seed=build_seed(spec, macs, keys),
            max_vcpus=max_vcpus,
        )

    def _host_keys(self, spec: VMSpec, template: ImageInfo | None) -> PendingHostKeys | None:
        """The guest's SSH host keys, being made, unless the spec or its user-data leaves them
        to the guest, or its template (the first disk's) is Windows (cloudbase-init does not
        read ``ssh_keys``)."""
        c = spec.cloud_init
        if c is None or not c.host_keys or cloudinit.sets_host_keys(c.user_data):
            return None
        if template is not None and (template.os or "").lower().startswith("win"):
            log.info("%s: a Windows template (cloudbase-init) makes its own SSH host keys",
                     spec.name)  # fmt: skip
            return None
        return hostkeys.start()

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
        """The template of each new disk cloned from one (by index among the new disks)."""
        found: dict[int, ImageInfo] = {}
        for index, disk in enumerate(d for d in spec.disks if d.is_new):
            if disk.image is None:
                continue
            if self.images is None:
                raise Unsupported("this client has no image service for templates")
            found[index] = self.images.resolve_template(disk.image, self.files.pool)
        return found


def _check_template_sizes(spec: VMSpec, templates: dict[int, ImageInfo]) -> None:
    for index, disk in enumerate(d for d in spec.disks if d.is_new):
        template = templates.get(index)
        if template is not None and disk.size is not None and disk.size < template.capacity:
            raise InvalidInput(
                f"disk size {format_size(disk.size)} is smaller than template "
                f"{disk.image!r} ({format_size(template.capacity)})",
                code="disk_smaller_than_template",
            )


def with_template_boot(spec: VMSpec, template: ImageInfo | None) -> VMSpec:
    """A VM whose first disk is a template without a boot loader (``image build``) boots the
    kernel recorded with the template, unless the spec names its own."""
    if spec.kernel or template is None or not template.boot:
        return spec
    boot = template.boot
    return spec.model_copy(update={"kernel": boot["kernel"], "initrd": boot.get("initrd"),
                                   "cmdline": spec.cmdline or boot.get("cmdline")})  # fmt: skip


def build_seed(
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
