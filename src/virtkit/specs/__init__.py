"""Pydantic models that cross layers: what a user asks for (specs) and what virtkit reports (views).

Specs validate everything that can be checked without a host: names, sizes, shapes, unknown keys.
Checks that need the host (memory larger than the host, an unknown machine type, a missing image)
happen in the services, which know the host.

One module per domain: :mod:`~virtkit.specs.vm`, :mod:`~virtkit.specs.cloudinit`,
:mod:`~virtkit.specs.network`, :mod:`~virtkit.specs.storage`, :mod:`~virtkit.specs.host`,
:mod:`~virtkit.specs.ksm`; what they share is in :mod:`~virtkit.specs.common` (names, sizes, base
classes, error messages) and :mod:`~virtkit.specs.units` (sizes, without pydantic).
``from virtkit.specs import X`` imports X's module on first use (PEP 562), so that a command that
needs one spec (or only ``format_size``) does not import and build them all.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_MODULES = {
    "units": ["KiB", "MiB", "GiB", "TiB", "parse_size", "format_size", "parse_since"],
    "common": [
        "NAME_MAX",
        "validate_name",
        "Name",
        "Size",
        "describe_validation_error",
        "parse_model",
        "check_model",
    ],
    "states": ["VMState"],
    "vm": [
        "MEMORY_MIN",
        "NEW_DISK_MIN",
        "Memory",
        "VCpus",
        "DiskSize",
        "GraphicsType",
        "DiskBus",
        "HOTPLUG_BUSES",
        "BootDevice",
        "DiskSpec",
        "VMSpec",
        "parse_vm_spec",
        "VMSetSpec",
        "DiskAttachSpec",
        "SetResult",
        "DeleteResult",
        "DiskView",
        "GraphicsView",
        "VMSummary",
        "VMInfo",
        "WaitFor",
    ],
    "cloudinit": ["UserName", "HostName", "CloudInitSpec", "SeedFile", "SeedView"],
    "network": [
        "NetworkKind",
        "MacvtapMode",
        "NicModel",
        "validate_mac",
        "NetworkName",
        "NetworkSpec",
        "parse_network_spec",
        "NicSpec",
        "Reservation",
        "DnsEntry",
        "NetworkInfo",
        "Lease",
        "NicInfo",
        "GuestAddress",
    ],
    "storage": [
        "PoolType",
        "VolumeFormat",
        "validate_volume_name",
        "PositiveSize",
        "PoolName",
        "VolumeName",
        "PoolSpec",
        "VolumeSpec",
        "VolumeResizeSpec",
        "PoolInfo",
        "VolumeInfo",
        "ImageInfo",
    ],
    "doctor": ["Severity", "Finding", "DoctorReport", "FixResult"],
    "host": ["KvmStatus", "KvmFix", "NumaNode", "HugePages", "KsmState", "HostInfo"],
    "fleet": [
        "FleetHost",
        "HostStatus",
        "HostVMs",
        "Placement",
        "PlacementCandidate",
        "MigrateOptions",
        "MigrationCheck",
        "DiskMove",
        "EvacuationItem",
        "EvacuationReport",
        "MigrationPlan",
        "MigrationResult",
    ],
    "ksm": [
        "KsmVM",
        "KsmReport",
        "KsmHistoryPoint",
        "KsmHistoryVMPoint",
        "KsmSamples",
        "KsmEstimate",
    ],
    "inventory": ["Inventory"],
    "tuning": ["TuneProfile", "TuneChange", "TuneReport", "HostTuneKnob", "HostTuneReport"],
}
_EXPORTS = {name: f"virtkit.specs.{module}" for module, names in _MODULES.items() for name in names}

if TYPE_CHECKING:
    from virtkit.specs.cloudinit import CloudInitSpec, HostName, SeedFile, SeedView, UserName
    from virtkit.specs.common import (
        NAME_MAX,
        Name,
        Size,
        check_model,
        describe_validation_error,
        parse_model,
        validate_name,
    )
    from virtkit.specs.doctor import DoctorReport, Finding, FixResult, Severity
    from virtkit.specs.fleet import (
        DiskMove,
        FleetHost,
        HostStatus,
        HostVMs,
        MigrateOptions,
        MigrationCheck,
        MigrationPlan,
        MigrationResult,
        Placement,
        PlacementCandidate,
    )
    from virtkit.specs.host import HostInfo, HugePages, KsmState, KvmFix, KvmStatus, NumaNode
    from virtkit.specs.inventory import Inventory
    from virtkit.specs.ksm import (
        KsmEstimate,
        KsmHistoryPoint,
        KsmHistoryVMPoint,
        KsmReport,
        KsmSamples,
        KsmVM,
    )
    from virtkit.specs.network import (
        DnsEntry,
        GuestAddress,
        Lease,
        MacvtapMode,
        NetworkInfo,
        NetworkKind,
        NetworkName,
        NetworkSpec,
        NicInfo,
        NicModel,
        NicSpec,
        Reservation,
        parse_network_spec,
        validate_mac,
    )
    from virtkit.specs.states import VMState
    from virtkit.specs.storage import (
        ImageInfo,
        PoolInfo,
        PoolName,
        PoolSpec,
        PoolType,
        PositiveSize,
        VolumeFormat,
        VolumeInfo,
        VolumeName,
        VolumeResizeSpec,
        VolumeSpec,
        validate_volume_name,
    )
    from virtkit.specs.tuning import (
        HostTuneKnob,
        HostTuneReport,
        TuneChange,
        TuneProfile,
        TuneReport,
    )
    from virtkit.specs.units import GiB, KiB, MiB, TiB, format_size, parse_since, parse_size
    from virtkit.specs.vm import (
        HOTPLUG_BUSES,
        MEMORY_MIN,
        NEW_DISK_MIN,
        BootDevice,
        DeleteResult,
        DiskAttachSpec,
        DiskBus,
        DiskSize,
        DiskSpec,
        DiskView,
        GraphicsType,
        GraphicsView,
        Memory,
        SetResult,
        VCpus,
        VMInfo,
        VMSetSpec,
        VMSpec,
        VMSummary,
        WaitFor,
        parse_vm_spec,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'virtkit.specs' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "HOTPLUG_BUSES",
    "MEMORY_MIN",
    "NAME_MAX",
    "NEW_DISK_MIN",
    "BootDevice",
    "CloudInitSpec",
    "DeleteResult",
    "DiskAttachSpec",
    "DiskBus",
    "DiskMove",
    "DiskSize",
    "DiskSpec",
    "DiskView",
    "DnsEntry",
    "DoctorReport",
    "Finding",
    "FixResult",
    "FleetHost",
    "GiB",
    "GraphicsType",
    "GraphicsView",
    "GuestAddress",
    "HostInfo",
    "HostName",
    "HostStatus",
    "HostTuneKnob",
    "HostTuneReport",
    "HostVMs",
    "HugePages",
    "ImageInfo",
    "Inventory",
    "KiB",
    "KsmEstimate",
    "KsmHistoryPoint",
    "KsmHistoryVMPoint",
    "KsmReport",
    "KsmSamples",
    "KsmState",
    "KsmVM",
    "KvmFix",
    "KvmStatus",
    "Lease",
    "MacvtapMode",
    "Memory",
    "MiB",
    "MigrateOptions",
    "MigrationCheck",
    "MigrationPlan",
    "MigrationResult",
    "Name",
    "NetworkInfo",
    "NetworkKind",
    "NetworkName",
    "NetworkSpec",
    "NicInfo",
    "NicModel",
    "NicSpec",
    "NumaNode",
    "Placement",
    "PlacementCandidate",
    "PoolInfo",
    "PoolName",
    "PoolSpec",
    "PoolType",
    "PositiveSize",
    "Reservation",
    "SeedFile",
    "SeedView",
    "SetResult",
    "Severity",
    "Size",
    "TiB",
    "TuneChange",
    "TuneProfile",
    "TuneReport",
    "UserName",
    "VCpus",
    "VMInfo",
    "VMSetSpec",
    "VMSpec",
    "VMState",
    "VMSummary",
    "VolumeFormat",
    "VolumeInfo",
    "VolumeName",
    "VolumeResizeSpec",
    "VolumeSpec",
    "WaitFor",
    "check_model",
    "describe_validation_error",
    "format_size",
    "parse_model",
    "parse_network_spec",
    "parse_since",
    "parse_size",
    "parse_vm_spec",
    "validate_mac",
    "validate_name",
    "validate_volume_name",
]
