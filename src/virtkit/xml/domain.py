"""Typed classes for libvirt domain XML (https://libvirt.org/formatdomain.html)."""

from __future__ import annotations

from virtkit.xml.base import (
    VIRTKIT_NS,
    Child,
    Children,
    Flag,
    XMLObject,
    attr,
    bool_attr,
    int_attr,
    int_text,
    text,
)

VK = "{" + VIRTKIT_NS + "}"


class Boot(XMLObject):
    TAG = "boot"
    dev = attr("", "dev")


class OS(XMLObject):
    TAG = "os"
    type = text("type")
    arch = attr("type", "arch")
    machine = attr("type", "machine")
    kernel = text("kernel")
    initrd = text("initrd")
    cmdline = text("cmdline")
    boot = Children(Boot)


class CPU(XMLObject):
    TAG = "cpu"
    mode = attr("", "mode")
    match = attr("", "match")
    check = attr("", "check")
    model = text("model")
    fallback = attr("model", "fallback")


class BackingStore(XMLObject):
    """One layer below a disk's image, as libvirt reports it for a running VM."""

    TAG = "backingStore"
    format = attr("format", "type")
    source_file = attr("source", "file")
    source_dev = attr("source", "dev")

    @property
    def source(self) -> str | None:
        return self.source_file or self.source_dev

    @property
    def below(self) -> BackingStore | None:
        node = self.node.find(self.TAG)
        return None if node is None else BackingStore(node)


class Disk(XMLObject):
    TAG = "disk"
    type = attr("", "type")
    device = attr("", "device")
    driver_name = attr("driver", "name")
    driver_type = attr("driver", "type")
    driver_cache = attr("driver", "cache")
    driver_discard = attr("driver", "discard")
    driver_io = attr("driver", "io")  # native, threads, io_uring
    driver_queues = int_attr("driver", "queues")  # virtio-blk multiqueue
    driver_iothread = int_attr("driver", "iothread")
    source_file = attr("source", "file")
    source_dev = attr("source", "dev")
    source_pool = attr("source", "pool")
    source_volume = attr("source", "volume")
    target_dev = attr("target", "dev")
    target_bus = attr("target", "bus")
    readonly = Flag("readonly")
    boot_order = int_attr("boot", "order")
    serial = text("serial")

    backing_store = Child(BackingStore)

    @property
    def source(self) -> str | None:
        return self.source_file or self.source_dev or self.source_volume

    @property
    def backing_layers(self) -> list[BackingStore]:
        """The layers below this disk's image, top down, where the XML names them (libvirt
        fills ``<backingStore>`` in a running VM's definition)."""
        found: list[BackingStore] = []
        layer = self.backing_store
        while layer is not None and layer.source and len(found) < 64:
            found.append(layer)
            layer = layer.below
        return found

    @property
    def backing_sources(self) -> list[str]:
        """The images below this disk's, top down, where the XML names them."""
        return [layer.source for layer in self.backing_layers if layer.source]


class Interface(XMLObject):
    TAG = "interface"
    type = attr("", "type")  # network, bridge, direct, user
    mac = attr("mac", "address")
    source_network = attr("source", "network")
    source_bridge = attr("source", "bridge")
    source_dev = attr("source", "dev")  # direct (macvtap): the host interface
    source_mode = attr("source", "mode")  # direct: bridge, vepa, private, passthrough
    model = attr("model", "type")
    link_state = attr("link", "state")  # "up" or "down"; absent means up
    target_dev = attr("target", "dev")
    alias = attr("alias", "name")
    driver_name = attr("driver", "name")  # vhost, qemu
    driver_queues = int_attr("driver", "queues")  # virtio-net multiqueue


class Controller(XMLObject):
    TAG = "controller"
    type = attr("", "type")
    model = attr("", "model")
    index = int_attr("", "index")


class CharLog(XMLObject):
    TAG = "log"
    file = attr("", "file")
    append = attr("", "append")  # "on" or "off"


class Serial(XMLObject):
    TAG = "serial"
    type = attr("", "type")
    source_path = attr("source", "path")
    target_port = int_attr("target", "port")
    log = Child(CharLog)


class Console(XMLObject):
    TAG = "console"
    type = attr("", "type")
    source_path = attr("source", "path")
    target_type = attr("target", "type")
    target_port = int_attr("target", "port")


GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"


class Channel(XMLObject):
    """A host-guest channel, e.g. the QEMU guest agent's virtio-serial port."""

    TAG = "channel"
    type = attr("", "type")
    target_type = attr("target", "type")
    target_name = attr("target", "name")
    target_state = attr("target", "state")  # live XML: connected / disconnected


class Graphics(XMLObject):
    TAG = "graphics"
    type = attr("", "type")
    autoport = bool_attr("", "autoport")
    port = int_attr("", "port")
    tls_port = int_attr("", "tlsPort")
    listen = attr("", "listen")
    listen_address = attr("listen", "address")  # the <listen type='address'> child
    passwd = attr("", "passwd")
    passwd_valid_to = attr("", "passwdValidTo")  # UTC, YYYY-MM-DDTHH:MM:SS
    connected = attr("", "connected")  # keep / disconnect / fail, on a password change


class Video(XMLObject):
    TAG = "video"
    model = attr("model", "type")


class Input(XMLObject):
    TAG = "input"
    type = attr("", "type")
    bus = attr("", "bus")


class MemBalloon(XMLObject):
    TAG = "memballoon"
    model = attr("", "model")
    stats_period = int_attr("stats", "period")  # seconds; the guest reports memory stats


class VcpuPin(XMLObject):
    """``<vcpupin vcpu='0' cpuset='2,18'/>``: the host CPUs one vCPU may run on."""

    TAG = "vcpupin"
    vcpu = int_attr("", "vcpu")
    cpuset = attr("", "cpuset")


class IOThreadPin(XMLObject):
    TAG = "iothreadpin"
    iothread = int_attr("", "iothread")
    cpuset = attr("", "cpuset")


class CPUTune(XMLObject):
    """``<cputune>``: vCPU, emulator and I/O thread pinning."""

    TAG = "cputune"
    vcpupins = Children(VcpuPin)
    emulatorpin = attr("emulatorpin", "cpuset")
    iothreadpins = Children(IOThreadPin)

    def vcpu_cpusets(self) -> dict[int, str]:
        return {p.vcpu: p.cpuset for p in self.vcpupins if p.vcpu is not None and p.cpuset}


class NumaTune(XMLObject):
    """``<numatune><memory mode='strict' nodeset='0'/>``: which host nodes give the memory."""

    TAG = "numatune"
    memory_mode = attr("memory", "mode")  # strict, preferred, interleave, restrictive
    memory_nodeset = attr("memory", "nodeset")


class HugePage(XMLObject):
    """One ``<hugepages><page size unit nodeset>``."""

    TAG = "page"
    size = int_attr("", "size")
    unit = attr("", "unit")
    nodeset = attr("", "nodeset")

    @property
    def size_kib(self) -> int | None:
        if self.size is None:
            return None
        factor = {"k": 1, "kib": 1, "m": 1024, "mib": 1024, "g": 1024**2, "gib": 1024**2}
        return self.size * factor.get((self.unit or "KiB").lower(), 1)


class MemoryBacking(XMLObject):
    TAG = "memoryBacking"
    hugepages = Flag("hugepages")
    pages = Children(HugePage, "hugepages/page")
    nosharepages = Flag("nosharepages")
    locked = Flag("locked")


class TuningRecord(XMLObject):
    """virtkit's note of the tuning profile a VM was given (``tune apply``)."""

    TAG = VK + "tuning"
    profile = attr("", "profile")


class Tag(XMLObject):
    TAG = VK + "tag"
    name = text("")


class OwnedDisk(XMLObject):
    """A disk volume virtkit created for this VM; removed with it by ``delete --remove-storage``."""

    TAG = VK + "owned-disk"
    path = attr("", "path")


class HostKeyPin(XMLObject):
    """A public SSH host key virtkit made for the guest (``vm ssh`` accepts only these)."""

    TAG = VK + "host-key"
    key = text("")


class VirtkitMetadata(XMLObject):
    """virtkit's own element inside ``<metadata>``, in virtkit's XML namespace."""

    TAG = VK + "virtkit"
    version = attr("", "version")
    tags = Children(Tag, VK + "tags/" + VK + "tag")
    owned_disks = Children(OwnedDisk, VK + "storage/" + VK + "owned-disk")
    login_user = attr(VK + "cloud-init", "user")  # the user cloud-init made (vm ssh)
    owner = attr(VK + "owner", "user")  # the API user it belongs to (operators' scope)
    template = attr(VK + "template", "name")  # POOL/NAME of the template it was made from
    host_keys = Children(HostKeyPin, VK + "cloud-init/" + VK + "host-key")
    tuning = Child(TuningRecord)
    # `virtkit apply`: the site that manages the VM, and a digest of the spec it was made from
    site = attr(VK + "site", "name")
    site_spec = attr(VK + "site", "spec")

    @property
    def pinned_host_keys(self) -> list[str]:
        """The public SSH host keys virtkit made for the guest."""
        return [pin.key for pin in self.host_keys if pin.key]

    def pin_host_keys(self, keys: list[str]) -> None:
        """Pin exactly these public host keys (none: nothing pinned)."""
        for old in list(self.host_keys):
            self.host_keys.remove(old)
        for key in keys:
            pin = HostKeyPin()
            pin.key = key
            self.host_keys.append(pin)


class Timer(XMLObject):
    TAG = "timer"
    name = attr("", "name")
    tickpolicy = attr("", "tickpolicy")
    present = attr("", "present")


class SysinfoEntry(XMLObject):
    TAG = "entry"
    name = attr("", "name")
    value = text("")


QEMU_NS = "{http://libvirt.org/schemas/domain/qemu/1.0}"


class QemuArg(XMLObject):
    """One ``<qemu:arg value=...>`` of ``<qemu:commandline>`` (passed to QEMU as is)."""

    TAG = f"{QEMU_NS}arg"
    value = attr("", "value")


class Domain(XMLObject):
    TAG = "domain"
    type = attr("", "type")
    id = int_attr("", "id")
    name = text("name")
    uuid = text("uuid")
    title = text("title")
    description = text("description")
    memory_kib = int_text("memory")
    memory_unit = attr("memory", "unit")
    current_memory_kib = int_text("currentMemory")
    current_memory_unit = attr("currentMemory", "unit")
    vcpu = int_text("vcpu")
    vcpu_current = int_attr("vcpu", "current")
    vcpu_placement = attr("vcpu", "placement")
    os = Child(OS)
    cpu = Child(CPU)
    acpi = Flag("features/acpi")
    apic = Flag("features/apic")
    nosharepages = Flag("memoryBacking/nosharepages")
    memory_backing = Child(MemoryBacking)
    cputune = Child(CPUTune)
    numatune = Child(NumaTune)
    iothreads = int_text("iothreads")
    clock_offset = attr("clock", "offset")
    timers = Children(Timer, "clock/timer")
    smbios_mode = attr("os/smbios", "mode")
    sysinfo_type = attr("sysinfo", "type")
    sysinfo_system = Children(SysinfoEntry, "sysinfo/system/entry")
    on_poweroff = text("on_poweroff")
    on_reboot = text("on_reboot")
    on_crash = text("on_crash")
    emulator = text("devices/emulator")
    disks = Children(Disk, "devices/disk")
    controllers = Children(Controller, "devices/controller")
    interfaces = Children(Interface, "devices/interface")
    qemu_args = Children(QemuArg, f"{QEMU_NS}commandline/{QEMU_NS}arg")
    serials = Children(Serial, "devices/serial")
    consoles = Children(Console, "devices/console")
    channels = Children(Channel, "devices/channel")
    graphics = Children(Graphics, "devices/graphics")
    videos = Children(Video, "devices/video")
    inputs = Children(Input, "devices/input")
    memballoon = Child(MemBalloon, "devices/memballoon")
    virtkit = Child(VirtkitMetadata, "metadata/" + VirtkitMetadata.TAG)

    def ensure_virtkit_metadata(self) -> VirtkitMetadata:
        meta = self.virtkit
        if meta is None:
            meta = VirtkitMetadata()
            self.virtkit = meta
        return meta

    @property
    def tag_names(self) -> list[str]:
        meta = self.virtkit
        return [] if meta is None else [t.name for t in meta.tags if t.name]

    @property
    def guest_agent(self) -> Channel | None:
        """The QEMU guest agent's channel, if the VM has one."""
        return next((c for c in self.channels if c.target_name == GUEST_AGENT_CHANNEL), None)

    @property
    def owned_disk_paths(self) -> list[str]:
        meta = self.virtkit
        return [] if meta is None else [d.path for d in meta.owned_disks if d.path]


def serial_console(log_file: str | None = None) -> tuple[Serial, Console]:
    """A pty serial port (optionally logged to a file) and the console bound to it."""
    serial = Serial()
    serial.type = "pty"
    serial.target_port = 0
    if log_file:
        log = CharLog()
        log.file = log_file
        log.append = "off"
        serial.log = log
    console = Console()
    console.type = "pty"
    console.target_type = "serial"
    console.target_port = 0
    return serial, console
