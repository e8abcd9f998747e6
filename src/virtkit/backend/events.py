"""Domain events as virtkit hands them out: :class:`DomainEvent`, with libvirt's numbers named.

libvirt calls back with numbers (a lifecycle event and its detail, a job's operation, a block
job's type and status, an I/O error's action); every name comes from libvirt's own constant
names (``VIR_DOMAIN_EVENT_STOPPED_DESTROYED`` -> ``destroyed``), so a newer libvirt's additions
are named too, and an unknown number is shown as itself. The ``from_*`` functions turn one
callback's arguments into an event; :class:`~virtkit.backend.connection.Connection` registers
them and delivers the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import libvirt

# Kinds of event, what ``DomainEvent.kind`` may be.
LIFECYCLE = "lifecycle"  # defined, started, suspended, stopped, ... and rebooted
METADATA = "metadata"  # metadata-changed
JOB = "job"  # a job completed (save, dump, migration, backup, ...): its statistics
BLOCK_JOB = "block-job"  # a block job (copy, commit, pull, backup) completed/failed/...
MIGRATION = "migration"  # a migration started another iteration of copying memory
IO_ERROR = "io-error"  # a disk hit an I/O error (and the guest was paused, or told)
CONNECTION = "connection"  # not libvirt's: a host's connection was lost, or is back
KINDS = (LIFECYCLE, METADATA, JOB, BLOCK_JOB, MIGRATION, IO_ERROR, CONNECTION)


def _named(prefix: str, exclude: tuple[str, ...] = ()) -> dict[int, str]:
    """libvirt's constants ``<prefix><NAME>`` as {value: "name"}; ``*_LAST`` left out."""
    out: dict[int, str] = {}
    for attr in dir(libvirt):
        if not attr.startswith(prefix) or attr.endswith("_LAST"):
            continue
        rest = attr[len(prefix) :]
        if any(rest.startswith(e) for e in exclude):
            continue
        value = getattr(libvirt, attr)
        if isinstance(value, int):
            out.setdefault(value, rest.lower().replace("_", "-"))
    return out


EVENT_NAMES = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: "defined",
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: "undefined",
    libvirt.VIR_DOMAIN_EVENT_STARTED: "started",
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: "suspended",
    libvirt.VIR_DOMAIN_EVENT_RESUMED: "resumed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED: "stopped",
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: "pmsuspended",
    libvirt.VIR_DOMAIN_EVENT_CRASHED: "crashed",
}

# A lifecycle event's details: stopped -> {0: "shutdown", 1: "destroyed", ...}.
DETAIL_NAMES = {name: _named(f"VIR_DOMAIN_EVENT_{name.upper()}_") for name in EVENT_NAMES.values()}
JOB_OPERATIONS = _named("VIR_DOMAIN_JOB_OPERATION_")
BLOCK_JOB_TYPES = _named("VIR_DOMAIN_BLOCK_JOB_TYPE_")
BLOCK_JOB_STATUSES = {
    libvirt.VIR_DOMAIN_BLOCK_JOB_COMPLETED: "completed",
    libvirt.VIR_DOMAIN_BLOCK_JOB_FAILED: "failed",
    libvirt.VIR_DOMAIN_BLOCK_JOB_CANCELED: "canceled",
    libvirt.VIR_DOMAIN_BLOCK_JOB_READY: "ready",
}
IO_ERROR_ACTIONS = _named("VIR_DOMAIN_EVENT_IO_ERROR_")  # none, pause, report
METADATA_TYPES = _named("VIR_DOMAIN_METADATA_")  # description, title, element


def detail_name(event: str, detail: int) -> str:
    """A lifecycle event's detail by name (``stopped``, 1 -> ``destroyed``); else the number."""
    return DETAIL_NAMES.get(event, {}).get(detail, str(detail))


@dataclass(frozen=True)
class DomainEvent:
    """One event of one domain on one host.

    ``event`` is what happened: a lifecycle event (``defined``, ``started``, ``suspended``,
    ``stopped``, ..., ``rebooted``), ``metadata-changed``, or for jobs ``completed`` (``job``),
    the block job's status (``completed``, ``failed``, ``canceled``, ``ready``), ``iteration``
    (``migration``), ``io-error``. ``detail`` is libvirt's number, ``detail_name`` its name
    (``destroyed``, ``booted``, ``ioerror``; the job's operation, the block job's type, the
    I/O error's action). ``data`` holds the rest (a job's statistics, the disk, the reason).
    ``kind`` and ``detail_name`` are derived when left empty, so the first four fields alone
    still make a whole event.
    """

    domain: str
    uuid: str
    event: str
    detail: int
    kind: str = ""
    host: str = ""
    data: dict[str, Any] = field(default_factory=dict, hash=False)
    detail_name: str = ""

    def __post_init__(self) -> None:
        if not self.kind:
            kind = METADATA if self.event == "metadata-changed" else LIFECYCLE
            object.__setattr__(self, "kind", kind)
        if not self.detail_name and self.kind == LIFECYCLE:
            object.__setattr__(self, "detail_name", detail_name(self.event, self.detail))

    def as_dict(self) -> dict[str, Any]:
        """The event as JSON: host, vm, uuid, kind, event, detail (its name), data."""
        return {
            "host": self.host,
            "vm": self.domain or None,
            "uuid": self.uuid or None,
            "kind": self.kind,
            "event": self.event,
            "detail": self.detail_name or str(self.detail),
            "data": self.data,
        }


def _ident(dom: Any) -> tuple[str, str]:
    return str(dom.name()), str(dom.UUIDString())


def from_lifecycle(dom: Any, event: int, detail: int, host: str) -> DomainEvent:
    name = EVENT_NAMES.get(event, str(event))
    return DomainEvent(*_ident(dom), name, int(detail), LIFECYCLE, host)


def from_reboot(dom: Any, host: str) -> DomainEvent:
    return DomainEvent(*_ident(dom), "rebooted", 0, LIFECYCLE, host, detail_name="reboot")


def from_metadata(dom: Any, mtype: int, nsuri: Any, host: str) -> DomainEvent:
    data: dict[str, Any] = {"type": METADATA_TYPES.get(mtype, str(mtype))}
    if nsuri:
        data["namespace"] = str(nsuri)
    return DomainEvent(
        *_ident(dom), "metadata-changed", int(mtype), METADATA, host, data, data["type"]
    )


def from_job_completed(dom: Any, params: dict[str, Any], host: str) -> DomainEvent:
    """A job completed; ``params`` are its statistics as ``virDomainGetJobStats`` names them
    (``time_elapsed`` in ms, ``data_processed``/``data_total``/``disk_*``/``memory_*`` in bytes,
    ``success``); ``operation`` is given by name."""
    stats = {str(k): _plain(v) for k, v in (params or {}).items()}
    operation = int(stats.get("operation", libvirt.VIR_DOMAIN_JOB_OPERATION_UNKNOWN))
    stats["operation"] = JOB_OPERATIONS.get(operation, str(operation))
    return DomainEvent(*_ident(dom), "completed", operation, JOB, host, stats, stats["operation"])


def from_block_job(dom: Any, disk: str, jtype: int, status: int, host: str) -> DomainEvent:
    type_name = BLOCK_JOB_TYPES.get(jtype, str(jtype))
    status_name = BLOCK_JOB_STATUSES.get(status, str(status))
    data = {"disk": str(disk), "type": type_name, "status": status_name}
    return DomainEvent(*_ident(dom), status_name, int(jtype), BLOCK_JOB, host, data, type_name)


def from_migration_iteration(dom: Any, iteration: int, host: str) -> DomainEvent:
    data = {"iteration": int(iteration)}
    return DomainEvent(*_ident(dom), "iteration", int(iteration), MIGRATION, host, data, "")


def from_io_error(
    dom: Any, path: str, alias: str, action: int, reason: str, host: str
) -> DomainEvent:
    """A disk's I/O error; ``action`` is what libvirt did (``pause``: the guest is paused,
    ``report``: the guest was told, ``none``), ``reason`` QEMU's (``enospc`` or empty)."""
    action_name = IO_ERROR_ACTIONS.get(action, str(action))
    data = {"path": str(path or ""), "device": str(alias or ""), "action": action_name}
    data["reason"] = str(reason or "")
    return DomainEvent(*_ident(dom), "io-error", int(action), IO_ERROR, host, data, action_name)


def connection_event(host: str, event: str, reason: str = "") -> DomainEvent:
    """Not libvirt's: a host's connection was ``lost``, is back (``reconnected``), or cannot
    be reached (``unreachable``); ``reason`` says why."""
    return DomainEvent("", "", event, 0, CONNECTION, host, {}, reason or event)


def _plain(value: Any) -> Any:
    """A typed parameter as JSON can hold it."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)
