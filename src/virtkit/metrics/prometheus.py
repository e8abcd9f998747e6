"""The Prometheus exposition of what the collectors gather (prometheus-client's custom
collector API: families built afresh on each scrape, so no series outlives its VM).

Where the Go exporter (prometheus-libvirt-exporter, Debian's) has a metric, the name and
labels are its own (``libvirt_domain_info_*``, ``libvirt_domain_block_stats_*``, ...), so
dashboards made for it keep working; everything else is ``virtkit_*``. Every series carries
``host``. docs/monitoring.md lists them all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from virtkit._version import __version__
from virtkit.metrics.collector import HostCollector, HostSample, VMSample
from virtkit.metrics.hostfacts import PAGE_SIZE
from virtkit.specs import VMState

log = logging.getLogger(__name__)

_VM = ["host", "domain", "uuid"]
_DISK = [*_VM, "source_file", "target_device"]
_NIC = [*_VM, "source_bridge", "target_device"]

# (libvirt stats key under block.N., family name, help, scale)
_BLOCK_COUNTERS = (
    ("rd.bytes", "libvirt_domain_block_stats_read_bytes", "Bytes read from a block device.", 1),
    ("rd.reqs", "libvirt_domain_block_stats_read_requests", "Read requests to a block device.", 1),
    ("wr.bytes", "libvirt_domain_block_stats_write_bytes", "Bytes written to a block device.", 1),
    ("wr.reqs", "libvirt_domain_block_stats_write_requests", "Write requests to a block device.",
     1),
    ("rd.times", "virtkit_domain_block_read_seconds", "Time spent reading a block device.", 1e-9),
    ("wr.times", "virtkit_domain_block_write_seconds", "Time spent writing a block device.", 1e-9),
    ("fl.reqs", "virtkit_domain_block_flush_requests", "Flush requests to a block device.", 1),
    ("fl.times", "virtkit_domain_block_flush_seconds", "Time spent flushing a block device.",
     1e-9),
)  # fmt: skip
_BLOCK_GAUGES = (
    ("capacity", "virtkit_domain_block_capacity_bytes", "Virtual size of a disk."),
    ("allocation", "virtkit_domain_block_allocation_bytes", "Bytes of a disk's image in use."),
    ("physical", "virtkit_domain_block_physical_bytes", "Size of a disk's image on the host."),
)
_NIC_COUNTERS = tuple(
    (f"{side}.{key}", f"libvirt_domain_interface_stats_{name}_{what}",
     f"{what.capitalize()} {name.replace('receive', 'received').replace('transmit', 'sent')}"
     " on a network interface.")
    for side, name in (("rx", "receive"), ("tx", "transmit"))
    for key, what in (("bytes", "bytes"), ("pkts", "packets"), ("errs", "errors"),
                      ("drop", "drops"))
)  # fmt: skip
_KSM_GAUGES = (
    ("run", "virtkit_host_ksm_run", "KSM mode: 0 stopped, 1 merging, 2 unmerging."),
    ("pages_shared", "virtkit_host_ksm_pages_shared", "KSM pages in use (shared)."),
    ("pages_sharing", "virtkit_host_ksm_pages_sharing", "Pages merged into the shared ones."),
    ("pages_unshared", "virtkit_host_ksm_pages_unshared", "Pages KSM checks but cannot merge."),
    ("pages_volatile", "virtkit_host_ksm_pages_volatile", "Pages changing too fast to merge."),
    ("pages_to_scan", "virtkit_host_ksm_pages_to_scan", "Pages ksmd scans per wake-up."),
    ("sleep_millisecs", "virtkit_host_ksm_sleep_seconds", "ksmd's sleep between scans."),
)


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _number(value: float) -> str:
    if isinstance(value, int) or (value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    return repr(float(value))  # inf, nan and the rest as Prometheus parses them


class _Family:
    """One metric family of a scrape: its rows as label values and a value."""

    __slots__ = ("_lines", "doc", "kind", "labels", "name", "parts", "rows")

    def __init__(self, name: str, kind: str, doc: str, labels: list[str]) -> None:
        self.name, self.kind, self.doc, self.labels = name, kind, doc, tuple(labels)
        self.rows: list[tuple[tuple[str, ...], float]] = []
        self.parts: list[_Family] = []  # kept families of the same name (inactive domains)
        self._lines: list[str] | None = None

    def add_metric(self, values: list[str], value: float) -> None:
        self.rows.append((tuple(values), value))

    def __bool__(self) -> bool:
        return bool(self.rows) or any(self.parts)

    @property
    def sample_name(self) -> str:
        return self.name + "_total" if self.kind == "counter" else self.name

    def lines(self) -> list[str]:
        """The rows as text, made once (a kept family is rendered once for many scrapes)."""
        if self._lines is None:
            sample, names = self.sample_name, self.labels
            lines = []
            for values, value in self.rows:
                if names:
                    pairs = ",".join(f'{k}="{_escape(v)}"' for k, v in zip(names, values))  # noqa: B905
                    lines.append(f"{sample}{{{pairs}}} {_number(value)}")
                else:
                    lines.append(f"{sample} {_number(value)}")
            self._lines = lines
        return self._lines

    def text(self) -> str:
        """The text exposition (format 0.0.4), as Prometheus reads it."""
        sample = self.sample_name
        out = [f"# HELP {sample} {self.doc}", f"# TYPE {sample} {self.kind}", *self.lines()]
        for part in self.parts:
            out.extend(part.lines())
        return "\n".join(out) + "\n"

    def metric(self) -> Metric:
        """The same family as prometheus-client's object (for its registries)."""
        cls = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        family = cls(self.name, self.doc, labels=list(self.labels))
        for source in (self, *self.parts):
            for values, value in source.rows:
                family.add_metric(list(values), value)
        return family


class _Families:
    """The families of one scrape, made on first use (a family without rows is dropped)."""

    def __init__(self) -> None:
        self._made: dict[str, _Family] = {}

    def _family(self, name: str, kind: str, doc: str, labels: list[str]) -> _Family:
        family = self._made.get(name)
        if family is None:
            family = self._made[name] = _Family(name, kind, doc, labels)
        return family

    def gauge(self, name: str, doc: str, labels: list[str]) -> _Family:
        return self._family(name, "gauge", doc, labels)

    def counter(self, name: str, doc: str, labels: list[str]) -> _Family:
        return self._family(name, "counter", doc, labels)

    def merge(self, kept: Iterable[_Family]) -> None:
        """Add families kept from an earlier scrape (their rows, rendered once)."""
        for family in kept:
            self._family(family.name, family.kind, family.doc, list(family.labels)).parts.append(
                family
            )

    def __iter__(self) -> Iterator[_Family]:
        return (f for f in self._made.values() if f)


class VirtkitCollector(Collector):
    """Scrapes every host, one after another, on each ``render()`` (the exporter's and
    /metrics' answer) or ``collect()`` (prometheus-client's collector API, for a registry).

    The exporter writes the text itself instead of through prometheus-client's
    ``generate_latest``: that spends about 14 us per series here (label validation and
    escaping per sample), most of a scrape for 200 VMs; ``render()`` gives the same text
    (a unit test parses both) at a fraction of it.
    """

    def __init__(
        self,
        hosts: list[HostCollector],
        tasks: Callable[[], dict[str, int]] | None = None,
    ) -> None:
        self.hosts = hosts
        self.tasks = tasks
        self.last_duration: float | None = None
        self._lock = threading.Lock()  # two scrapes at once would only double the work
        self._inactive: dict[str, tuple[object, list[_Family]]] = {}  # by host URI

    def collect(self) -> Iterable[Metric]:
        return [family.metric() for family in self._scrape()]

    def render(self) -> bytes:
        return "".join(family.text() for family in self._scrape()).encode()

    def _scrape(self) -> list[_Family]:
        with self._lock:
            started = time.perf_counter()
            samples = [h.collect() for h in self.hosts]
            families = _Families()
            names = _host_labels(samples)
            for sample, host in zip(samples, names, strict=True):
                _host(families, sample, host)
                families.merge(self._inactive_families(sample, host))
                for vm in sample.vms:
                    if vm.running:
                        _vm(families, vm, host)
            self._virtkit(families)
            elapsed = time.perf_counter() - started
            families.gauge(
                "virtkit_scrape_duration_seconds",
                "How long the previous scrape took (all hosts).",
                [],
            ).add_metric([], self.last_duration if self.last_duration is not None else elapsed)
            self.last_duration = elapsed
            return list(families)

    def _inactive_families(self, sample: HostSample, host: str) -> list[_Family]:
        """The inactive domains' families: made again only when their figures changed (the
        collector's token says), else the last ones, already rendered."""
        token = (host, sample.inactive_token)
        kept = self._inactive.get(sample.uri)
        if kept is None or kept[0] != token or sample.inactive_token is None:
            part = _Families()
            for vm in sample.vms:
                if not vm.running:
                    _vm(part, vm, host)
            kept = self._inactive[sample.uri] = (token, list(part))
        return kept[1]

    def _virtkit(self, families: _Families) -> None:
        families.gauge("virtkit_build_info", "virtkit's version.", ["version"]).add_metric(
            [__version__], 1
        )
        if self.tasks is None:
            return
        try:
            counts = self.tasks()
        except Exception:  # the store is virtkit's own file: a scrape still answers
            log.exception("cannot count tasks")
            return
        family = families.gauge("virtkit_tasks", "virtkit's kept tasks by state.", ["state"])
        for state in ("queued", "running", "succeeded", "failed"):
            family.add_metric([state], counts.get(state, 0))


def _host_labels(samples: list[HostSample]) -> list[str]:
    """Each host's hostname, or its URI where two hosts report the same name."""
    names = [s.hostname or s.uri for s in samples]
    return [n if names.count(n) == 1 else s.uri for n, s in zip(names, samples, strict=True)]


def _host(f: _Families, s: HostSample, host: str) -> None:
    h = [host]
    f.gauge("libvirt_up", "Whether libvirt answered the scrape (1) or not (0).", ["host"]
            ).add_metric(h, 1 if s.up else 0)  # fmt: skip
    f.gauge(
        "virtkit_host_scrape_duration_seconds", "How long scraping this host took.", ["host"]
    ).add_metric(h, s.duration)
    if s.up:
        active = sum(1 for vm in s.vms if vm.running)  # the Go exporter's count
        f.gauge("libvirt_domains_number", "Running domains.", ["host"]).add_metric(h, active)
        by_state = f.gauge("virtkit_host_domains", "Domains by state.", ["host", "state"])
        counts = Counter(str(vm.state) for vm in s.vms)
        for state in VMState:  # every state, 0 too: a series does not vanish when none is
            by_state.add_metric([host, str(state)], counts.get(str(state), 0))
        f.gauge(
            "virtkit_host_info",
            "The host's libvirt and QEMU versions.",
            ["host", "uri", "libvirt_version", "qemu_version"],
        ).add_metric([host, s.uri, s.libvirt_version or "", s.hypervisor_version or ""], 1)
    kvm = s.kvm
    f.gauge(
        "virtkit_host_kvm_usable",
        "Whether KVM works on the host (1) or guests run under TCG (0); verdict says why.",
        ["host", "verdict"],
    ).add_metric([host, kvm.kind if kvm else "unknown"], 1 if kvm and kvm.usable else 0)
    facts = s.facts
    if facts.cpus is not None:
        f.gauge("virtkit_host_cpus", "Logical CPUs of the host.", ["host"]).add_metric(
            h, facts.cpus
        )
    cpu = f.counter("virtkit_host_cpu_seconds", "Host CPU time by mode.", ["host", "mode"])
    for mode, seconds in facts.cpu_seconds.items():
        cpu.add_metric([host, mode], seconds)
    for value, name, doc in (
        (facts.memory_total, "virtkit_host_memory_total_bytes", "Host memory."),
        (facts.memory_free, "virtkit_host_memory_free_bytes", "Host memory free."),
        (facts.memory_available, "virtkit_host_memory_available_bytes",
         "Host memory available to new work without swapping (MemAvailable)."),
    ):  # fmt: skip
        if value is not None:
            f.gauge(name, doc, ["host"]).add_metric(h, value)
    if facts.hugepages:
        total = f.gauge("virtkit_host_hugepages", "Hugepages reserved, by size.", ["host", "size"])
        free = f.gauge("virtkit_host_hugepages_free", "Hugepages free, by size.", ["host", "size"])
        for kib, (count, available) in sorted(facts.hugepages.items()):
            total.add_metric([host, f"{kib}kB"], count)
            free.add_metric([host, f"{kib}kB"], available)
    if facts.thp_mode:
        f.gauge(
            "virtkit_host_thp_mode", "Transparent hugepages mode (always, madvise, never).",
            ["host", "mode"],
        ).add_metric([host, facts.thp_mode], 1)  # fmt: skip
    _ksm(f, facts.ksm, facts.ksmd_cpu_seconds, host)


def _ksm(f: _Families, ksm: dict[str, int], ksmd: float | None, host: str) -> None:
    h = [host]
    for key, name, doc in _KSM_GAUGES:
        if key in ksm:
            value: float = ksm[key] / 1000 if key == "sleep_millisecs" else ksm[key]
            f.gauge(name, doc, ["host"]).add_metric(h, value)
    if "full_scans" in ksm:
        f.counter("virtkit_host_ksm_full_scans", "Full KSM scans done.", ["host"]).add_metric(
            h, ksm["full_scans"]
        )
    if "pages_sharing" in ksm:
        f.gauge(
            "virtkit_host_ksm_saved_bytes",
            "Memory KSM saves: merged pages times the page size.",
            ["host"],
        ).add_metric(h, ksm["pages_sharing"] * PAGE_SIZE)
    if "general_profit" in ksm:
        f.gauge(
            "virtkit_host_ksm_profit_bytes",
            "KSM's net saving: merged memory less its own metadata (general_profit).",
            ["host"],
        ).add_metric(h, ksm["general_profit"])
    if ksmd is not None:
        f.counter("virtkit_host_ksmd_cpu_seconds", "CPU time of the ksmd thread.", ["host"]
                  ).add_metric(h, ksmd)  # fmt: skip


def _vm(f: _Families, vm: VMSample, host: str) -> None:
    """Every VM: its state, virtkit's facts, its size; a running one all its figures."""
    st: dict[str, Any] = vm.stats
    short = [host, vm.name]
    f.gauge(
        "virtkit_domain_state",
        "The domain's state and why (paused/ioerror, shutoff/crashed, ...): 1 per domain.",
        ["host", "domain", "state", "reason"],
    ).add_metric([*short, str(vm.state), vm.reason], 1)
    meta = vm.meta
    f.gauge(
        "virtkit_domain_info",
        "virtkit's facts of a domain: tags (comma-separated), template, owner.",
        ["host", "domain", "uuid", "tags", "template", "owner", "virtkit"],
    ).add_metric(
        [*short, vm.uuid, ",".join(meta.tags), meta.template or "", meta.owner or "",
         "true" if meta.virtkit else "false"],
        1,
    )  # fmt: skip
    f.gauge("virtkit_domain_vcpus", "vCPUs of the domain (now, or at its next start).",
            ["host", "domain"]).add_metric(short, st.get("vcpu.current", 0))  # fmt: skip
    f.gauge("virtkit_domain_vcpus_maximum", "vCPUs the domain can be raised to.",
            ["host", "domain"]).add_metric(short, st.get("vcpu.maximum", 0))  # fmt: skip
    f.gauge("virtkit_domain_memory_maximum_bytes", "Maximum memory of the domain.",
            ["host", "domain"]).add_metric(short, st.get("balloon.maximum", 0) * 1024)  # fmt: skip
    f.gauge("virtkit_domain_memory_current_bytes", "Current memory of the domain (balloon).",
            ["host", "domain"]).add_metric(short, st.get("balloon.current", 0) * 1024)  # fmt: skip
    if vm.running:
        _active(f, vm, host, [host, vm.name, vm.uuid])
    else:
        _disks(f, vm, [host, vm.name, vm.uuid], counters=False)


def _active(f: _Families, vm: VMSample, host: str, labels: list[str]) -> None:
    """A running (or paused) VM: the Go exporter's series, and virtkit's."""
    st = vm.stats
    f.gauge("libvirt_domain_state_code", "State of the domain (libvirt's number).", _VM
            ).add_metric(labels, vm.state_code)  # fmt: skip
    if "cpu.time" in st:
        f.counter(
            "libvirt_domain_info_cpu_time_seconds", "CPU time used by the domain.", _VM
        ).add_metric(labels, st["cpu.time"] / 1e9)
    f.gauge("libvirt_domain_info_maximum_memory_bytes", "Maximum memory of the domain.", _VM
            ).add_metric(labels, st.get("balloon.maximum", 0) * 1024)  # fmt: skip
    f.gauge("libvirt_domain_info_memory_usage_bytes", "Current memory of the domain (balloon).",
            _VM).add_metric(labels, st.get("balloon.current", 0) * 1024)  # fmt: skip
    f.gauge("libvirt_domain_info_virtual_cpus", "Virtual CPUs of the domain.", _VM
            ).add_metric(labels, st.get("vcpu.current", 0))  # fmt: skip
    cpu = f.counter("virtkit_domain_cpu_seconds", "Domain CPU time by mode.", [*_VM, "mode"])
    for mode in ("user", "system"):
        if f"cpu.{mode}" in st:
            cpu.add_metric([*labels, mode], st[f"cpu.{mode}"] / 1e9)
    vcpu = f.counter("virtkit_domain_vcpu_seconds", "CPU time per vCPU.", [*_VM, "vcpu"])
    for i in range(int(st.get("vcpu.maximum", 0))):
        if f"vcpu.{i}.time" in st:
            vcpu.add_metric([*labels, str(i)], st[f"vcpu.{i}.time"] / 1e9)
    if "balloon.rss" in st:
        f.gauge("virtkit_domain_memory_rss_bytes", "Resident memory of the QEMU process.", _VM
                ).add_metric(labels, st["balloon.rss"] * 1024)  # fmt: skip
    if "balloon.available" in st:
        f.gauge(
            "virtkit_domain_memory_available_bytes", "Memory the guest sees (balloon stats).", _VM
        ).add_metric(labels, st["balloon.available"] * 1024)
        if "balloon.unused" in st:
            f.gauge(
                "virtkit_domain_memory_used_bytes",
                "Memory the guest uses, as its balloon driver reports.",
                _VM,
            ).add_metric(labels, (st["balloon.available"] - st["balloon.unused"]) * 1024)
    if "balloon.usable" in st:
        f.gauge(
            "virtkit_domain_memory_usable_bytes",
            "Memory the guest could use without swapping (balloon stats).",
            _VM,
        ).add_metric(labels, st["balloon.usable"] * 1024)
    if vm.ksm_merging_pages is not None:
        f.gauge("virtkit_domain_ksm_merging_pages", "The VM's pages KSM merged.", _VM
                ).add_metric(labels, vm.ksm_merging_pages)  # fmt: skip
    if vm.ksm_profit is not None:
        f.gauge(
            "virtkit_domain_ksm_profit_bytes", "Memory KSM saves in this VM (its profit).", _VM
        ).add_metric(labels, vm.ksm_profit)
    _disks(f, vm, labels, counters=True)
    for i in range(int(st.get("net.count", 0))):
        dev = str(st.get(f"net.{i}.name", ""))
        nic = [*labels, vm.bridges.get(dev, ""), dev]
        for key, name, doc in _NIC_COUNTERS:
            value = st.get(f"net.{i}.{key}")
            if value is not None:
                f.counter(name, doc, _NIC).add_metric(nic, value)


def _disks(f: _Families, vm: VMSample, labels: list[str], *, counters: bool) -> None:
    st = vm.stats
    for i in range(int(st.get("block.count", 0))):
        prefix = f"block.{i}."
        disk = [*labels, str(st.get(prefix + "path", "")), str(st.get(prefix + "name", ""))]
        if counters:
            for key, name, doc, scale in _BLOCK_COUNTERS:
                value = st.get(prefix + key)
                if value is not None:
                    f.counter(name, doc, _DISK).add_metric(disk, value * scale)
        for key, name, doc in _BLOCK_GAUGES:
            value = st.get(prefix + key)
            if value is not None:
                f.gauge(name, doc, _DISK).add_metric(disk, value)


def registry(collector: VirtkitCollector) -> CollectorRegistry:
    """A registry holding only virtkit's collector (no process or platform collectors: the
    service's /metrics describes VMs, not the Python process)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return reg
