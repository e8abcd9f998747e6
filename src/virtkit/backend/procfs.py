"""Facts about local QEMU processes from /proc (only meaningful when libvirt runs on this host)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path

_PROC = Path("/proc")


def _uuid_of(cmdline: bytes) -> str | None:
    """The ``-uuid`` a QEMU command line carries (libvirt passes it to every QEMU it starts)."""
    args = cmdline.split(b"\0")
    if not args or b"qemu" not in args[0] or b"-uuid" not in args:
        return None
    index = args.index(b"-uuid")
    return args[index + 1].decode(errors="replace") if index + 1 < len(args) else None


def _scan() -> dict[str, int]:
    found: dict[str, int] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            uuid = _uuid_of((entry / "cmdline").read_bytes())
        except OSError:
            continue
        if uuid is not None:
            found[uuid] = int(entry.name)
    return found


def _still(uuid: str, pid: int) -> bool:
    try:
        return _uuid_of((_PROC / str(pid) / "cmdline").read_bytes()) == uuid
    except OSError:
        return False


# UUID -> PID as last found. A PID is trusted only after its command line is read again and
# still names the UUID, so a reused PID never passes.
_seen: dict[str, int] = {}
_seen_lock = threading.Lock()


def qemu_pids(uuids: Iterable[str] | None = None) -> dict[str, int]:
    """UUID -> PID of the QEMU processes on this host that libvirt started: all of them, or
    only those of ``uuids`` (the running VMs a caller asks about).

    libvirt passes ``-uuid <uuid>`` to every QEMU it starts, and /proc is shared by every libvirtd
    on this machine (including those in private mount namespaces), so this finds the processes
    whatever daemon started them. With ``uuids``, a PID found before is confirmed by reading its
    command line again (one small read per VM), and the pass over all of /proc is made only
    for a UUID not known yet: asking for one VM costs one read, not one per process.
    """
    if uuids is not None:
        wanted = set(uuids)
        with _seen_lock:
            known = {u: _seen[u] for u in wanted if u in _seen}
        found = {u: pid for u, pid in known.items() if _still(u, pid)}
        if len(found) == len(wanted):
            return found
    everything = _scan()
    with _seen_lock:
        _seen.clear()
        _seen.update(everything)
    if uuids is None:
        return everything
    return {u: pid for u, pid in everything.items() if u in wanted}


def process_uptime(pid: int) -> float | None:
    """Seconds since the process started, or None if it is gone."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
        uptime = float((_PROC / "uptime").read_text().split()[0])
    except OSError:
        return None
    # Field 22 (starttime, in clock ticks since boot) counts after the ")" that ends the comm.
    fields = stat.rsplit(")", 1)[1].split()
    start_ticks = int(fields[19])
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


def ksm_run_state() -> str | None:
    """KSM's run mode on this host: stopped, running or unmerging (None if no KSM)."""
    try:
        value = Path("/sys/kernel/mm/ksm/run").read_text().strip()
    except OSError:
        return None
    return {"0": "stopped", "1": "running", "2": "unmerging"}.get(value, value)


def meminfo() -> dict[str, int]:
    """/proc/meminfo in kB."""
    fields: dict[str, int] = {}
    for line in (_PROC / "meminfo").read_text().splitlines():
        key, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            fields[key] = int(parts[0])
    return fields


def rss_kb(pid: int) -> int:
    """Resident memory of a process in kB (0 if it is gone)."""
    try:
        for line in (_PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def neighbours(pid: int) -> list[tuple[str, str]]:
    """(IPv4 address, MAC) of complete entries in the neighbour table of the network namespace
    process ``pid`` lives in (/proc/PID/net/arp): for a QEMU process, its host's table."""
    try:
        lines = (_PROC / str(pid) / "net" / "arp").read_text().splitlines()[1:]
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 4 and int(fields[2], 16) & 0x2:  # ATF_COM: a complete entry
            found.append((fields[0], fields[3].lower()))
    return found


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _cpu_fields(text: str) -> tuple[int, int]:
    """(utime, stime) in clock ticks from a /proc/.../stat line (after the comm's ")")."""
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def process_cpu_seconds(pid: int) -> tuple[float, float] | None:
    """(user, system) CPU seconds of a process and its threads; None if it is gone."""
    try:
        user, system = _cpu_fields(_read(f"{_PROC}/{pid}/stat"))
    except (OSError, IndexError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return user / tick, system / tick


# PID -> (vCPU index, thread ID) of its vCPU threads: found once, while the threads live
_vcpu_threads: dict[int, list[tuple[int, int]]] = {}


def _find_vcpu_threads(pid: int) -> list[tuple[int, int]]:
    found = []
    for tid in os.listdir(f"{_PROC}/{pid}/task"):
        try:
            comm = _read(f"{_PROC}/{pid}/task/{tid}/comm")
            if comm.startswith("CPU "):
                found.append((int(comm[4:].split("/", 1)[0]), int(tid)))
        except (OSError, ValueError):
            continue
    return sorted(found)


def vcpu_seconds(pid: int, expected: int = 0) -> dict[int, float]:
    """vCPU index -> CPU seconds of a QEMU process's vCPU threads (QEMU names them
    ``CPU 0/KVM``, ``CPU 1/TCG``, ...: libvirt starts it with ``debug-threads=on``). The
    threads are found once per process, and looked for again when one is gone (an unplug) or
    there are not ``expected`` of them (a hot-plug)."""
    tick = os.sysconf("SC_CLK_TCK")
    for _attempt in range(2):
        threads = _vcpu_threads.get(pid)
        if threads is not None and expected and len(threads) != expected and not _attempt:
            threads = None
        if threads is None:
            try:
                threads = _vcpu_threads[pid] = _find_vcpu_threads(pid)
            except OSError:
                return {}
        found: dict[int, float] = {}
        try:
            for index, tid in threads:
                user, system = _cpu_fields(_read(f"{_PROC}/{pid}/task/{tid}/stat"))
                found[index] = (user + system) / tick
            return found
        except (OSError, IndexError, ValueError):
            _vcpu_threads.pop(pid, None)  # a thread went (or the PID is another's now)
    return {}


def forget_vcpu_threads(alive: set[int]) -> None:
    """Drop what is remembered of processes not in ``alive``."""
    for pid in set(_vcpu_threads) - alive:
        del _vcpu_threads[pid]
