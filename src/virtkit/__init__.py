"""virtkit: a KVM virtualization manager over libvirt and QEMU.

The typed public surface: :class:`Client` and its services (``vms``, ``hosts``, ``consoles``),
the specs and views in :mod:`virtkit.specs`, the errors in :mod:`virtkit.errors`, and
:class:`Settings`. Names are imported on first use, so ``import virtkit`` (and the CLI) start fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from virtkit._version import __version__

_EXPORTS = {
    "Client": "virtkit.client",
    "DomainEvent": "virtkit.backend.events",
    "Settings": "virtkit.settings",
    **dict.fromkeys(
        ["DiskSpec", "HostInfo", "VMInfo", "VMSpec", "VMState", "VMSummary", "parse_vm_spec"],
        "virtkit.specs",
    ),
    **dict.fromkeys(
        [
            "AlreadyExists",
            "BackendError",
            "ConnectionFailed",
            "ConnectionLost",
            "InUse",
            "InvalidInput",
            "InvalidState",
            "NotFound",
            "PermissionDenied",
            "Timeout",
            "Unsupported",
            "VirtkitError",
        ],
        "virtkit.errors",
    ),
}

if TYPE_CHECKING:
    from virtkit.backend.events import DomainEvent
    from virtkit.client import Client
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
    from virtkit.specs import (
        DiskSpec,
        HostInfo,
        VMInfo,
        VMSpec,
        VMState,
        VMSummary,
        parse_vm_spec,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'virtkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*_EXPORTS, "__version__"])


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
