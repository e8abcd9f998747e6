"""VM specs (create, change, disk attach) and views (summary, info, disks, results)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from virtkit.specs.cloudinit import CloudInitSpec
from virtkit.specs.common import Name, _Spec, _View, check_model, parse_model, rule_error, sized
from virtkit.specs.network import NicSpec
from virtkit.specs.states import VMState
from virtkit.specs.units import MiB, format_size

MEMORY_MIN = 16 * MiB
NEW_DISK_MIN = MiB
_TAG_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:=/-]{0,63}")


def _memory_min(value: int) -> int:
    if value < MEMORY_MIN:
        raise rule_error(
            "invalid_memory", f"memory must be at least 16 MiB, got {format_size(value)}"
        )
    return value


def _vcpus_min(value: int) -> int:
    if value < 1:
        raise rule_error("invalid_vcpus", f"vCPUs must be at least 1, got {value}")
    return value


def _new_disk_min(value: int) -> int:
    if value < NEW_DISK_MIN:
        raise rule_error("invalid_size", "a new disk must be at least 1 MiB")
    return value


Memory = Annotated[int, sized("M", "invalid_memory"), AfterValidator(_memory_min)]
"""Memory in bytes, at least 16 MiB; ``512M``, ``2G``, or a bare number of MiB."""
VCpus = Annotated[int, AfterValidator(_vcpus_min)]
"""A number of vCPUs, at least 1 (the host's limit is checked by the service)."""
DiskSize = Annotated[int, sized("G"), AfterValidator(_new_disk_min)]
"""The size of a new disk in bytes, at least 1 MiB; ``10G``, or a bare number of GiB."""

GraphicsType = Literal["none", "vnc", "spice"]
DiskBus = Literal["virtio", "scsi", "sata", "ide"]
HOTPLUG_BUSES = ("virtio", "scsi")
BootDevice = Literal["hd", "cdrom", "network"]


class DiskSpec(_Spec):
    """A disk: an existing image (``path``), a new blank qcow2 volume (``size``), or a clone of
    a template (``image``; linked by default, ``linked: false`` copies)."""

    path: str | None = Field(None, description="An existing disk image on the host.")
    size: DiskSize | None = Field(
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
        return self

    @property
    def is_new(self) -> bool:
        """virtkit creates this disk (blank or cloned) for the VM."""
        return self.path is None


class VMSpec(_Spec):
    """Everything needed to create a VM. The JSON schema is ``virtkit vm spec-schema``."""

    name: Name = Field(description="VM name: letters, digits, '.', '_', '+', '-'; at most 64.")
    vcpus: VCpus = Field(1, description="Number of virtual CPUs.")
    max_vcpus: VCpus | None = Field(
        None,
        description="vCPU maximum, up to which the running VM takes vCPUs live ('vm set "
        "--vcpus'). Default: twice 'vcpus', within the machine type's limit.",
    )
    memory: Memory = Field(512 * MiB, description="Memory, e.g. 512M or 2G; a bare number is MiB.")
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
    owner: str | None = Field(
        None,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="The API user the VM belongs to (the API sets its caller; admins may name "
        "another user).",
    )
    autostart: bool = False

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        for tag in value:
            if not _TAG_RE.fullmatch(tag):
                raise ValueError(f"invalid tag {tag!r}: letters, digits and ._:=/- only")
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _boot(self) -> VMSpec:
        if self.max_vcpus is not None and self.max_vcpus < self.vcpus:
            raise ValueError(f"'max_vcpus' ({self.max_vcpus}) is less than 'vcpus' ({self.vcpus})")
        if (self.initrd or self.cmdline) and not self.kernel:
            raise ValueError("'initrd' and 'cmdline' need 'kernel' (direct kernel boot)")
        if self.boot and "cdrom" in self.boot and not self.cdrom:
            raise ValueError("boot from 'cdrom' needs a 'cdrom' image")
        return self


def parse_vm_spec(data: Any, source: str = "VM spec") -> VMSpec:
    """Validate a mapping as a :class:`VMSpec`; raise :class:`InvalidInput` with one clear line."""
    return parse_model(VMSpec, data, source)


class VMSetSpec(_Spec):
    """``vm set``: new vCPUs, vCPU maximum and/or memory, by the rules of :class:`VMSpec` (the
    host's limits are checked by the service)."""

    vcpus: VCpus | None = Field(None, description="New number of vCPUs.")
    max_vcpus: VCpus | None = Field(
        None,
        description="New maximum of vCPUs (persistent: from the next start), up to which a "
        "running VM can take vCPUs live.",
    )
    memory: Memory | None = Field(None, description="New memory, e.g. 1G; a bare number is MiB.")

    @model_validator(mode="after")
    def _something(self) -> VMSetSpec:
        if self.vcpus is None and self.max_vcpus is None and self.memory is None:
            raise rule_error(
                "nothing_to_set", "nothing to change: give vCPUs, their maximum and/or memory"
            )
        if self.vcpus is not None and self.max_vcpus is not None and self.vcpus > self.max_vcpus:
            raise rule_error(
                "invalid_vcpus",
                f"{self.vcpus} vCPUs is more than the maximum of {self.max_vcpus} given with them",
            )
        return self

    @classmethod
    def check(
        cls, *, vcpus: int | None, memory: int | str | None, max_vcpus: int | None = None
    ) -> VMSetSpec:
        """The checked change: ``memory`` in bytes (int) or as text (``2G``; bare: MiB)."""
        data = {"vcpus": vcpus, "max_vcpus": max_vcpus, "memory": memory}
        return check_model(cls, data, "VM change", ints_are_bytes=True)


def _hotplug_bus(value: str) -> str:
    if value not in HOTPLUG_BUSES:
        raise rule_error("invalid_bus", f"hot-pluggable buses are virtio and scsi, not {value!r}")
    return value


class DiskAttachSpec(_Spec):
    """``disk attach``: an existing image (``path``) or a new blank qcow2 volume (``size``)."""

    path: str | None = Field(None, description="An existing disk image on the host.")
    size: DiskSize | None = Field(None, description="A new blank volume; a bare number is GiB.")
    bus: Annotated[str, AfterValidator(_hotplug_bus)] = Field("virtio", description="virtio, scsi.")
    readonly: bool = False
    format: Literal["qcow2", "raw"] | None = Field(
        None, description="The image's format (with 'path'); detected from the file when omitted."
    )

    @model_validator(mode="after")
    def _one_source(self) -> DiskAttachSpec:
        if (self.path is None) == (self.size is None):
            raise rule_error("invalid_spec", "give exactly one of an image path or a size")
        if self.format is not None and self.path is None:
            raise rule_error("invalid_spec", "a format goes with an image path only")
        return self

    @classmethod
    def check(
        cls,
        *,
        path: str | None,
        size: int | str | None,
        bus: str,
        readonly: bool,
        format: str | None = None,
    ) -> DiskAttachSpec:
        """The checked request: ``size`` in bytes (int) or as text (``10G``; bare: GiB)."""
        data = {"path": path, "size": size, "bus": bus, "readonly": readonly, "format": format}
        return check_model(cls, data, "disk attach", ints_are_bytes=True)


WaitFor = Literal["boot", "cloud-init", "ssh"]
"""What ``vm wait`` waits for: the guest booted (a login prompt on its serial console),
cloud-init finished, or its SSH server answers."""


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
    owner: str | None = Field(
        None, description="The API user the VM belongs to (who created it through the API)."
    )
    template: str | None = Field(
        None, description="The template (POOL/NAME) the VM's first cloned disk comes from."
    )


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
