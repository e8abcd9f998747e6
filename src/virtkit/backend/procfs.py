"""Facts about local QEMU processes from /proc (only meaningful when libvirt runs on this host)."""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")


def qemu_pids() -> dict[str, int]:
    """UUID -> PID of every QEMU process on this host that libvirt started.

    libvirt passes ``-uuid <uuid>`` to every QEMU it starts, and /proc is shared by every libvirtd
    on this machine (including those in private mount namespaces), so this finds the processes
    whatever daemon started them. One pass over /proc, however many VMs there are.
    """
    found: dict[str, int] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not args or b"qemu" not in args[0] or b"-uuid" not in args:
            continue
        index = args.index(b"-uuid")
        if index + 1 < len(args):
            found[args[index + 1].decode(errors="replace")] = int(entry.name)
    return found


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
