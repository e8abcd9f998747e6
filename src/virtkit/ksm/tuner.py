"""``virtkit ksm tune``: the daemon that collects, asks a policy, and applies only what changed.

One daemon per KSM directory on a host (``ksm/lock.py``). Each step is logged with the policy's
reason and the settings it changed. On stop the daemon leaves KSM as the policy last set it and
says so; with ``restore`` it puts back what it found at start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from virtkit.backend.host import Host
from virtkit.backend.procfs import meminfo, qemu_pids, rss_kb
from virtkit.errors import VirtkitError
from virtkit.ksm.guests import require_local, running_vms
from virtkit.ksm.history import KsmHistory
from virtkit.ksm.lock import LOCK_DIR, hold_lock, lock_path
from virtkit.ksm.policies import Decision, Policy, Sample
from virtkit.ksm.sysfs import KsmSysfs, ksmd_cpu_seconds

log = logging.getLogger(__name__)
TUNED = ("run", "pages_to_scan", "sleep_millisecs")


class Tuner:
    """Built by ``KsmService.tuner``; takes the host and KSM directory, not the service."""

    def __init__(
        self,
        host: Host,
        sysfs: KsmSysfs,
        policy: Policy,
        *,
        interval: float = 10.0,
        history: KsmHistory | None = None,
        restore: bool = False,
        lock_dir: Path = LOCK_DIR,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host = host
        self.sysfs = sysfs
        self.policy = policy
        self.interval = interval
        self.history = history
        self.restore = restore
        self.lock = lock_path(self.sysfs.root, lock_dir)
        self.clock = clock
        self.steps = 0

    # -- collect ------------------------------------------------------------------------------
    def collect(self) -> Sample:
        counters = self.sysfs.counters()
        settings = self.sysfs.settings()
        vms: dict[str, tuple[int, int]] = {}
        try:
            for vm in running_vms(self.host):
                vms[vm.name] = (vm.merging_pages or 0, vm.profit or 0)
        except VirtkitError as exc:  # libvirt away for a moment: host figures still count
            log.warning("no per-VM KSM figures this time: %s", exc)
        pids = list(qemu_pids().values())
        mem = meminfo()
        profit = counters.get("general_profit")
        if profit is None:
            profit = counters.get("pages_sharing", 0) * 4096
        return Sample(
            time=self.clock(),
            run=settings.get("run", "0"),
            pages_to_scan=int(settings.get("pages_to_scan", "0")),
            sleep_millisecs=int(settings.get("sleep_millisecs", "0")),
            profit=profit,
            pages_shared=counters.get("pages_shared", 0),
            pages_sharing=counters.get("pages_sharing", 0),
            pages_volatile=counters.get("pages_volatile", 0),
            pages_scanned=counters.get("pages_scanned", 0),
            full_scans=counters.get("full_scans", 0),
            ksmd_cpu=ksmd_cpu_seconds() or 0.0,
            mem_total=mem.get("MemTotal", 0),
            mem_free=mem.get("MemFree", 0) + mem.get("Buffers", 0) + mem.get("Cached", 0),
            committed=sum(rss_kb(pid) for pid in pids),
            guests=len(pids),
            vms=vms,
        )

    # -- apply --------------------------------------------------------------------------------
    def apply(self, decision: Decision) -> list[str]:
        """Write only the settings that differ from what the kernel has; returns the changes."""
        wanted: dict[str, str] = {}
        if decision.pages_to_scan is not None:
            wanted["pages_to_scan"] = str(decision.pages_to_scan)
        if decision.sleep_millisecs is not None:
            wanted["sleep_millisecs"] = str(decision.sleep_millisecs)
        if decision.run is not None:
            wanted["run"] = "1" if decision.run else "0"  # last: scanning starts with new speed
        changes = []
        for name, value in wanted.items():
            before = self.sysfs.read(name)
            if before != value:
                self.sysfs.write(name, value)
                changes.append(f"{name} {before} -> {value}")
        return changes

    def step(self) -> tuple[Sample, Decision, list[str]]:
        sample = self.collect()
        if self.history is not None:
            self.history.add(sample)
        decision = self.policy.step(sample)
        changes = self.apply(decision)
        self.steps += 1
        log.info(
            "%s [%s]", decision.reason, "; ".join(changes) or "no change",
            extra={
                "event.action": "ksm.decision", "event.kind": "event",
                "virtkit.ksm.policy": self.policy.name, "virtkit.ksm.reason": decision.reason,
                "virtkit.ksm.changes": changes, "virtkit.ksm.saved_bytes": sample.profit,
                "virtkit.ksm.pages_sharing": sample.pages_sharing,
                "virtkit.ksm.ksmd_cpu_s": sample.ksmd_cpu,
            },
        )  # fmt: skip
        return sample, decision, changes

    # -- the loop -----------------------------------------------------------------------------
    def run(self, stop: threading.Event, max_steps: int | None = None) -> str:
        """Tune until ``stop`` is set (or ``max_steps``); returns the closing message."""
        require_local(self.host)
        with hold_lock(self.lock):
            found = {n: v for n in TUNED if (v := self.sysfs.read(n)) is not None}
            log.info(
                "KSM tuning with the %s policy every %g s; found %s", self.policy.name,
                self.interval, ", ".join(f"{k}={v}" for k, v in found.items()),
            )  # fmt: skip
            try:
                while not stop.is_set():
                    _sample, decision, _ = self.step()
                    if max_steps is not None and self.steps >= max_steps:
                        break
                    stop.wait(min(decision.next_in or self.interval, self.interval))
                    if self.history is not None:
                        self.history.prune()
            finally:
                message = self._finish(found)
                log.info(message)
        return message

    def _finish(self, found: dict[str, str]) -> str:
        if self.restore:
            # run last, so that a restored "stopped" stops scanning at the found speed
            for name in sorted(found, key=lambda n: n == "run"):
                if self.sysfs.read(name) != found[name]:
                    self.sysfs.write(name, found[name])
            now = ", ".join(f"{k}={v}" for k, v in found.items())
            return f"KSM tuning stopped; restored what it found: {now}"
        now = ", ".join(f"{n}={self.sysfs.read(n)}" for n in TUNED)
        return (
            f"KSM tuning stopped; KSM stays as the policy last set it: {now} "
            "(--restore puts back what was found at start)"
        )
