"""Storage: pools and volumes (specs and info), and imported images."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from virtkit.errors import InvalidInput
from virtkit.specs.common import _Spec, _View, check_model, checked, name_rule, rule_error, sized
from virtkit.specs.units import format_size

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


def _positive(value: int) -> int:
    if value <= 0:
        raise rule_error("invalid_size", f"a size must be more than 0, got {format_size(value)}")
    return value


PositiveSize = Annotated[int, sized("G"), AfterValidator(_positive)]
"""A size in bytes, more than 0; ``10G``, or a bare number of GiB."""
PoolName = Annotated[str, name_rule("pool")]
VolumeName = Annotated[str, checked(validate_volume_name)]


class PoolSpec(_Spec):
    """A storage pool. Directory pools need ``path``; the others name their source."""

    name: PoolName
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
    name: VolumeName
    size: PositiveSize
    format: VolumeFormat = "qcow2"
    preallocation: Literal["off", "metadata", "full"] = "off"


class VolumeResizeSpec(_Spec):
    """``volume resize``: the new size (shrinking must be asked for; the service checks)."""

    size: PositiveSize
    shrink: bool = False

    @classmethod
    def check(cls, *, size: int | str, shrink: bool) -> VolumeResizeSpec:
        """The checked request: ``size`` in bytes (int) or as text (``10G``; bare: GiB)."""
        data = {"size": size, "shrink": shrink}
        return check_model(cls, data, "volume resize", ints_are_bytes=True)


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
