"""Pydantic models that cross layers: what a user asks for (specs) and what virtkit reports (views).

Specs validate everything that can be checked without a host: names, sizes, shapes, unknown keys.
Checks that need the host (memory larger than the host, an unknown machine type, a missing image)
happen in the services, which know the host.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from virtkit.errors import InvalidInput

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB


class VMState(StrEnum):
    """A VM's state as virtkit reports it (libvirt's states, with user-facing names)."""

    NOSTATE = "nostate"
    RUNNING = "running"
    PAUSED = "paused"
    SHUTTING_DOWN = "shutting-down"
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    PMSUSPENDED = "pmsuspended"

    @property
    def is_active(self) -> bool:
        return self not in (VMState.SHUTOFF, VMState.CRASHED, VMState.NOSTATE)


NAME_MAX = 64
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:=/-]{0,63}")
_UNITS = {
    "": 1,
    "b": 1,
    "k": KiB,
    "kb": KiB,
    "kib": KiB,
    "m": MiB,
    "mb": MiB,
    "mib": MiB,
    "g": GiB,
    "gb": GiB,
    "gib": GiB,
    "t": TiB,
    "tb": TiB,
    "tib": TiB,
}
_SIZE_RE = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")


def validate_name(name: str, what: str = "VM") -> str:
    """Return ``name`` if it is a usable libvirt object name, else raise :class:`InvalidInput`.

    Names become file names (disk images, logs) and QEMU arguments, so they are kept to a safe set:
    letters, digits, ``.``, ``_``, ``+``, ``-``, starting with a letter or digit, at most 64 chars.
    """
    if not isinstance(name, str) or name == "":
        raise InvalidInput(f"invalid {what} name: the name is empty", code="invalid_name")
    if len(name) > NAME_MAX:
        raise InvalidInput(
            f"invalid {what} name: {len(name)} characters, at most {NAME_MAX} allowed",
            code="invalid_name",
        )
    if not _NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid {what} name {name!r}: use letters, digits, '.', '_', '+' and '-', "
            "starting with a letter or digit (no spaces, slashes or control characters)",
            code="invalid_name",
        )
    return name


def parse_size(value: object, default_unit: str = "b") -> int:
    """Parse ``512M``, ``1.5G``, ``2GiB``, ``1024`` (in ``default_unit``) into bytes.

    Units are binary (``G`` = GiB), as in qemu-img and libvirt.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        number, unit = float(value), default_unit
    elif isinstance(value, float):
        number, unit = value, default_unit
    elif isinstance(value, str):
        match = _SIZE_RE.fullmatch(value)
        if not match:
            raise ValueError(f"not a size: {value!r} (examples: 512M, 2G, 10GiB)")
        number = float(match.group(1))
        unit = match.group(2) or default_unit
    else:
        raise ValueError(f"not a size: {value!r}")
    factor = _UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(f"unknown size unit {unit!r} in {value!r} (use K, M, G or T)")
    return int(number * factor)


def format_size(num_bytes: int) -> str:
    """``536870912`` -> ``512 MiB``; exact binary units where they fit, one decimal otherwise."""
    for unit, factor in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if abs(num_bytes) >= factor:
            value = num_bytes / factor
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{num_bytes} B"


def _memory(value: object) -> int:
    return parse_size(value, default_unit="M")


def _disk_size(value: object) -> int:
    return parse_size(value, default_unit="G")


MemoryBytes = Annotated[int, BeforeValidator(_memory)]
DiskBytes = Annotated[int, BeforeValidator(_disk_size)]

GraphicsType = Literal["none", "vnc", "spice"]
DiskBus = Literal["virtio", "scsi", "sata", "ide"]
BootDevice = Literal["hd", "cdrom", "network"]


class _Spec(BaseModel):
    """A user's request: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, defer_build=True)


_M = TypeVar("_M", bound=BaseModel)


class DiskSpec(_Spec):
    """A disk: an existing image (``path``), a new blank qcow2 volume (``size``), or a clone of
    a template (``image``; linked by default, ``linked: false`` copies)."""

    path: str | None = Field(None, description="An existing disk image on the host.")
    size: DiskBytes | None = Field(
        None,
        description="Size of a new blank qcow2 volume (e.g. 10G; a bare number is GiB); with "
        "'image', grows the clone to this size.",
    )
    image: str | None = Field(None, description="A template, as NAME or POOL/NAME.")
    linked: bool = Field(True, description="With 'image': a linked clone (else a full copy).")
    format: Literal["qcow2", "raw"] | None = Field(
        None, description="Image format; detected from the file when omitted."
    )
    bus: DiskBus = "virtio"
    readonly: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> DiskSpec:
        sources = [k for k in ("path", "image") if getattr(self, k) is not None]
        if (
            len(sources) > 1
            or (not sources and self.size is None)
            or (self.path is not None and self.size is not None)
        ):
            raise ValueError(
                "give exactly one of 'path' (an existing image), 'size' (a new disk) or "
                "'image' (a template to clone, optionally with a larger 'size')"
            )
        if self.size is not None and self.size < MiB:
            raise ValueError("a new disk must be at least 1 MiB")
        return self

    @property
    def is_new(self) -> bool:
        """virtkit creates this disk (blank or cloned) for the VM."""
        return self.path is None


class NicSpec(_Spec):
    """A NIC of a new VM: on a virtual network, a host bridge, a host interface (macvtap), or
    QEMU's user-mode network (no host network touched; ``ssh_forward`` maps a port on
    127.0.0.1 to the guest's SSH)."""

    network: str | None = Field(None, description="A virtual network.")
    bridge: str | None = Field(None, description="A host bridge.")
    direct: str | None = Field(None, description="A host interface (macvtap).")
    user: bool = Field(False, description="QEMU user-mode networking (guest isolated).")
    ssh_forward: int | None = Field(
        None, ge=1, le=65535, description="user: this port on 127.0.0.1 reaches the guest's SSH."
    )
    mode: MacvtapMode = Field("bridge", description="macvtap mode (with direct).")
    mac: str | None = Field(None, description="MAC address; default: a new unique 52:54:00 one.")
    model: NicModel = Field("virtio", description="virtio, e1000e, e1000 or rtl8139.")

    @model_validator(mode="after")
    def _one(self) -> NicSpec:
        if len([x for x in (self.network, self.bridge, self.direct, self.user) if x]) != 1:
            raise ValueError("a NIC needs exactly one of network, bridge, direct or user")
        if self.ssh_forward is not None and not self.user:
            raise ValueError("ssh_forward goes with user-mode networking (user: true)")
        if self.mac is not None:
            try:
                self.mac = validate_mac(self.mac)
            except InvalidInput as exc:
                raise ValueError(exc.message) from None
        return self


class CloudInitSpec(_Spec):
    """What cloud-init (or cloudbase-init) does at first boot (see docs/cloud-init.md)."""

    user: str | None = Field(None, description="A user to create, with sudo.")
    ssh_keys: list[str] = Field(default_factory=list, description="SSH public keys (text).")
    password_hash: str | None = Field(
        None, description="The user's password, hashed (a plain 'password' is hashed on input)."
    )
    hostname: str | None = Field(None, description="Default: the VM's name.")
    packages: list[str] = Field(default_factory=list)
    runcmd: list[str] = Field(default_factory=list, description="Commands run at first boot.")
    user_data: str | None = Field(None, description="Your own user-data, merged with the above.")
    network_config: dict[str, Any] | None = Field(None, description="network-config v1 or v2.")
    ip: str | None = Field(None, description="Static address with prefix: 198.18.0.10/24.")
    gateway: str | None = None
    dns: list[str] = Field(default_factory=list)
    seed: Literal["nocloud", "configdrive"] = Field("nocloud", description="Seed format.")
    host_keys: bool = Field(
        True,
        description="virtkit makes the guest's SSH host keys and 'vm ssh' accepts only those; "
        "false: the guest makes its own (cloudbase-init, or a user-data that sets ssh_keys).",
    )

    @model_validator(mode="before")
    @classmethod
    def _hash_password(cls, data: Any) -> Any:
        # the plain password never stays in the spec: hashed as it comes in
        if isinstance(data, dict) and data.get("password") is not None:
            from virtkit.cloudinit import hash_password

            data = dict(data)
            data["password_hash"] = hash_password(str(data.pop("password")))
        return data

    @model_validator(mode="after")
    def _check(self) -> CloudInitSpec:
        from virtkit import cloudinit

        try:
            if self.user is not None:
                validate_name(self.user, "user name")
            if self.hostname is not None:
                validate_name(self.hostname, "host name")
            self.ssh_keys = [cloudinit.check_public_key(k) for k in self.ssh_keys]
            if self.user_data is not None:
                cloudinit.parse_user_data(self.user_data)
            if self.network_config is not None and self.seed == "configdrive":
                raise ValueError(
                    "a ConfigDrive seed carries static addressing from ip; a network_config "
                    "needs seed nocloud"
                )
            if self.ip is not None:
                if self.network_config is not None:
                    raise ValueError("give either ip or network_config, not both")
                cloudinit.static_network(self.ip, self.gateway, self.dns, None)
            elif self.gateway or self.dns:
                raise ValueError("gateway and dns go with a static ip")
        except InvalidInput as exc:
            raise ValueError(exc.message) from None
        return self


class VMSpec(_Spec):
    """Everything needed to create a VM. The JSON schema is ``virtkit vm spec-schema``."""

    name: str = Field(description="VM name: letters, digits, '.', '_', '+', '-'; at most 64.")
    vcpus: int = Field(1, description="Number of virtual CPUs.")
    memory: MemoryBytes = Field(
        512 * MiB, description="Memory, e.g. 512M or 2G; a bare number is MiB."
    )
    disks: list[DiskSpec] = Field(default_factory=list)
    nics: list[NicSpec] = Field(default_factory=list, description="Network interfaces.")
    cloud_init: CloudInitSpec | None = Field(None, description="A cloud-init seed (first boot).")
    cdrom: str | None = Field(None, description="An ISO image to attach as a CD-ROM.")
    cdrom_bus: DiskBus | None = Field(
        None, description="Bus of the CD-ROM; default sata on q35, ide on i440fx."
    )
    kernel: str | None = Field(None, description="Direct kernel boot: kernel on the host.")
    initrd: str | None = Field(None, description="Direct kernel boot: initrd on the host.")
    cmdline: str | None = Field(None, description="Direct kernel boot: kernel command line.")
    boot: list[BootDevice] | None = Field(
        None, description="Boot order; default cdrom then hd with a cdrom, else hd."
    )
    graphics: GraphicsType = "none"
    graphics_listen: str = Field("127.0.0.1", description="Address VNC/SPICE listens on.")
    serial: bool = Field(True, description="A serial console (pty), logged to a file.")
    guest_agent: bool = Field(
        True,
        description="A channel for the QEMU guest agent (qemu-guest-agent in the guest): "
        "addresses, clean shutdown, consistent snapshots.",
    )
    machine: str | None = Field(None, description="Machine type, e.g. q35, pc; default q35.")
    arch: str = "x86_64"
    cpu: str | None = Field(
        None,
        description="CPU mode host-passthrough, host-model or maximum, or a CPU model name. "
        "Default host-passthrough under KVM, QEMU's default model under TCG.",
    )
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    autostart: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        try:
            return validate_name(value)
        except InvalidInput as exc:
            raise ValueError(exc.message) from None

    @field_validator("vcpus")
    @classmethod
    def _vcpus(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"vCPUs must be at least 1, got {value}")
        return value

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: int) -> int:
        if value < 16 * MiB:
            raise ValueError(f"memory must be at least 16 MiB, got {format_size(value)}")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        for tag in value:
            if not _TAG_RE.fullmatch(tag):
                raise ValueError(f"invalid tag {tag!r}: letters, digits and ._:=/- only")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _boot(self) -> VMSpec:
        if (self.initrd or self.cmdline) and not self.kernel:
            raise ValueError("'initrd' and 'cmdline' need 'kernel' (direct kernel boot)")
        if self.boot and "cdrom" in self.boot and not self.cdrom:
            raise ValueError("boot from 'cdrom' needs a 'cdrom' image")
        return self


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "spec"


def describe_validation_error(exc: ValidationError, source: str = "VM spec") -> str:
    """One line naming every problem pydantic found, e.g. ``disks[0].sizee: unknown key``."""
    problems = []
    for error in exc.errors():
        where = _location(tuple(error["loc"]))
        if error["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown key")
        elif error["type"] == "missing":
            problems.append(f"{where}: required")
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            problems.append(f"{where}: {message}")
    return f"invalid {source}: " + "; ".join(problems)


def parse_vm_spec(data: Any, source: str = "VM spec") -> VMSpec:
    """Validate a mapping as a :class:`VMSpec`; raise :class:`InvalidInput` with one clear line."""
    return parse_model(VMSpec, data, source)


class _View(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)


class SetResult(_View):
    """What ``vm set`` changed: each line says whether it applies now, at next boot, or both."""

    name: str
    changes: list[str] = Field(default_factory=list)


class DeleteResult(_View):
    name: str
    removed: list[str] = Field(default_factory=list, description="Storage removed.")
    kept: list[str] = Field(default_factory=list, description="Storage kept, with the reason.")
    was_running: bool = False


class DiskView(_View):
    target: str
    device: str
    bus: str | None
    source: str | None
    format: str | None
    readonly: bool
    owned: bool = Field(description="Created by virtkit for this VM (removed with it).")


class GraphicsView(_View):
    type: str
    listen: str | None
    port: int | None


class VMSummary(_View):
    name: str
    uuid: str
    state: VMState
    vcpus: int
    memory: int = Field(description="Current memory in bytes.")
    max_memory: int = Field(description="Maximum memory in bytes.")
    uptime: float | None = Field(None, description="Seconds since the VM started (local hosts).")
    autostart: bool
    persistent: bool
    tags: list[str] = Field(default_factory=list)


class VMInfo(VMSummary):
    state_reason: int = 0
    domain_type: str
    machine: str | None
    arch: str | None
    max_vcpus: int
    cpu: str | None
    description: str | None
    boot: list[str] = Field(default_factory=list)
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    disks: list[DiskView] = Field(default_factory=list)
    graphics: list[GraphicsView] = Field(default_factory=list)
    serial_console: bool = False
    ksm: bool = Field(True, description="Its memory may be merged by KSM (no <nosharepages/>).")
    serial_log: str | None = None
    console_pty: str | None = None
    created_by_virtkit: bool = False
    guest_agent: str | None = Field(
        None,
        description="The guest agent's channel: connected, disconnected (no agent answering), "
        "or null (no channel).",
    )
    ssh_host_keys: list[str] = Field(
        default_factory=list,
        description="Public SSH host keys virtkit made for the guest ('vm ssh' accepts these).",
    )


class KvmStatus(_View):
    usable: bool
    reason: str
    checked_at: float
    cached: bool
    fix: str | None = Field(None, description="What to change on the host to make KVM usable.")


class NumaNode(_View):
    id: int
    memory: int
    cpus: int | None


class HugePages(_View):
    size: int = Field(description="Page size in bytes.")
    total: int
    free: int


class KsmState(_View):
    run: str | None = Field(None, description="stopped, running or unmerging (local hosts).")
    pages_shared: int | None = None
    pages_sharing: int | None = None
    pages_unshared: int | None = None
    pages_volatile: int | None = None
    full_scans: int | None = None
    pages_to_scan: int | None = None
    sleep_millisecs: int | None = None
    merge_across_nodes: int | None = None
    saved: int | None = Field(None, description="Approximate bytes saved (pages_sharing).")


class HostInfo(_View):
    uri: str
    hostname: str
    libvirt_version: str
    hypervisor: str
    hypervisor_version: str
    arch: str | None
    cpu_model: str | None
    cpu_vendor: str | None
    cpus: int
    sockets: int
    cores: int
    threads: int
    numa_nodes: list[NumaNode]
    memory_total: int
    memory_free: int
    hugepages: list[HugePages]
    ksm: KsmState
    kvm: KvmStatus
    domain_type: str
    machines: list[str]
    max_vcpus: int | None


# -- storage ----------------------------------------------------------------------------------

PoolType = Literal["dir", "logical", "netfs", "iscsi", "rbd"]
VolumeFormat = Literal["qcow2", "raw"]


def validate_volume_name(name: str) -> str:
    """Volume names become file names in the pool's directory: no paths, no hidden files."""
    if not isinstance(name, str) or not name:
        raise InvalidInput("invalid volume name: the name is empty", code="invalid_name")
    if "/" in name or name in (".", "..") or ".." in name or name.startswith("."):
        raise InvalidInput(
            f"invalid volume name {name!r}: no '/', no '..', not starting with '.'",
            code="invalid_name",
        )
    if len(name) > 255 or any(ord(c) < 32 for c in name):
        raise InvalidInput(
            f"invalid volume name {name!r}: at most 255 printable characters",
            code="invalid_name",
        )
    return name


def _positive_size(value: object) -> int:
    size = parse_size(value, default_unit="G")
    if size <= 0:
        raise ValueError(f"a size must be more than 0, got {value!r}")
    return size


PositiveBytes = Annotated[int, BeforeValidator(_positive_size)]


class PoolSpec(_Spec):
    """A storage pool. Directory pools need ``path``; the others name their source."""

    name: str
    type: PoolType = "dir"
    path: str | None = Field(None, description="Target directory (dir, netfs) or /dev/VG.")
    source_host: str | None = Field(None, description="Server for netfs, iscsi, rbd.")
    source_path: str | None = Field(None, description="Export path (netfs) or target IQN (iscsi).")
    source_name: str | None = Field(None, description="Volume group (logical), Ceph pool (rbd).")
    source_devices: list[str] = Field(default_factory=list, description="PVs of a logical pool.")
    source_format: str | None = Field(None, description="e.g. nfs for netfs, lvm2 for logical.")
    auth_username: str | None = Field(None, description="Ceph user (rbd).")
    auth_secret_uuid: str | None = Field(None, description="libvirt secret with the Ceph key.")
    autostart: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        try:
            return validate_name(value, "pool")
        except InvalidInput as exc:
            raise ValueError(exc.message) from None

    @model_validator(mode="after")
    def _shape(self) -> PoolSpec:
        need: dict[str, tuple[str, ...]] = {
            "dir": ("path",),
            "netfs": ("path", "source_host", "source_path"),
            "logical": ("source_name",),
            "iscsi": ("source_host", "source_path"),
            "rbd": ("source_host", "source_name"),
        }
        missing = [k for k in need[self.type] if not getattr(self, k)]
        if missing:
            raise ValueError(f"a {self.type} pool needs {', '.join(missing)}")
        if self.path is not None and not self.path.startswith("/"):
            raise ValueError(f"path {self.path!r} is not absolute")
        if self.type == "rbd" and bool(self.auth_username) != bool(self.auth_secret_uuid):
            raise ValueError("rbd auth needs both auth_username and auth_secret_uuid")
        return self


class VolumeSpec(_Spec):
    name: str
    size: PositiveBytes
    format: VolumeFormat = "qcow2"
    preallocation: Literal["off", "metadata", "full"] = "off"

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        try:
            return validate_volume_name(value)
        except InvalidInput as exc:
            raise ValueError(exc.message) from None


class PoolInfo(_View):
    name: str
    type: str
    active: bool
    autostart: bool
    persistent: bool
    path: str | None
    capacity: int | None
    allocation: int | None
    available: int | None
    source: str | None = None
    volumes: int | None = None


class VolumeInfo(_View):
    name: str
    pool: str
    path: str
    format: str | None
    capacity: int
    allocation: int
    backing: str | None = Field(None, description="Backing file (linked clones).")
    used_by: list[str] = Field(default_factory=list, description="VMs whose disks use it.")
    backing_chain: list[str] = Field(default_factory=list)


def parse_model(model: type[_M], data: Any, source: str) -> _M:
    """Validate ``data`` as ``model``, raising InvalidInput with one clear line."""
    if not isinstance(data, dict):
        raise InvalidInput(
            f"invalid {source}: expected a mapping of keys, got {type(data).__name__}",
            code="invalid_spec",
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(describe_validation_error(exc, source), code="invalid_spec") from None


class ImageInfo(_View):
    pool: str
    name: str
    path: str
    format: str | None
    capacity: int
    allocation: int
    sha256: str | None = None
    origin: str | None = Field(None, description="The file it was imported from.")
    os: str | None = None
    template: bool = False
    clones: list[str] = Field(default_factory=list, description="Linked clones built on it.")
    boot: dict[str, str] | None = Field(
        None, description="Direct kernel boot for images without a boot loader: kernel, initrd, "
        "cmdline (files on the VM host).",
    )  # fmt: skip


class KsmVM(_View):
    name: str
    pid: int | None
    mergeable: bool | None = Field(None, description="QEMU marked its RAM mergeable.")
    opted_out: bool = Field(description="<nosharepages/>: excluded from KSM (next start).")
    merging_pages: int | None = None
    profit: int | None = Field(None, description="Bytes this VM saves (ksm_process_profit).")
    memory: int


class KsmReport(_View):
    run: str
    settings: dict[str, str]
    pages_shared: int | None
    pages_sharing: int | None
    pages_unshared: int | None
    pages_volatile: int | None
    full_scans: int | None
    saved: int | None = Field(None, description="Bytes saved (general_profit).")
    guest_memory: int = Field(description="Memory of the running VMs, bytes.")
    saved_share: float | None = Field(None, description="saved / guest_memory.")
    ksmd_cpu_seconds: float | None = None
    vms: list[KsmVM] = Field(default_factory=list)


class KsmHistoryPoint(_View):
    time: float = Field(description="Unix time of the sample.")
    run: str
    pages_to_scan: int
    sleep_millisecs: int
    saved: int = Field(description="Bytes saved (general_profit).")
    pages_sharing: int
    pages_volatile: int
    full_scans: int
    ksmd_cpu_seconds: float = Field(description="ksmd's CPU time since boot.")
    ksmd_cpu_share: float | None = Field(
        None, description="Share of a core since the sample before."
    )


class KsmHistoryVMPoint(_View):
    time: float
    name: str
    merging_pages: int
    saved: int = Field(description="Bytes this VM saves (ksm_process_profit).")


class KsmEstimate(_View):
    vms: list[str]
    pages: int = Field(description="Mergeable pages present in memory (4 KiB; untouched skipped).")
    zero_pages: int = Field(description="All-zero pages the guests have written.")
    duplicate_pages: int = Field(description="Non-zero pages that have an identical copy.")
    merging_pages: int = Field(
        0, description="Non-zero pages with a twin (as ksm_merging_pages counts them)."
    )
    saved: int = Field(description="Bytes KSM would free, at most (duplicates and zero pages).")
    saved_nonzero: int = Field(
        description="Bytes from non-zero duplicates alone: the prediction KSM meets."
    )
    share: float = Field(description="saved / memory read.")
    seconds: float
    gib_per_second: float


# -- networks ----------------------------------------------------------------------------------

NetworkKind = Literal["nat", "route", "isolated", "open", "bridge", "macvtap"]
MacvtapMode = Literal["bridge", "vepa", "private", "passthrough"]
NicModel = Literal["virtio", "e1000e", "e1000", "rtl8139"]
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def validate_mac(mac: str) -> str:
    """A unicast MAC address in lower case, or :class:`InvalidInput`."""
    value = mac.strip().lower().replace("-", ":")
    if not _MAC.match(value):
        raise InvalidInput(
            f"invalid MAC address {mac!r}: expected six hex pairs like 52:54:00:12:34:56",
            code="invalid_mac",
        )
    if int(value[:2], 16) & 1:
        raise InvalidInput(
            f"MAC address {mac!r} is a multicast address: the first byte must be even",
            code="invalid_mac",
        )
    return value


def _interface(
    value: str, family: int, what: str
) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        raise ValueError(
            f"{what} {value!r} is not an address with a prefix like "
            + ("198.18.1.1/24" if family == 4 else "fd00:1::1/64")
        ) from None
    if iface.version != family:
        raise ValueError(f"{what} {value!r} is not an IPv{family} address")
    if "/" not in value:
        raise ValueError(f"{what} {value!r} needs a prefix length (like /24)")
    net = iface.network
    if family == 4 and net.prefixlen > 30:
        raise ValueError(f"{what} {value!r}: a /{net.prefixlen} leaves no room for guests")
    if iface.ip in (net.network_address, net.broadcast_address) and net.num_addresses > 2:
        raise ValueError(
            f"{what} {value!r}: the host address cannot be the subnet's network or broadcast "
            "address"
        )
    return iface


class NetworkSpec(_Spec):
    """A virtual network (see docs/networking.md for each kind)."""

    name: str
    kind: NetworkKind = Field("nat", description="nat, route, isolated, open, bridge, macvtap.")
    ipv4: str | None = Field(None, description="The host's address and prefix: 198.18.1.1/24.")
    dhcp: bool = Field(True, description="Serve DHCP on the IPv4 subnet.")
    dhcp_start: str | None = Field(None, description="First DHCP address (default: host + 1).")
    dhcp_end: str | None = Field(None, description="Last DHCP address (default: the last one).")
    ipv6: str | None = Field(None, description="The host's IPv6 address and prefix: fd00:1::1/64.")
    dhcp6_start: str | None = Field(None, description="First DHCPv6 address (optional).")
    dhcp6_end: str | None = Field(None, description="Last DHCPv6 address.")
    bridge: str | None = Field(
        None, description="bridge kind: an existing host bridge; others: the bridge to create."
    )
    interface: str | None = Field(
        None, description="macvtap: the host interface; nat/route: the uplink (optional)."
    )
    mode: MacvtapMode = Field("bridge", description="macvtap mode.")
    domain: str | None = Field(None, description="DNS domain of the network.")
    autostart: bool = True
    start: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        try:
            return validate_name(value, "network")
        except InvalidInput as exc:
            raise ValueError(exc.message) from None

    @model_validator(mode="after")
    def _shape(self) -> NetworkSpec:
        routed = self.kind in ("nat", "route", "isolated", "open")
        if self.kind in ("nat", "route", "open") and not (self.ipv4 or self.ipv6):
            raise ValueError(f"a {self.kind} network needs an IPv4 or IPv6 subnet (ipv4: ...)")
        if self.kind == "bridge" and not self.bridge:
            raise ValueError("a bridge network needs the host bridge to join (bridge: br0)")
        if self.kind == "macvtap" and not self.interface:
            raise ValueError("a macvtap network needs the host interface (interface: eth0)")
        if not routed and (self.ipv4 or self.ipv6):
            raise ValueError(
                f"a {self.kind} network has no subnet of its own: the guests are on the host's "
                "LAN (drop ipv4/ipv6)"
            )
        if self.ipv4:
            iface = _interface(self.ipv4, 4, "ipv4")
            self._check_range(iface, self.dhcp_start, self.dhcp_end, "dhcp")
        elif self.dhcp_start or self.dhcp_end:
            raise ValueError("a DHCP range needs an ipv4 subnet")
        if self.ipv6:
            iface6 = _interface(self.ipv6, 6, "ipv6")
            if iface6.network.prefixlen != 64 and (self.dhcp6_start or self.dhcp6_end):
                raise ValueError("DHCPv6 in libvirt networks needs a /64 prefix")
            self._check_range(iface6, self.dhcp6_start, self.dhcp6_end, "dhcp6", default=False)
        elif self.dhcp6_start or self.dhcp6_end:
            raise ValueError("a DHCPv6 range needs an ipv6 subnet")
        return self

    def _check_range(
        self,
        iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
        start: str | None,
        end: str | None,
        what: str,
        default: bool = True,
    ) -> None:
        if bool(start) != bool(end):
            raise ValueError(f"a {what} range needs both {what}_start and {what}_end")
        if not start or not end:
            return
        try:
            first, last = ipaddress.ip_address(start), ipaddress.ip_address(end)
        except ValueError as exc:
            raise ValueError(f"{what} range: {exc}") from None
        net = iface.network
        for label, addr in (("start", first), ("end", last)):
            if addr not in net:
                raise ValueError(f"{what}_{label} {addr} is outside the subnet {net}")
            if addr in (net.network_address, net.broadcast_address):
                raise ValueError(f"{what}_{label} {addr} is the subnet's network/broadcast address")
        if int(first) > int(last):
            raise ValueError(f"{what} range {first}-{last} is reversed (start after end)")
        if int(first) <= int(iface.ip) <= int(last):
            raise ValueError(f"{what} range {first}-{last} holds the host's own address {iface.ip}")

    def ipv4_range(self) -> tuple[str, str] | None:
        """The DHCP range: given, or from the address after the host's to the last usable."""
        if not self.ipv4 or not self.dhcp:
            return None
        if self.dhcp_start and self.dhcp_end:
            return self.dhcp_start, self.dhcp_end
        iface = ipaddress.ip_interface(self.ipv4)
        net = iface.network
        first, last, host = (
            int(net.network_address) + 1,
            int(net.broadcast_address) - 1,
            int(iface.ip),
        )
        start, end = (host + 1, last) if host < last else (first, host - 1)
        return str(ipaddress.ip_address(start)), str(ipaddress.ip_address(end))


def parse_network_spec(data: Any, source: str = "network spec") -> NetworkSpec:
    return parse_model(NetworkSpec, data, source)


class Reservation(_View):
    mac: str
    ip: str
    name: str | None = None


class DnsEntry(_View):
    ip: str
    hostnames: list[str]


class NetworkInfo(_View):
    name: str
    uuid: str | None
    kind: str
    active: bool
    autostart: bool
    persistent: bool
    bridge: str | None
    interface: str | None = None
    ipv4: str | None = None
    ipv6: str | None = None
    dhcp_ranges: list[tuple[str, str]] = Field(default_factory=list)
    reservations: list[Reservation] = Field(default_factory=list)
    dns_hosts: list[DnsEntry] = Field(default_factory=list)
    domain: str | None = None
    vms: list[str] = Field(default_factory=list, description="VMs with a NIC on it.")


class Lease(_View):
    mac: str
    ip: str
    prefix: int
    hostname: str | None
    expires: int = Field(description="Unix time the lease expires (0: never).")


class NicInfo(_View):
    mac: str
    type: str = Field(description="network, bridge, direct (macvtap) or user.")
    source: str | None = Field(None, description="The network, bridge or host interface.")
    model: str | None
    link: str = Field(description="up or down.")
    target: str | None = Field(None, description="The host-side device (vnet0) while running.")


class GuestAddress(_View):
    mac: str
    ip: str
    prefix: int
    source: str = Field(description="lease, agent or arp: which source answered.")
    interface: str | None = Field(None, description="Guest interface (agent) or host device.")
