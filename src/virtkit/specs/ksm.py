"""KSM (kernel samepage merging): the report, per-VM counters, history and estimates."""

from __future__ import annotations

from pydantic import Field

from virtkit.specs.common import _View


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


class KsmSamples(_View):
    """What ``ksm history`` shows: the host's samples, and those of the VMs asked for."""

    host: list[KsmHistoryPoint] = Field(default_factory=list)
    vms: list[KsmHistoryVMPoint] = Field(default_factory=list)


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
