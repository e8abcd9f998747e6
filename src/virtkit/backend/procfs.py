"""Facts about local QEMU processes from /proc (only meaningful when libvirt runs on this host)."""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")


def qemu_pid(uuid: str) -> int | None:
    """The PID of the QEMU process running the domain with this UUID, if it runs here.

    libvirt passes ``-uuid <uuid>`` to every QEMU it starts, and /proc is shared by every libvirtd
    on this machine (including those in private mount namespaces), so this finds the process
    whatever daemon started it.
    """
    needle = b"\0-uuid\0" + uuid.encode() + b"\0"
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline and b"qemu" in cmdline.split(b"\0", 1)[0]:
            return int(entry.name)
    return None


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
