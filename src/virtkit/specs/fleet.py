"""Several hosts: the registered hosts (``virtkit host add``), what each one is now, and the
VMs of all of them in one listing."""

from __future__ import annotations

from pydantic import Field

from virtkit.specs.common import _Spec, _View
from virtkit.specs.host import KvmStatus
from virtkit.specs.vm import VMSummary


class FleetHost(_View):
    """A host virtkit manages besides (or instead of) the one of ``--connect``."""

    name: str
    uri: str
    added: float = Field(description="When it was added (Unix time).")
    tags: list[str] = Field(default_factory=list, description="For placement rules.")
    maintenance: bool = Field(False, description="In maintenance: nothing is placed there.")
    maintenance_since: float | None = None
    maintenance_reason: str | None = None
    host_uuid: str | None = Field(None, description="libvirt's host UUID, once seen.")
    migration_uri: str | None = Field(
        None, description="How other hosts' libvirtd reach this one for migrations (else uri)."
    )
    reachable: bool | None = Field(None, description="At the last look; None: never looked.")
    state_since: float | None = Field(
        None, description="Since when it has been reachable (or unreachable)."
    )
    last_seen: float | None = Field(None, description="The last time it answered.")
    last_error: str | None = None


class HostStatus(_View):
    """One host now: reachable or not, and if so what it is and has."""

    host: FleetHost
    reachable: bool
    error: str | None = Field(None, description="Why it is not reachable.")
    elapsed: float = Field(description="Seconds the look took (or the timeout).")
    hostname: str | None = None
    libvirt_version: str | None = None
    hypervisor_version: str | None = None
    cpu_model: str | None = None
    cpus: int | None = None
    memory_total: int | None = None
    memory_free: int | None = None
    vms_running: int | None = None
    vms_total: int | None = None
    vcpus_running: int | None = Field(None, description="vCPUs of the running VMs.")
    ksm_saved: int | None = Field(None, description="Bytes KSM saves there now.")
    kvm: KvmStatus | None = Field(
        None, description="The KVM verdict, if known (host add and host show probe)."
    )


class HostVMs(_View):
    """One host's VMs in a listing across hosts."""

    host: str
    uri: str
    reachable: bool
    error: str | None = None
    elapsed: float
    vms: list[VMSummary] = Field(default_factory=list)


class PlacementCandidate(_View):
    """One host as placement saw it: eligible or not and why, and its score."""

    host: str
    eligible: bool
    reasons: list[str] = Field(description="Why not; for an eligible host, what counted.")
    memory_free: int | None = None
    memory_free_after: int | None = Field(None, description="Free memory once the VM runs.")
    vcpu_load_after: float | None = Field(
        None, description="vCPUs of running VMs per host CPU once the VM runs."
    )
    score: float | None = Field(
        None, description="Higher is better: free memory share after, less a quarter of the "
        "vCPU load after."
    )  # fmt: skip


class Placement(_View):
    """Where a new VM goes, and why (``vm create`` without ``--host``; ``--dry-run``)."""

    host: str | None = Field(description="The chosen host; None if no host can take the VM.")
    uri: str | None = None
    memory: int
    vcpus: int
    tags: list[str] = Field(default_factory=list)
    summary: str
    candidates: list[PlacementCandidate]


class MigrationCheck(_View):
    """One pre-flight check of a migration."""

    name: str = Field(description="state, name, memory, hypervisor, machine, cpu, network, "
                      "devices or storage")  # fmt: skip
    ok: bool
    detail: str


class DiskMove(_View):
    """What a migration does with one disk."""

    target: str = Field(description="The disk's device name (vda).")
    source: str
    dest: str = Field(description="Its path on the target.")
    action: str = Field(
        description="shared (there already), copy (by the live migration) or upload (virtkit "
        "copies it first: read-only media, offline moves)"
    )
    pool: str | None = None
    size: int = 0
    capacity: int = 0
    format: str = "raw"


class MigrationPlan(_View):
    """A migration before it runs: every check, what happens to each disk, and for a live one
    the guest's dirty rate and the predicted course."""

    vm: str
    uuid: str
    source: str
    target: str
    live: bool
    mode: str = Field(description="offline, precopy, auto-converge or postcopy")
    memory: int
    disks: list[DiskMove]
    checks: list[MigrationCheck]
    ok: bool
    dirty_rate: int | None = Field(None, description="Bytes per second, measured just now.")
    link: int | None = Field(None, description="Bytes per second assumed for the link.")
    converges: bool | None = None
    predicted_seconds: float | None = None
    predicted_downtime_ms: float | None = None
    passes: int | None = None


class MigrationResult(_View):
    vm: str
    source: str
    target: str
    live: bool
    mode: str
    seconds: float = Field(description="The whole migration, as virtkit timed it.")
    downtime_ms: int | None = Field(None, description="The guest's pause, as QEMU measured it.")
    iterations: int | None = None
    data_total: int | None = None
    switched_to_postcopy: bool = False
    state: str
    plan: MigrationPlan


class EvacuationItem(_View):
    vm: str
    target: str | None = Field(description="Where placement sent it; None: nowhere fits.")
    ok: bool
    detail: str
    seconds: float | None = None


class EvacuationReport(_View):
    """``host evacuate``: every VM of the host, where it went or why it did not."""

    host: str
    moved: int
    failed: int
    items: list[EvacuationItem]


class MigrateOptions(_Spec):
    """How to migrate (``vm migrate``, ``host evacuate``)."""

    offline: bool = Field(False, description="Move a shut-off VM (its definition, and storage).")
    copy_storage: bool = Field(False, description="Copy disks the target does not share.")
    auto: bool = Field(False, description="Pre-copy, auto-converge or post-copy, as predicted.")
    max_downtime_ms: int | None = Field(None, ge=1, description="The longest pause allowed.")
    bandwidth_mib: int | None = Field(None, ge=1, description="MiB/s the migration may use.")
    link_mib: float | None = Field(None, gt=0, description="MiB/s of the link (prediction).")
    persist: bool = Field(True, description="Define the VM on the target.")
    undefine_source: bool = Field(True, description="Undefine it on the source.")
    unsafe: bool = Field(False, description="Though libvirt cannot tell storage is shared.")
    timeout: float | None = Field(None, gt=0, description="Give up after this many seconds.")
    dirty_rate_seconds: int = Field(1, ge=1, le=60, description="Dirty-rate sampling time.")
