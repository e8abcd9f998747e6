"""``virtkit ksm tune``: the daemon that collects, asks a policy, and applies only what changed.

One daemon per KSM directory on a host: a lock file under /run/virtkit (an ``flock``, released
by the kernel when the daemon dies, so no stale lock survives a crash) holds its PID. Each step
is logged with the policy's reason and the settings it changed. On stop the daemon leaves KSM as
the policy last set it and says so; with ``restore`` it puts back what it found at start.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from virtkit.backend.procfs import meminfo, qemu_pids, rss_kb
from virtkit.errors import InvalidState, NotFound, PermissionDenied, VirtkitError
from virtkit.ksm.history import KsmHistory
from virtkit.ksm.policies import Decision, Policy, Sample
from virtkit.ksm.service import KsmService
from virtkit.ksm.sysfs import ksmd_cpu_seconds

log = logging.getLogger(__name__)
LOCK_DIR = Path("/run/virtkit")
TUNED = ("run", "pages_to_scan", "sleep_millisecs")


def lock_path(ksm_root: Path, lock_dir: Path = LOCK_DIR) -> Path:
    """The lock of the daemon tuning ``ksm_root`` (one per KSM directory, host-wide)."""
    digest = hashlib.sha256(str(ksm_root.resolve()).encode()).hexdigest()[:12]
    return lock_dir / f"ksm-tune-{digest}.lock"


def running_pid(path: Path) -> int | None:
    """PID of the daemon that holds the lock at ``path``, or None. Reads the PID it wrote and
    checks the process is alive and a virtkit; it takes no lock itself (a probing lock, even a
    shared one, could make a daemon that is starting at that moment fail to take its own)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    if pid == os.getpid():
        return pid
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"virtkit" in cmdline else None


@contextlib.contextmanager
def hold_lock(path: Path) -> Iterator[None]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError:
        raise PermissionDenied(
            f"cannot take the KSM tuning lock {path}: the daemon needs root", code="ksm_permission"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = path.read_text().strip() or "?"
            raise InvalidState(
                f"a KSM tuning daemon is already running on this host (pid {pid}); stop it "
                "first ('virtkit ksm tune --stop')",
                code="ksm_tune_running",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # no PID left behind once the lock is released
    finally:
        os.close(fd)  # releases the flock


def stop_daemon(path: Path, timeout: float = 30.0) -> int:
    """Ask the daemon holding ``path`` to stop (SIGTERM to the PID it wrote) and wait for it."""
    pid = running_pid(path)
    if pid is None or pid <= 0:
        raise NotFound("no KSM tuning daemon is running on this host", code="ksm_tune_not_running")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running_pid(path) is not None:
        if time.monotonic() > deadline:
            raise InvalidState(
                f"the KSM tuning daemon (pid {pid}) did not stop within {timeout:.0f} s",
                code="ksm_tune_stuck",
            )
        time.sleep(0.1)
    return pid


class Tuner:
    def __init__(
        self,
        service: KsmService,
        policy: Policy,
        *,
        interval: float = 10.0,
        history: KsmHistory | None = None,
        restore: bool = False,
        lock_dir: Path = LOCK_DIR,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.sysfs = service.sysfs
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
            for vm in self.service.vms():
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
            extra={"fields": {
                "ksm.policy": self.policy.name, "ksm.reason": decision.reason,
                "ksm.changes": changes, "ksm.saved_bytes": sample.profit,
                "ksm.pages_sharing": sample.pages_sharing, "ksm.ksmd_cpu_s": sample.ksmd_cpu,
            }},
        )  # fmt: skip
        return sample, decision, changes

    # -- the loop -----------------------------------------------------------------------------
    def run(self, stop: threading.Event, max_steps: int | None = None) -> str:
        """Tune until ``stop`` is set (or ``max_steps``); returns the closing message."""
        self.service.require_local()
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
