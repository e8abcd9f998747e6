"""VMSpec + host decisions -> domain XML objects. Pure: no I/O, tested with golden files."""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field, replace
from typing import Literal

from virtkit._version import __version__
from virtkit.specs import ImageInfo, NicSpec, VMSpec
from virtkit.xml.domain import (
    CPU,
    GUEST_AGENT_CHANNEL,
    OS,
    Boot,
    Channel,
    Controller,
    Disk,
    Domain,
    Graphics,
    Input,
    Interface,
    MemBalloon,
    OwnedDisk,
    QemuArg,
    SysinfoEntry,
    Tag,
    Timer,
    Video,
    serial_console,
)

CPU_MODES = ("host-passthrough", "host-model", "maximum")
# PCIe machines hot-plug into root ports; libvirt adds only the ports the defined devices use
# (and puts devices into any ports it is given), so once libvirt has placed the devices, the VM
# service tops the ports up to this many free ones: disks and NICs stay hot-pluggable
# (virt-install adds 14 ports in all, however many its devices take).
SPARE_ROOT_PORTS = 4


@dataclass(frozen=True)
class ResolvedDisk:
    """A disk whose source exists (or was just created) and whose format is known."""

    path: str
    format: str
    bus: str
    device: Literal["disk", "cdrom"] = "disk"
    readonly: bool = False
    owned: bool = False


@dataclass(frozen=True)
class BuildPlan:
    """Host-dependent decisions made by the VM service before building the XML: what the checks
    before a create decided (``services/vmplan.py``), completed by the disks it made."""

    domain_type: str
    machine: str
    # every disk in target order; until the VM's new disks are made (``with_new_disks``), only
    # the existing files the checks resolved (the spec's, then the CD-ROM)
    disks: list[ResolvedDisk] = field(default_factory=list)
    emulator: str | None = None
    cpu: str | None = None
    serial_log: str | None = None
    macs: list[str] = field(default_factory=list)  # one per spec.nics, chosen by the service
    host_keys: list[str] = field(default_factory=list)  # public SSH host keys made for the guest
    # index among the spec's new disks -> the template it is cloned from (resolved once)
    templates: dict[int, ImageInfo] = field(default_factory=dict)
    seed: bytes | None = field(default=None, repr=False)  # the cloud-init seed ISO to write
    max_vcpus: int | None = None  # the vCPU maximum (room for live hot-plug); None: spec.vcpus

    def with_new_disks(
        self, spec: VMSpec, new: list[ResolvedDisk], seed: ResolvedDisk | None = None
    ) -> BuildPlan:
        """The plan with the VM's new disks in their places among the existing ones (the
        user's order), the CD-ROM after them and the seed last."""
        ordered: list[ResolvedDisk] = []
        new_iter, old_iter = iter(new), iter(self.disks)
        for disk in spec.disks:
            ordered.append(next(new_iter) if disk.is_new else next(old_iter))
        ordered.extend(old_iter)  # the cdrom
        if seed is not None:
            ordered.append(seed)
        return replace(self, disks=ordered)


def target_prefix(bus: str) -> str:
    return {"virtio": "vd", "ide": "hd"}.get(bus, "sd")


def _target_names(disks: list[ResolvedDisk]) -> list[str]:
    counters: dict[str, int] = {}
    names = []
    for disk in disks:
        prefix = target_prefix(disk.bus)
        index = counters.get(prefix, 0)
        counters[prefix] = index + 1
        names.append(prefix + disk_letters(index))
    return names


def disk_letters(index: int) -> str:
    """0 -> a, 25 -> z, 26 -> aa (as libvirt names targets)."""
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = string.ascii_lowercase[rem] + letters
    return letters


def disk_element(resolved: ResolvedDisk, target: str) -> Disk:
    disk = Disk()
    disk.type = "block" if resolved.path.startswith("/dev/") else "file"
    disk.device = resolved.device
    disk.driver_name = "qemu"
    disk.driver_type = resolved.format
    if resolved.device == "disk":
        disk.driver_discard = "unmap"
    if disk.type == "block":
        disk.source_dev = resolved.path
    else:
        disk.source_file = resolved.path
    disk.target_dev = target
    disk.target_bus = resolved.bus
    disk.readonly = resolved.readonly or resolved.device == "cdrom"
    return disk


def _os(spec: VMSpec, plan: BuildPlan) -> OS:
    os_el = OS()
    os_el.type = "hvm"
    os_el.arch = spec.arch
    os_el.machine = plan.machine
    if spec.kernel:
        os_el.kernel = spec.kernel
        os_el.initrd = spec.initrd
        os_el.cmdline = spec.cmdline
    order = spec.boot or (["cdrom", "hd"] if spec.cdrom else ["hd"])
    if not spec.kernel or spec.boot:
        for dev in order:
            boot = Boot()
            boot.dev = dev
            os_el.boot.append(boot)
    return os_el


def _cpu(plan: BuildPlan) -> CPU | None:
    if plan.cpu is None:
        return None
    cpu = CPU()
    if plan.cpu in CPU_MODES:
        cpu.mode = plan.cpu
        if plan.cpu == "host-passthrough":
            cpu.check = "none"
    else:
        cpu.mode = "custom"
        cpu.match = "exact"
        cpu.check = "partial"
        cpu.model = plan.cpu
        cpu.fallback = "forbid"
    return cpu


def graphics_password(kind: str) -> str:
    """A random password told to nobody. QEMU turns password authentication on only when the
    display starts with a password, and without it one-time console passwords cannot be set
    later (services/graphics.py); it also keeps other local users off an open VNC port."""
    return secrets.token_urlsafe(6 if kind == "vnc" else 18)  # VNC uses 8 characters


def _graphics(spec: VMSpec, dom: Domain) -> None:
    if spec.graphics == "none":
        usb = Controller()
        usb.type = "usb"
        usb.model = "none"
        dom.controllers.append(usb)
        return
    graphics = Graphics()
    graphics.type = spec.graphics
    graphics.autoport = True
    graphics.listen = spec.graphics_listen
    graphics.passwd = graphics_password(spec.graphics)
    dom.graphics.append(graphics)
    video = Video()
    video.model = "qxl" if spec.graphics == "spice" else "virtio"
    dom.videos.append(video)
    usb = Controller()
    usb.type = "usb"
    usb.model = "qemu-xhci"
    dom.controllers.append(usb)
    tablet = Input()
    tablet.type = "tablet"
    tablet.bus = "usb"
    dom.inputs.append(tablet)


def nic_element(nic: NicSpec, mac: str) -> Interface:
    iface = Interface()
    iface.mac = mac  # first, as libvirt writes it
    if nic.network:
        iface.type, iface.source_network = "network", nic.network
    elif nic.bridge:
        iface.type, iface.source_bridge = "bridge", nic.bridge
    else:
        iface.type, iface.source_dev, iface.source_mode = "direct", nic.direct, nic.mode
    iface.model = nic.model
    return iface


def user_nic_args(nic: NicSpec, mac: str, index: int, machine: str) -> list[str]:
    """QEMU arguments for a user-mode NIC: guest traffic cannot reach the host or beyond
    (``restrict=on``); only the forwarded port comes in."""
    netdev = f"user,id=vkuser{index},restrict=on"
    if nic.ssh_forward:
        netdev += f",hostfwd=tcp:127.0.0.1:{nic.ssh_forward}-:22"
    bus = "pcie.0" if "q35" in machine else "pci.0"
    device = f"virtio-net-pci,netdev=vkuser{index},mac={mac},bus={bus},addr={0x10 + index:#x}"
    return ["-netdev", netdev, "-device", device]


def _user_nic(dom: Domain, nic: NicSpec, mac: str, index: int, machine: str) -> None:
    for value in user_nic_args(nic, mac, index, machine):
        arg = QemuArg()
        arg.value = value
        dom.qemu_args.append(arg)


def ssh_forward_port(dom: Domain) -> int | None:
    """The 127.0.0.1 port forwarded to the guest's SSH by a user-mode NIC, if any."""
    for arg in dom.qemu_args:
        value = arg.value or ""
        if "hostfwd=tcp:127.0.0.1:" in value:
            port = value.split("hostfwd=tcp:127.0.0.1:", 1)[1].split("-", 1)[0]
            if port.isdigit():
                return int(port)
    return None


def free_root_ports(dom: Domain) -> int:
    """PCIe root ports of a defined (addressed) domain that no device is plugged into."""
    ports = {c.index for c in dom.controllers if c.type == "pci" and c.model == "pcie-root-port"}
    used = set()
    for address in dom.node.iterfind("devices/*/address"):  # not a host device's own address
        bus = address.get("bus")
        if address.get("type") == "pci" and bus is not None:
            used.add(int(bus, 0))
    return len(ports - used)


def add_root_ports(dom: Domain, count: int) -> None:
    """``count`` more PCIe root ports (libvirt numbers and places them)."""
    for _ in range(count):
        port = Controller()
        port.type = "pci"
        port.model = "pcie-root-port"
        dom.controllers.append(port)


def build_domain(spec: VMSpec, plan: BuildPlan) -> Domain:
    """The complete domain definition for a new VM."""
    dom = Domain()
    dom.type = plan.domain_type
    dom.name = spec.name
    dom.description = spec.description
    meta = dom.ensure_virtkit_metadata()
    meta.version = __version__
    if spec.cloud_init is not None and spec.cloud_init.user:
        meta.login_user = spec.cloud_init.user
    meta.pin_host_keys(plan.host_keys)
    if spec.owner:
        meta.owner = spec.owner
    if plan.templates:  # the template the first cloned disk comes from (the VM's origin)
        origin = plan.templates[min(plan.templates)]
        meta.template = f"{origin.pool}/{origin.name}"
    for name in spec.tags:
        tag = Tag()
        tag.name = name
        meta.tags.append(tag)
    for resolved in plan.disks:
        if resolved.owned:
            owned = OwnedDisk()
            owned.path = resolved.path
            meta.owned_disks.append(owned)
    kib = spec.memory // 1024
    dom.memory_kib = kib
    dom.memory_unit = "KiB"
    dom.current_memory_kib = kib
    dom.current_memory_unit = "KiB"
    maximum = max(plan.max_vcpus or spec.vcpus, spec.vcpus)
    dom.vcpu = maximum
    dom.vcpu_placement = "static"
    if maximum > spec.vcpus:
        dom.vcpu_current = spec.vcpus
    dom.os = _os(spec, plan)
    if spec.cloud_init is not None and spec.cloud_init.seed == "nocloud":
        # tells cloud-init's ds-identify the seed is NoCloud, so it need not search
        dom.smbios_mode = "sysinfo"
        dom.sysinfo_type = "smbios"
        hint = SysinfoEntry()
        hint.name = "serial"
        hint.value = "ds=nocloud"
        dom.sysinfo_system.append(hint)
    dom.acpi = True
    dom.apic = True
    cpu = _cpu(plan)
    if cpu is not None:
        dom.cpu = cpu
    dom.clock_offset = "utc"
    # what virt-install and libosinfo give x86 guests: no HPET (costly to emulate, and guests
    # prefer it when present), RTC catch-up, delayed PIT ticks
    for name, policy, present in (("rtc", "catchup", None), ("pit", "delay", None),
                                  ("hpet", None, "no")):  # fmt: skip
        timer = Timer()
        timer.name, timer.tickpolicy, timer.present = name, policy, present
        dom.timers.append(timer)
    dom.on_poweroff = "destroy"
    dom.on_reboot = "restart"
    dom.on_crash = "destroy"
    if plan.emulator:
        dom.emulator = plan.emulator
    for resolved, target in zip(plan.disks, _target_names(plan.disks), strict=True):
        dom.disks.append(disk_element(resolved, target))
    if any(d.bus == "scsi" for d in plan.disks):
        scsi = Controller()
        scsi.type = "scsi"
        scsi.model = "virtio-scsi"
        scsi.index = 0
        dom.controllers.append(scsi)
    for index, (nic, mac) in enumerate(zip(spec.nics, plan.macs, strict=True)):
        if nic.user:
            _user_nic(dom, nic, mac, index, plan.machine)
        else:
            dom.interfaces.append(nic_element(nic, mac))
    _graphics(spec, dom)
    if "q35" in plan.machine:
        root = Controller()  # explicit, else libvirt numbers the first root port 0
        root.type = "pci"
        root.index = 0
        root.model = "pcie-root"
        dom.controllers.append(root)
    if spec.serial:
        serial, console = serial_console(plan.serial_log)
        dom.serials.append(serial)
        dom.consoles.append(console)
    if spec.guest_agent:  # libvirt adds the virtio-serial controller and the socket
        agent = Channel()
        agent.type = "unix"
        agent.target_type = "virtio"
        agent.target_name = GUEST_AGENT_CHANNEL
        dom.channels.append(agent)
    balloon = MemBalloon()
    balloon.model = "virtio"
    dom.memballoon = balloon
    return dom
