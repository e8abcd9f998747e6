"""One scrape of one libvirt host: every domain's statistics in one bulk call, virtkit's
metadata from the listing's copy (services/vmmeta.py), per-VM KSM from /proc, and the host's
facts (from /proc and /sys on this machine, from libvirt for a remote host).

A scrape never raises for an outage: a host that cannot be reached is a sample with ``up``
false and whatever the machine itself can still tell, and the next scrape reconnects.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from virtkit.backend.events import LIFECYCLE, METADATA, DomainEvent
from virtkit.backend.guest import Guest, reason_of, state_of
from virtkit.backend.host import DomainStats, Host
from virtkit.backend.procfs import (
    forget_vcpu_threads,
    process_cpu_seconds,
    qemu_pids,
    rss_kb,
    vcpu_seconds,
)
from virtkit.backend.verdicts import KvmVerdict
from virtkit.errors import NotFound, VirtkitError
from virtkit.ksm.sysfs import process_ksm
from virtkit.metrics.hostfacts import PAGE_SIZE, HostFacts, LocalFacts
from virtkit.services.vmmeta import MetadataCache, VMMeta
from virtkit.specs import VMState

log = logging.getLogger(__name__)


@dataclass
class VMSample:
    name: str
    uuid: str
    state: VMState
    state_code: int
    reason: str
    stats: dict[str, Any]  # libvirt's bulk stats names: cpu.time, block.0.rd.bytes, ...
    meta: VMMeta
    bridges: dict[str, str] = field(default_factory=dict)  # NIC target device -> bridge
    ksm_merging_pages: int | None = None
    ksm_profit: int | None = None  # bytes
    running: bool = False  # from the running domains' statistics (else the inactive ones)


@dataclass
class HostSample:
    uri: str
    up: bool
    error: str | None = None
    hostname: str | None = None
    libvirt_version: str | None = None
    hypervisor_version: str | None = None
    kvm: KvmVerdict | None = None
    vms: list[VMSample] = field(default_factory=list)
    facts: HostFacts = field(default_factory=HostFacts)
    duration: float = 0.0  # seconds this scrape took
    # the same as the previous scrape's while the inactive domains' figures are unchanged
    inactive_token: object = None


class HostCollector:
    """Collects one host, scrape after scrape; keeps only what makes the next one cheaper
    (versions per connection, NIC bridges per running domain, the ksmd PID)."""

    def __init__(
        self,
        host: Host,
        meta: MetadataCache,
        kvm_verdict: Callable[[], KvmVerdict],
        *,
        subscribe: Callable[[Callable[[DomainEvent], None]], object] | None = None,
        inactive_max_age: float = 30.0,
    ) -> None:
        self.host = host
        self.meta = meta
        # Inactive domains change only through events (defined, started, ...): their figures
        # are kept between scrapes until one arrives, a reconnect, or ``inactive_max_age``
        # seconds (a --config change of vCPUs or memory sends no event).
        self._subscribe = subscribe
        self._subscribed = False
        self._unsubscribe: object = None
        self._events = 0
        self._inactive: tuple[tuple[int, int], float, list[DomainStats]] | None = None
        self._inactive_vms: tuple[object, list[VMSample]] | None = None
        self.inactive_max_age = inactive_max_age
        self._kvm_verdict = kvm_verdict
        self._kvm: KvmVerdict | None = None
        self._kvm_thread: threading.Thread | None = None
        self._local = LocalFacts() if host.is_local else None
        self._versions: tuple[int, str, str, str] | None = None  # generation, host, lv, qemu
        self._live: dict[str, _LiveFacts] = {}
        self._lock = threading.Lock()  # the exporter and /metrics may scrape at once
        self._background = ThreadPoolExecutor(1, thread_name_prefix="virtkit-scrape")
        self._pool = ThreadPoolExecutor(_WORKERS, thread_name_prefix="virtkit-scrape-vm")
        # running domain UUID -> (domain ID, when, its disks' names, paths and sizes)
        self._blocks: dict[str, tuple[int, float, list[dict[str, Any]]]] = {}

    def collect(self) -> HostSample:
        with self._lock:
            return self._collect()

    def _collect(self) -> HostSample:
        started = time.perf_counter()
        sample = HostSample(uri=self.host.uri, up=False)
        try:
            self._collect_libvirt(sample)
            sample.up = True
        except VirtkitError as exc:
            sample.error = str(exc)
            log.info("scrape of %s: libvirt is not answering: %s", self.host.uri, exc)
        except Exception as exc:  # a bug of ours: still a sample (and a traceback in the log)
            sample.error = f"{type(exc).__name__}: {exc}"
            log.exception("scrape of %s failed", self.host.uri)
        if not sample.up:
            sample.vms = []
            sample.inactive_token = None  # nor the inactive domains' kept families
            if self._versions is not None:  # the host keeps its label while it is down
                sample.hostname = self._versions[1]
        if self._local is not None:
            if sample.facts.cpus is None:  # libvirt failed before they were read
                sample.facts = self._local.read()
        elif sample.up:
            try:
                sample.facts = self._remote_facts()
            except VirtkitError as exc:
                log.info("scrape of %s: no host facts: %s", self.host.uri, exc)
        sample.kvm = self.decide_kvm()
        sample.duration = time.perf_counter() - started
        return sample

    # -- libvirt ----------------------------------------------------------------------------

    def _collect_libvirt(self, sample: HostSample) -> None:
        # The running domains' statistics wait on their QEMUs: asked in a thread of its own,
        # while the inactive domains' (libvirt's alone) come meanwhile.
        running = self.host.list_guests(active=True)
        pending = [self._background.submit(self._running, running)]
        try:
            if self._local is not None:  # this machine's files, read while QEMUs answer
                sample.facts = self._local.read()
            kept = self._inactive_stats({g.uuid for g in running})
            inactive = kept[2]
            sample.inactive_token = kept[:2]
            generation = self.host.connection.generation
            if self._versions is None or self._versions[0] != generation:
                _driver, qemu = self.host.hypervisor()
                self._versions = (
                    generation, self.host.hostname(), self.host.libvirt_version(), qemu,
                )  # fmt: skip
        finally:
            active = [entry for job in pending for entry in job.result()]
        _, sample.hostname, sample.libvirt_version, sample.hypervisor_version = self._versions
        if self._inactive_vms is None or self._inactive_vms[0] != sample.inactive_token:
            known = self._meta(inactive)
            self._inactive_vms = (sample.inactive_token, [self._vm(e, known) for e in inactive])
        sample.vms.extend(self._inactive_vms[1])  # the same objects while nothing changed
        meta = self._meta(active)
        live = self._live_facts(active)
        reporting = [e.guest for e in active if live[e.uuid].stats_period]
        balloons = self.host.balloon_stats(reporting) if reporting else {}
        local = self._local is not None
        pids = qemu_pids(e.uuid for e in active) if local and active else {}
        if local:
            forget_vcpu_threads(set(pids.values()))
        for entry in active:
            vm = self._vm(entry, meta)
            vm.running = True
            st = vm.stats
            facts = live[entry.uuid]
            vm.bridges = facts.bridges
            if facts.max_vcpus:
                st["vcpu.maximum"] = facts.max_vcpus
            st.update(balloons.get(entry.uuid, {}))
            pid = pids.get(entry.uuid)
            if pid is not None:
                self._from_proc(vm, pid)
            sample.vms.append(vm)

    def _on_event(self, event: DomainEvent) -> None:  # libvirt's event thread
        # what may change an inactive domain's figures (job events concern running ones)
        if event.kind in (LIFECYCLE, METADATA):
            self._events += 1

    def _inactive_stats(
        self, running: set[str]
    ) -> tuple[tuple[int, int], float, list[DomainStats]]:
        """The inactive domains' figures: the kept ones while nothing says they changed, else
        read afresh. An event may reach libvirt's event thread after the next scrape asks, so
        two cheap checks back it up: a kept domain now running, and the number of inactive
        domains (a define or undefine whose event is on its way)."""
        if not self._subscribed and self._subscribe is not None:
            self._unsubscribe = self._subscribe(self._on_event)
            self._subscribed = True
        # the count is read before the call: an event during it makes the next scrape read
        key = (self.host.connection.generation, self._events)
        kept = self._inactive
        now = time.monotonic()
        if (
            self._subscribed
            and kept is not None
            and kept[0] == key
            and now - kept[1] < self.inactive_max_age
            and not any(entry.uuid in running for entry in kept[2])
            and self.host.count_inactive() == len(kept[2])
        ):
            return kept
        found = [e for e in self.host.domain_stats() if e.uuid not in running]
        self._inactive = (key, now, found)
        return self._inactive

    def _running(self, guests: list[Guest]) -> list[DomainStats]:
        """Statistics of the running domains: state and interfaces in one call, each disk's
        counters (one query to QEMU per disk, as any exporter pays), CPU time and memory as
        libvirt keeps them; the disks' sizes (a second query to QEMU) at most every
        ``BLOCK_SIZES_MAX_AGE`` seconds and at each start."""
        now = time.monotonic()
        ids = {g.uuid: g.id for g in guests}
        due = [g for g in guests if self._sizes_due(g.uuid, ids[g.uuid], now)]
        stats = self.host.guest_stats(guests, cpu=self._local is None)
        if due:
            for uuid, record in self.host.guest_stats(due, cpu=False, block=True).items():
                self._blocks[uuid] = (ids.get(uuid, -1), now, _block_sizes(record))
        # Each QEMU answers its own queries: asked of several at once, they answer together.
        # Every one is waited for, even after one failed: none outlives this scrape.
        jobs = [self._pool.submit(self._one, g, stats.get(g.uuid)) for g in guests]
        wait(jobs)
        results = [job.result() for job in jobs]  # raises the first failure
        stale = {uuid for _entry, uuid in results if uuid is not None}
        self._blocks = {u: b for u, b in self._blocks.items() if u in ids and u not in stale}
        return [entry for entry, _uuid in results if entry is not None]

    def _one(
        self, guest: Guest, record: dict[str, Any] | None
    ) -> tuple[DomainStats | None, str | None]:
        """One running domain's figures, and its UUID if its disks are to be read again."""
        uuid = guest.uuid
        try:
            info = guest.info()
        except NotFound:
            return None, None  # undefined while we looked
        if info.state == VMState.SHUTOFF:
            return None, None  # stopped while we looked: the next scrape has it as inactive
        record = record if record is not None else {"state.state": 1}
        record["cpu.time"] = info.cpu_time
        record["vcpu.current"] = info.vcpus
        record["balloon.current"] = info.memory // 1024
        record["balloon.maximum"] = info.max_memory // 1024
        fresh = self._block_counters(guest, uuid, record)
        return DomainStats(guest.name, uuid, record, guest), None if fresh else uuid

    def _sizes_due(self, uuid: str, domain_id: int, now: float) -> bool:
        kept = self._blocks.get(uuid)
        return kept is None or kept[0] != domain_id or now - kept[1] >= BLOCK_SIZES_MAX_AGE

    def _block_counters(self, guest: Guest, uuid: str, record: dict[str, Any]) -> bool:
        """Each disk's counters and last known sizes into ``record``, by the block group's
        names (``block.0.rd.bytes``, ``block.0.capacity``, ...); False if a disk is gone."""
        kept = self._blocks.get(uuid)
        if kept is None:
            return True
        fresh = True
        disks = kept[2]
        record["block.count"] = len(disks)
        for index, disk in enumerate(disks):
            prefix = f"block.{index}."
            for key, value in disk.items():
                record[prefix + key] = value
            try:
                counters = guest.block_counters(str(disk["name"]))
            except VirtkitError:  # unplugged, or the domain stopped: sizes again next time
                fresh = False
                continue
            for key, value in zip(_BLOCK_COUNTERS, counters, strict=True):
                record[prefix + key] = value
        return fresh

    @staticmethod
    def _from_proc(vm: VMSample, pid: int) -> None:
        """What this machine's /proc says of a VM's QEMU: CPU by mode and per vCPU, RSS, KSM."""
        st = vm.stats
        cpu = process_cpu_seconds(pid)
        if cpu is not None:
            st["cpu.user"], st["cpu.system"] = int(cpu[0] * 1e9), int(cpu[1] * 1e9)
        for index, seconds in vcpu_seconds(pid, int(st.get("vcpu.current", 0))).items():
            st[f"vcpu.{index}.time"] = int(seconds * 1e9)
        if "balloon.rss" not in st:
            st["balloon.rss"] = rss_kb(pid)
        ksm = process_ksm(pid)
        if "ksm_merging_pages" in ksm:
            vm.ksm_merging_pages = int(ksm["ksm_merging_pages"])
        if "ksm_process_profit" in ksm:
            vm.ksm_profit = int(ksm["ksm_process_profit"])

    def _meta(self, entries: list[DomainStats]) -> dict[str, VMMeta]:
        """virtkit's metadata of these domains; none (with a log line) if virtkit's store
        fails: that is no reason to call libvirt down."""
        try:
            return self.meta.lookup(entries)
        except VirtkitError as exc:
            log.warning("scrape of %s: no tags, owners or templates: %s", self.host.uri, exc)
            return {}

    @staticmethod
    def _vm(entry: DomainStats, meta: dict[str, VMMeta]) -> VMSample:
        record = dict(entry.record)
        code = int(record.get("state.state", 0))
        return VMSample(
            name=entry.name,
            uuid=entry.uuid,
            state=state_of(code),
            state_code=code,
            reason=reason_of(code, int(record.get("state.reason", 0))),
            stats=record,
            meta=meta.get(entry.uuid, VMMeta()),
        )

    def _live_facts(self, active: list[DomainStats]) -> dict[str, _LiveFacts]:
        """What the live definitions say (NIC bridges, the balloon's statistics period): read
        once per run of a domain, and again only when its NIC devices change (a hot-plug
        gives a new tap device)."""
        found = {}
        for entry in active:
            record = entry.record
            count = int(record.get("net.count", 0))
            key = (entry.guest.id, *(str(record.get(f"net.{i}.name", "")) for i in range(count)))
            kept = self._live.get(entry.uuid)
            if kept is None or kept.key != key:
                try:
                    dom = entry.guest.definition()
                except NotFound:
                    kept = _LiveFacts(key)
                else:
                    balloon = dom.memballoon
                    kept = _LiveFacts(
                        key,
                        {
                            nic.target_dev: nic.source_bridge or nic.source_network or ""
                            for nic in dom.interfaces
                            if nic.target_dev
                        },
                        (balloon.stats_period or 0) if balloon is not None else 0,
                        dom.vcpu or 0,
                    )
            found[entry.uuid] = kept
        self._live = found  # stopped domains drop out
        return found

    def _remote_facts(self) -> HostFacts:
        facts = HostFacts()
        node = self.host.node_info()
        facts.cpus = node.cpus
        times = self.host.node_cpu_times()
        names = {"user": "user", "kernel": "system", "idle": "idle", "iowait": "iowait"}
        facts.cpu_seconds = {names[k]: v / 1e9 for k, v in times.items() if k in names}
        facts.memory_total, facts.memory_free = self.host.memory()
        params = self.host.memory_parameters()
        for name in ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile",
                     "full_scans", "run", "pages_to_scan", "sleep_millisecs"):  # fmt: skip
            if f"shm_{name}" in params:
                facts.ksm[name] = params[f"shm_{name}"]
        return facts

    # -- the KVM verdict ----------------------------------------------------------------------

    def decide_kvm(self) -> KvmVerdict | None:
        """The verdict once made; the first call starts making it (a boot probe can take
        seconds) in the background instead of waiting for it."""
        if self._kvm is None and self._kvm_thread is None:  # one thread at a time
            self._kvm_thread = threading.Thread(
                target=self._decide, name="virtkit-kvm-verdict", daemon=True
            )
            self._kvm_thread.start()
        return self._kvm

    def _decide(self) -> None:
        try:
            self._kvm = self._kvm_verdict()
        except Exception as exc:
            log.info("no KVM verdict for %s yet: %s", self.host.uri, exc)
        finally:
            if self._kvm is None:
                self._kvm_thread = None  # the next scrape tries again

    def close(self) -> None:
        """Stop the collector's threads and its event subscription."""
        self._background.shutdown(wait=False, cancel_futures=True)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if callable(self._unsubscribe):
            self._unsubscribe()
        self._unsubscribe = None


@dataclass(frozen=True)
class _LiveFacts:
    key: tuple[object, ...]  # domain ID and NIC devices: when these change, read again
    bridges: dict[str, str] = field(default_factory=dict)
    stats_period: int = 0
    max_vcpus: int = 0


_WORKERS = 4  # running domains asked at once (each waits on its own QEMU)

# Disk sizes (capacity, allocation) of running domains: asked of QEMU at most this often.
BLOCK_SIZES_MAX_AGE = 30.0

# what Guest.block_counters answers, by the block group's names; the timed counters (rd.times,
# wr.times, fl.*) come with the sizes, at most every BLOCK_SIZES_MAX_AGE seconds
_BLOCK_COUNTERS = ("rd.reqs", "rd.bytes", "wr.reqs", "wr.bytes")


_BLOCK_KEPT = ("name", "path", "capacity", "allocation", "physical",
               "rd.times", "wr.times", "fl.reqs", "fl.times")  # fmt: skip


def _block_sizes(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The disks of a block group record: name, path, sizes and timed counters each."""
    disks = []
    for i in range(int(record.get("block.count", 0))):
        prefix = f"block.{i}."
        disk = {k: record[prefix + k] for k in _BLOCK_KEPT if prefix + k in record}
        if "name" in disk:
            disks.append(disk)
    return disks


__all__ = ["PAGE_SIZE", "HostCollector", "HostSample", "VMSample"]
