"""virtkit: a KVM virtualization manager over libvirt and QEMU.

The typed public surface: :class:`Client` and its services (``vms``, ``hosts``, ``consoles``),
the specs and views in :mod:`virtkit.specs`, and the errors in :mod:`virtkit.errors`.
"""

from virtkit._version import __version__
from virtkit.client import Client, DomainEvent
from virtkit.errors import (
    AlreadyExists,
    BackendError,
    ConnectionFailed,
    ConnectionLost,
    InUse,
    InvalidInput,
    InvalidState,
    NotFound,
    PermissionDenied,
    Timeout,
    Unsupported,
    VirtkitError,
)
from virtkit.settings import Settings
from virtkit.specs import DiskSpec, HostInfo, VMInfo, VMSpec, VMState, VMSummary, parse_vm_spec

__all__ = [
    "AlreadyExists",
    "BackendError",
    "Client",
    "ConnectionFailed",
    "ConnectionLost",
    "DiskSpec",
    "DomainEvent",
    "HostInfo",
    "InUse",
    "InvalidInput",
    "InvalidState",
    "NotFound",
    "PermissionDenied",
    "Settings",
    "Timeout",
    "Unsupported",
    "VMInfo",
    "VMSpec",
    "VMState",
    "VMSummary",
    "VirtkitError",
    "__version__",
    "parse_vm_spec",
]
