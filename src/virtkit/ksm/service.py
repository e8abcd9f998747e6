"""KSM as a user sees it: ``virtkit ksm status|enable|disable|unmerge|set`` and per-VM opt-out."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from virtkit.backend.host import Host
from virtkit.errors import InvalidInput, InvalidState, NotFound, PermissionDenied, Unsupported
from virtkit.extras import require
from virtkit.ksm.guests import require_local, running_vms
from virtkit.ksm.lock import LOCK_DIR, lock_path, running_pid, stop_daemon
from virtkit.ksm.sysfs import KNOBS, RUN_MODES, KsmSysfs, ksmd_cpu_seconds
from virtkit.specs import KsmEstimate, KsmReport, KsmSamples, KsmVM, validate_name

if TYPE_CHECKING:
    from virtkit.ksm.history import KsmHistory
    from virtkit.ksm.tuner import Tuner

log = logging.getLogger(__name__)
POLICIES = ("adaptive", "ksmtuned", "observe")
_ESTIMATING = threading.Lock()
PAGE = 4096


class KsmService:
    def __init__(
        self,
        host: Host,
        sysfs: KsmSysfs | None = None,
        *,
        history_path: Path | None = None,
        history_days: float = 30.0,
    ) -> None:
        self.host = host
        self.sysfs = sysfs or KsmSysfs()
        self.history_path = history_path
        self.history_days = history_days

    def require_local(self) -> None:
        require_local(self.host)

    def vms(self) -> list[KsmVM]:
        """The running VMs with their KSM figures (merging pages, profit, opt-out)."""
        return running_vms(self.host)

    def status(self) -> KsmReport:
        self.require_local()
        counters = self.sysfs.counters()
        vms = self.vms()
        guest_memory = sum(v.memory for v in vms)
        saved = counters.get("general_profit")
        if saved is None and counters.get("pages_sharing") is not None:
            saved = counters["pages_sharing"] * PAGE  # older kernels: an upper bound
        return KsmReport(
            run=RUN_MODES.get(self.sysfs.read("run") or "", "unknown"),
            settings=self.sysfs.settings(),
            pages_shared=counters.get("pages_shared"),
            pages_sharing=counters.get("pages_sharing"),
            pages_unshared=counters.get("pages_unshared"),
            pages_volatile=counters.get("pages_volatile"),
            full_scans=counters.get("full_scans"),
            saved=saved,
            guest_memory=guest_memory,
            saved_share=(saved / guest_memory) if saved is not None and guest_memory else None,
            ksmd_cpu_seconds=ksmd_cpu_seconds(),
            vms=vms,
        )

    def set(self, values: dict[str, str]) -> list[str]:
        """Set KSM knobs; every value is checked before any is written. ``merge_across_nodes``
        can change only while nothing is merged: virtkit unmerges first, then restores the run
        mode, and says so."""
        self.require_local()
        if not values:
            raise InvalidInput("nothing to set: give NAME=VALUE pairs", code="nothing_to_set")
        for name, value in values.items():
            knob = KNOBS.get(name)
            if knob is None:
                raise InvalidInput(
                    f"unknown KSM setting {name!r} (known: {', '.join(sorted(KNOBS))})",
                    code="unknown_ksm_setting",
                )
            knob.check(value)
        done = []
        for name, value in values.items():
            if name == "merge_across_nodes" and value.strip() != self.sysfs.read(name):
                done.extend(self._set_merge_across_nodes(value))
                continue
            before = self.sysfs.read(name)
            self.sysfs.write(name, value)
            done.append(f"{name}: {before} -> {self.sysfs.read(name)}")
        return done

    def _set_merge_across_nodes(self, value: str) -> list[str]:
        run = self.sysfs.read("run") or "0"
        notes = []
        if (self.sysfs.read_int("pages_shared") or 0) > 0:
            self.unmerge()
            notes.append("unmerged every page first (the kernel requires it)")
        self.sysfs.write("merge_across_nodes", value)
        notes.append(f"merge_across_nodes: -> {value}")
        if run != self.sysfs.read("run"):
            self.sysfs.write("run", run)
            notes.append(f"run: back to {RUN_MODES.get(run, run)}")
        return notes

    def enable(self) -> None:
        self.require_local()
        self.sysfs.write("run", "1")

    def disable(self) -> None:
        """Stop scanning; pages merged so far stay merged (``unmerge`` splits them)."""
        self.require_local()
        self.sysfs.write("run", "0")

    def unmerge(self, timeout: float = 60.0) -> None:
        """Split every merged page back (run=2) and wait for it; KSM is stopped after."""
        self.require_local()
        self.sysfs.write("run", "2")
        deadline = time.monotonic() + timeout
        while (self.sysfs.read_int("pages_shared") or 0) > 0:
            if time.monotonic() > deadline:
                raise InvalidState(
                    f"pages were still merged after {timeout:.0f} s of unmerging",
                    code="ksm_busy",
                )
            time.sleep(0.1)
        self.sysfs.write("run", "0")

    def estimate(self, names: list[str] | None = None) -> KsmEstimate:
        """Predict what KSM would merge across running VMs (all of them, or ``names``: an
        empty list is none) by hashing their guest memory page by page; reads memory, changes
        nothing."""
        self.require_local()
        running = {v.name: v for v in self.vms()}
        chosen = sorted(running) if names is None else list(names)
        for name in chosen:
            validate_name(name)
            if name not in running:
                self.host.lookup(name)  # NotFound for a VM that does not exist
                raise InvalidState(
                    f"VM {name!r} is not running: it has no memory to read", code="vm_shutoff"
                )
            if running[name].pid is None:
                raise Unsupported(f"cannot find the QEMU process of {name!r} on this host")
        require("numpy", "the KSM estimate")  # an extra, imported when used (CLI start-up)
        from virtkit.ksm.estimate import estimate

        pids = [running[n].pid for n in chosen if running[n].pid is not None]
        with _ESTIMATING:  # one at a time: each reads all the guests' memory, on a core
            result = estimate([p for p in pids if p is not None])
        read = result.bytes_read or 1
        return KsmEstimate(
            vms=chosen, pages=result.pages, zero_pages=result.zero_pages,
            duplicate_pages=result.duplicate_pages, merging_pages=result.merging_pages,
            saved=result.saved_pages * PAGE,
            saved_nonzero=result.duplicate_pages * PAGE, share=result.saved_pages * PAGE / read,
            seconds=result.seconds,
            gib_per_second=result.bytes_read / max(result.seconds, 1e-9) / 2**30,
        )  # fmt: skip

    def set_vm(self, name: str, on: bool) -> str:
        """Opt a VM in or out of KSM (``<memoryBacking><nosharepages/>``); from its next start."""
        validate_name(name)
        guest = self.host.lookup(name)
        if not guest.is_persistent():
            raise InvalidState(f"VM {name!r} is transient", code="vm_transient")
        config = guest.definition(inactive=True)
        config.nosharepages = not on
        self.host.define(config.to_xml())
        when = " from its next start" if guest.is_active() else ""
        return f"KSM {'on' if on else 'off'} for {name}{when}"

    # -- the tuning daemon and its history -------------------------------------------------------
    def tuner(
        self,
        policy: str = "adaptive",
        *,
        interval: float = 10.0,
        cpu_budget: float = 5.0,
        restore: bool = False,
        history: KsmHistory | None = None,
        lock_dir: Path | None = None,
    ) -> Tuner:
        """A tuning daemon (``Tuner.run(stop_event)`` runs it). ``cpu_budget`` is a percentage
        of one core (``adaptive``); ``history`` records every sample."""
        from virtkit.ksm.policies import (
            AdaptiveConfig,
            AdaptivePolicy,
            KsmtunedPolicy,
            ObservePolicy,
            Policy,
        )
        from virtkit.ksm.tuner import Tuner

        if interval <= 0:
            raise InvalidInput(
                f"interval must be positive, got {interval}", code="invalid_interval"
            )
        if not 0 < cpu_budget <= 100:
            raise InvalidInput(
                f"the CPU budget is a percentage of one core, between 0 and 100: got {cpu_budget}",
                code="invalid_cpu_budget",
            )
        chosen: Policy
        if policy == "adaptive":
            chosen = AdaptivePolicy(
                AdaptiveConfig(cpu_budget=cpu_budget / 100), estimator=self._estimator
            )
        elif policy == "ksmtuned":
            chosen = KsmtunedPolicy()
        elif policy == "observe":
            chosen = ObservePolicy()
        else:
            raise InvalidInput(
                f"unknown KSM policy {policy!r} (known: {', '.join(POLICIES)})",
                code="unknown_ksm_policy",
            )
        return Tuner(
            self.host, self.sysfs, chosen, interval=interval, history=history, restore=restore,
            lock_dir=lock_dir or LOCK_DIR,
        )  # fmt: skip

    def tuner_pid(self, lock_dir: Path | None = None) -> int | None:
        """PID of the tuning daemon running for this KSM directory, or None."""
        return running_pid(lock_path(self.sysfs.root, lock_dir or LOCK_DIR))

    def stop_tuner(self, lock_dir: Path | None = None, timeout: float = 30.0) -> int:
        """Stop the tuning daemon running for this KSM directory (SIGTERM), wait; its PID."""
        return stop_daemon(lock_path(self.sysfs.root, lock_dir or LOCK_DIR), timeout)

    def _estimator(self) -> int | None:
        """Bytes an estimate says would merge across every running VM (None if it cannot):
        the non-zero duplicates, which is what KSM merges for sure."""
        try:
            return self.estimate().saved_nonzero
        except (Unsupported, InvalidState, NotFound) as exc:
            log.info("no KSM estimate this time: %s", exc)
            return None
        except (PermissionDenied, OSError) as exc:
            log.info("no KSM estimate this time: %s", exc)
            return None

    def history(self, path: Path | None = None, keep_days: float | None = None) -> KsmHistory:
        """The store of KSM samples (close it): the configured file unless ``path``."""
        from virtkit.ksm.history import KsmHistory

        path = path or self.history_path
        if path is None:
            raise Unsupported("no file for the KSM history is configured", code="ksm_no_history")
        return KsmHistory(path, self.history_days if keep_days is None else keep_days)

    def samples(self, since: float | None = None, vms: Collection[str] = ()) -> KsmSamples:
        """The recorded samples newer than ``since`` (Unix time): the host's, and those of the
        VMs named in ``vms`` (none without)."""
        store = self.history()
        try:
            points = store.points(since)
            vm_points = store.vm_points(since, list(vms)) if vms else []
        finally:
            store.close()
        return KsmSamples(host=points, vms=vm_points)

    def plot(
        self, path: Path, since: float | None = None, vms: Collection[str] | None = None
    ) -> int:
        """Chart the recorded samples (newer than ``since``) to ``path`` (.png or .svg), per
        host and per VM (every VM, or those in ``vms``); returns how many host samples it
        drew. Needs matplotlib (``virtkit[plots]``)."""
        from virtkit.ksm.report import plot

        store = self.history()
        try:
            points, vm_points = store.points(since), store.vm_points(since)
        finally:
            store.close()
        if vms is not None:
            vm_points = [p for p in vm_points if p.name in vms]
        plot(points, vm_points, path)
        return len(points)
