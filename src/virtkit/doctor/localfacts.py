"""What the doctor reads of this machine: ``/proc``, ``/sys``, ``/dev`` and the kernel log.

Every reader takes the file system root (``Path("/")`` in production) so that tests can point
it at a captured or made-up tree; nothing here talks to libvirt. A file that cannot be read is
``None`` or empty, never an exception: the doctor says "unknown" rather than failing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import ipaddress
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/")


def read(root: Path, rel: str) -> str | None:
    try:
        return (root / rel.lstrip("/")).read_text()
    except (OSError, UnicodeDecodeError):
        return None


def exists(root: Path, rel: str) -> bool:
    return (root / rel.lstrip("/")).exists()


def cpu_flags(root: Path = ROOT) -> set[str]:
    """The CPU's feature flags (``vmx``, ``svm``, ...) from /proc/cpuinfo."""
    text = read(root, "proc/cpuinfo") or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "features"):
            return set(value.split())
    return set()


def meminfo(root: Path = ROOT) -> dict[str, int]:
    """/proc/meminfo in bytes (``HugePages_*`` are page counts)."""
    out: dict[str, int] = {}
    for line in (read(root, "proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if not parts or not parts[0].isdigit():
            continue
        value = int(parts[0])
        out[key.strip()] = value * 1024 if len(parts) > 1 and parts[1] == "kB" else value
    return out


def vmstat(root: Path = ROOT) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (read(root, "proc/vmstat") or "").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


@dataclass(frozen=True)
class HugePagePool:
    size_kib: int
    total: int
    free: int


def hugepages(root: Path = ROOT) -> list[HugePagePool]:
    base = root / "sys/kernel/mm/hugepages"
    out = []
    try:
        entries = sorted(base.iterdir())
    except OSError:
        return []
    for entry in entries:
        found = re.fullmatch(r"hugepages-(\d+)kB", entry.name)
        if not found:
            continue

        def number(name: str, entry: Path = entry) -> int:
            try:
                return int((entry / name).read_text().strip())
            except (OSError, ValueError):
                return 0

        out.append(
            HugePagePool(int(found.group(1)), number("nr_hugepages"), number("free_hugepages"))
        )
    return out


def default_hugepage_kib(root: Path = ROOT) -> int:
    return meminfo(root).get("Hugepagesize", 2048 * 1024) // 1024


def bracketed(text: str | None) -> str | None:
    """The chosen word of a sysfs list such as ``always [madvise] never``."""
    if not text:
        return None
    found = re.search(r"\[(\w+)\]", text)
    return found.group(1) if found else text.strip() or None


def thp_mode(root: Path = ROOT) -> str | None:
    return bracketed(read(root, "sys/kernel/mm/transparent_hugepage/enabled"))


def ksm_value(root: Path, name: str) -> int | None:
    text = read(root, f"sys/kernel/mm/ksm/{name}")
    try:
        return None if text is None else int(text.strip())
    except ValueError:
        return None


@dataclass(frozen=True)
class Cgroups:
    version: int  # 1, 2, or 0 (none found)
    controllers: frozenset[str]  # available (v2) or enabled (v1)
    mounted: frozenset[str]  # v1: controllers with a mount point


def cgroups(root: Path = ROOT) -> Cgroups:
    v2 = read(root, "sys/fs/cgroup/cgroup.controllers")
    if v2 is not None:
        names = set(v2.split())
        # cgroup v2 has no cpuacct (cpu accounts) and no devices controller (BPF does it)
        if "cpu" in names:
            names.add("cpuacct")
        names.add("devices")
        if "io" in names:
            names.add("blkio")
        return Cgroups(2, frozenset(names), frozenset(names))
    enabled: set[str] = set()
    for line in (read(root, "proc/cgroups") or "").splitlines():
        parts = line.split()
        if len(parts) >= 4 and not line.startswith("#") and parts[3] == "1":
            enabled.add(parts[0])
    mounted: set[str] = set()
    for line in (read(root, "proc/mounts") or "").splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "cgroup":
            mounted.update(o for o in parts[3].split(",") if o in enabled)
    return Cgroups(1 if enabled else 0, frozenset(enabled), frozenset(mounted))


def iommu_groups(root: Path = ROOT) -> int:
    try:
        return len(list((root / "sys/kernel/iommu_groups").iterdir()))
    except OSError:
        return 0


def acpi_table(root: Path, name: str) -> bool:
    return exists(root, f"sys/firmware/acpi/tables/{name}")


def kernel_cmdline(root: Path = ROOT) -> str:
    return read(root, "proc/cmdline") or ""


def clocksource(root: Path = ROOT) -> tuple[str | None, list[str]]:
    base = "sys/devices/system/clocksource/clocksource0"
    current = (read(root, f"{base}/current_clocksource") or "").strip() or None
    available = (read(root, f"{base}/available_clocksource") or "").split()
    return current, available


def clock_synchronised() -> bool | None:
    """Whether the kernel's clock is NTP-synchronised (adjtimex: STA_UNSYNC clear); None when
    that cannot be asked."""

    class Timex(ctypes.Structure):
        _fields_ = [
            ("modes", ctypes.c_uint),
            ("offset", ctypes.c_long),
            ("freq", ctypes.c_long),
            ("maxerror", ctypes.c_long),
            ("esterror", ctypes.c_long),
            ("status", ctypes.c_int),
            ("pad", ctypes.c_char * 200),
        ]

    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        timex = Timex()
        state = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    sta_unsync = 0x0040
    return state != 5 and not timex.status & sta_unsync  # 5: TIME_ERROR


def kernel_log(root: Path = ROOT, limit: int = 4000) -> list[str]:
    """The newest lines of the kernel log (``dmesg``; a file ``var/log/kern.log`` under a test
    root). Empty when it cannot be read (containers often forbid it)."""
    if root != ROOT:
        text = read(root, "var/log/kern.log") or ""
        return text.splitlines()[-limit:]
    try:
        done = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return done.stdout.splitlines()[-limit:] if done.returncode == 0 else []


def audit_log(root: Path = ROOT, limit: int = 4000) -> list[str]:
    text = read(root, "var/log/audit/audit.log") or ""
    return text.splitlines()[-limit:]


def apparmor_enabled(root: Path = ROOT) -> bool:
    return (read(root, "sys/module/apparmor/parameters/enabled") or "").strip() == "Y"


@dataclass(frozen=True)
class Route:
    interface: str
    network: ipaddress.IPv4Network


def ipv4_routes(root: Path = ROOT) -> list[Route]:
    """The host's IPv4 routes (/proc/net/route), default route excluded."""
    out = []
    for line in (read(root, "proc/net/route") or "").splitlines()[1:]:
        parts = line.split()
        if len(parts) < 8:
            continue
        try:
            dest = ipaddress.IPv4Address(int(parts[1], 16).to_bytes(4, "little"))
            mask = ipaddress.IPv4Address(int(parts[7], 16).to_bytes(4, "little"))
            network = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
        except ValueError:
            continue
        if network.prefixlen:
            out.append(Route(parts[0], network))
    return out


def module_loaded(root: Path, name: str) -> bool:
    return exists(root, f"sys/module/{name}")


def is_char_device(root: Path, rel: str) -> bool:
    import stat

    try:
        return stat.S_ISCHR(os.stat(root / rel.lstrip("/")).st_mode)
    except OSError:
        return False


def cpufreq_governors(root: Path = ROOT) -> set[str]:
    base = root / "sys/devices/system/cpu"
    found = set()
    for path in base.glob("cpu[0-9]*/cpufreq/scaling_governor"):
        try:
            found.add(path.read_text().strip())
        except OSError:
            continue
    return found
