"""Host facts a scrape reads on the machine itself: CPU time, memory, hugepages, THP and KSM
from /proc and /sys, each a small file read (a remote host's come from libvirt instead)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from virtkit.backend.procfs import meminfo
from virtkit.ksm.sysfs import KsmSysfs

_PROC = Path("/proc")
_SYS_MM = Path("/sys/kernel/mm")
_TICK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
# /proc/stat's cpu line, in its order
_KSM_FILES = (
    "run", "pages_shared", "pages_sharing", "pages_unshared", "pages_volatile", "full_scans",
    "general_profit", "pages_to_scan", "sleep_millisecs",
)  # fmt: skip
_CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


@dataclass
class HostFacts:
    """What a host says of itself; ``None``/empty where it cannot tell."""

    cpus: int | None = None
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # mode -> seconds since boot
    memory_total: int | None = None  # bytes
    memory_free: int | None = None
    memory_available: int | None = None
    hugepages: dict[int, tuple[int, int]] = field(default_factory=dict)  # KiB -> (total, free)
    thp_mode: str | None = None  # always | madvise | never
    ksm: dict[str, int] = field(default_factory=dict)  # sysfs names: pages_sharing, run, ...
    ksmd_cpu_seconds: float | None = None


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _selected(text: str) -> str:
    """``always [madvise] never`` -> ``madvise``."""
    return text[text.index("[") + 1 : text.index("]")] if "[" in text else text.strip()


class LocalFacts:
    """Reads this machine's facts; keeps the ksmd thread's PID between scrapes."""

    def __init__(self) -> None:
        self._ksm = KsmSysfs()
        self._ksmd_pid: int | None = None

    def read(self) -> HostFacts:
        facts = HostFacts(cpus=os.cpu_count())
        facts.cpu_seconds = self._cpu()
        mem = meminfo()
        facts.memory_total = mem.get("MemTotal", 0) * 1024 or None
        facts.memory_free = mem.get("MemFree", 0) * 1024 if "MemFree" in mem else None
        if "MemAvailable" in mem:
            facts.memory_available = mem["MemAvailable"] * 1024
        facts.hugepages = self._hugepages()
        with contextlib.suppress(OSError):
            thp = _read(f"{_SYS_MM}/transparent_hugepage/enabled")
            facts.thp_mode = _selected(thp)
        facts.ksm = self._ksm_values()
        facts.ksmd_cpu_seconds = self._ksmd_seconds()
        return facts

    def _cpu(self) -> dict[str, float]:
        with open(f"{_PROC}/stat") as f:
            fields = f.readline().split()
        if not fields or fields[0] != "cpu":
            return {}
        return {mode: int(v) / _TICK for mode, v in zip(_CPU_MODES, fields[1:], strict=False)}

    def _hugepages(self) -> dict[int, tuple[int, int]]:
        sizes = {}
        base = f"{_SYS_MM}/hugepages"
        try:
            entries = os.listdir(base)
        except OSError:
            return {}
        for entry in entries:  # hugepages-2048kB
            try:
                kib = int(entry.removeprefix("hugepages-").removesuffix("kB"))
                total = int(_read(f"{base}/{entry}/nr_hugepages"))
                free = int(_read(f"{base}/{entry}/free_hugepages"))
            except (OSError, ValueError):
                continue
            sizes[kib] = (total, free)
        return sizes

    def _ksm_values(self) -> dict[str, int]:
        root = str(self._ksm.root)
        values = {}
        for name in _KSM_FILES:
            try:
                values[name] = int(_read(f"{root}/{name}"))
            except (OSError, ValueError):
                continue
        return values  # empty: no KSM in this kernel

    def _ksmd_seconds(self) -> float | None:
        for attempt in range(2):
            pid = self._ksmd_pid
            if pid is None:
                pid = self._ksmd_pid = _find_ksmd()
                if pid is None:
                    return None
            try:
                if (_PROC / str(pid) / "comm").read_text().strip() == "ksmd":
                    fields = (_PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
                    return (int(fields[11]) + int(fields[12])) / _TICK
            except (OSError, IndexError, ValueError):
                pass
            self._ksmd_pid = None  # gone or reused: look again, once
            if attempt:
                break
        return None


def _find_ksmd() -> int | None:
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() == "ksmd":
                return int(entry.name)
        except OSError:
            continue
    return None
