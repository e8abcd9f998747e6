"""The fixes ``doctor --fix`` may apply: safe, small, each checked again before it acts.

A fix never deletes anything. Each takes the finding's ``fix_args`` and returns what it did
(or why it did nothing). Host-side fixes (``/dev/kvm``, hugepages, THP, modules) run only on
the local host.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from virtkit.backend import kvmdev
from virtkit.backend.host import Host
from virtkit.doctor import localfacts as lf
from virtkit.errors import InvalidState, Unsupported
from virtkit.specs.states import VMState
from virtkit.specs.units import format_size

MIN_FREE_TO_RESUME = 16 * 1024 * 1024


@dataclass
class FixContext:
    host: Host
    kvm_device: Path
    root: Path = lf.ROOT


def _local(ctx: FixContext, what: str) -> None:
    if not ctx.host.is_local:
        raise Unsupported(f"{what} is a change on the VM host itself: run virtkit there")


def kvm_permissions(ctx: FixContext, args: dict[str, str]) -> str:
    _local(ctx, "/dev/kvm's permissions")
    return kvmdev.apply_udev_default(ctx.kvm_device).message


def pool_create_dir(ctx: FixContext, args: dict[str, str]) -> str:
    pool, path = args["pool"], args["path"]
    _local(ctx, "a pool directory")
    os.makedirs(path, mode=0o711, exist_ok=True)
    storage = ctx.host.storage
    if storage.pool_is_active(pool):
        storage.refresh_pool(pool)
        return f"created {path}; pool {pool} refreshed"
    storage.start_pool(pool)
    return f"created {path}; pool {pool} started"


def pool_start(ctx: FixContext, args: dict[str, str]) -> str:
    pool = args["pool"]
    if ctx.host.storage.pool_is_active(pool):
        return f"pool {pool} is already running"
    ctx.host.storage.start_pool(pool)
    return f"pool {pool} started"


def network_start(ctx: FixContext, args: dict[str, str]) -> str:
    name = args["network"]
    if ctx.host.networks.state(name)[0]:
        return f"network {name} is already running"
    ctx.host.networks.start(name)
    return f"network {name} started"


def vm_resume(ctx: FixContext, args: dict[str, str]) -> str:
    name = args["vm"]
    guest = ctx.host.lookup(name)
    state, _ = guest.state()
    if state is not VMState.PAUSED:
        return f"VM {name} is {state.value}: nothing to resume"
    needs = args.get("needs_space")
    if needs and ctx.host.is_local:
        st = os.statvfs(os.path.dirname(needs) or "/")
        free = st.f_bavail * st.f_frsize
        if free < MIN_FREE_TO_RESUME:
            raise InvalidState(
                f"not resumed: {os.path.dirname(needs)} still has only {format_size(free)} "
                "free; the guest would pause again at once. Free space there first.",
                code="doctor_still_full",
            )
    guest.resume()
    return f"VM {name} resumed"


def hugepages_reserve(ctx: FixContext, args: dict[str, str]) -> str:
    _local(ctx, "a hugepage reservation")
    size, pages = int(args["size_kib"]), int(args["pages"])
    knob = ctx.root / f"sys/kernel/mm/hugepages/hugepages-{size}kB/nr_hugepages"
    available = lf.meminfo(ctx.root).get("MemAvailable", 0)
    current = int(knob.read_text().strip() or 0)
    extra = max(0, pages - current) * size * 1024
    if extra > available * 0.9:
        raise InvalidState(
            f"not reserved: {pages} pages of {format_size(size * 1024)} need "
            f"{format_size(extra)} more, and only {format_size(available)} is available",
            code="doctor_no_memory",
        )
    knob.write_text(f"{pages}\n")
    got = int(knob.read_text().strip() or 0)
    note = "" if got >= pages else f" (the kernel found only {got}: memory is fragmented)"
    return (
        f"{got} hugepages of {format_size(size * 1024)} reserved (was {current}){note}; to keep "
        f"it across reboots add vm.nr_hugepages = {pages} to /etc/sysctl.d/80-virtkit.conf"
    )


def thp_madvise(ctx: FixContext, args: dict[str, str]) -> str:
    _local(ctx, "the THP mode")
    knob = ctx.root / "sys/kernel/mm/transparent_hugepage/enabled"
    old = lf.bracketed(knob.read_text())
    knob.write_text("madvise\n")
    return f"transparent hugepages: {old} -> madvise (revert: echo {old} > {knob})"


def modprobe(ctx: FixContext, args: dict[str, str]) -> str:
    _local(ctx, "loading a kernel module")
    module = args["module"]
    done = subprocess.run(["modprobe", module], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise InvalidState(
            f"modprobe {module} failed: {done.stderr.strip() or done.returncode}",
            code="doctor_modprobe_failed",
        )
    return f"module {module} loaded"


FIXES: dict[str, Callable[[FixContext, dict[str, str]], str]] = {
    "kvm-permissions": kvm_permissions,
    "pool-create-dir": pool_create_dir,
    "pool-start": pool_start,
    "network-start": network_start,
    "vm-resume": vm_resume,
    "hugepages-reserve": hugepages_reserve,
    "thp-madvise": thp_madvise,
    "modprobe": modprobe,
}
