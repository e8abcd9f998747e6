"""KSM tuning policies: pure decisions from one sample of the host (the daemon in tuner.py
collects, asks the policy, and applies only what changed -- the shape of oVirt MoM).

* ``ksmtuned`` is the algorithm of the ksmtuned script (Fedora/Debian), with the same variables
  and defaults, so that users can switch to virtkit with no surprise. One difference, on purpose:
  the memory QEMU has committed is counted from every QEMU virtkit finds (libvirt 9 no longer
  passes ``-enable-kvm``, so ksmtuned's ``pgrep`` counts none).
* ``adaptive`` is virtkit's own: it engages when merging pays (an estimate of what would merge,
  and the profit KSM reports), scans fast while profit grows and slows down when it stalls,
  keeps ksmd within a CPU budget, and backs off when pages are too volatile to merge.
* ``observe`` changes nothing: the daemon only records history.

Every policy gets :class:`Sample` objects and returns a :class:`Decision` with its reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

MIB = 1024 * 1024


@dataclass(frozen=True)
class Sample:
    """One collection from the host. Memory in kB as /proc/meminfo prints it, profit in bytes."""

    time: float  # seconds (monotonic or Unix: only differences matter)
    run: str = "0"
    pages_to_scan: int = 100
    sleep_millisecs: int = 20
    profit: int = 0  # general_profit: bytes saved, net of KSM's own metadata
    pages_shared: int = 0
    pages_sharing: int = 0
    pages_volatile: int = 0
    pages_scanned: int = 0  # cumulative (kernel >= 6.x); 0 when the kernel does not say
    full_scans: int = 0
    ksmd_cpu: float = 0.0  # cumulative CPU seconds of ksmd
    mem_total: int = 0
    mem_free: int = 0  # MemFree + Buffers + Cached, as ksmtuned counts it
    committed: int = 0  # RSS of the QEMU processes
    guests: int = 0  # running QEMU processes with mergeable memory
    vms: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (merging, profit)

    def reading(self) -> Reading:
        return Reading(total=self.mem_total, free=self.mem_free, committed=self.committed)


@dataclass(frozen=True)
class Decision:
    run: bool | None  # None: leave run as it is
    pages_to_scan: int | None  # None: leave as is
    sleep_millisecs: int | None
    reason: str
    next_in: float | None = None  # seconds to the next sample, if sooner than the interval


class Policy(Protocol):
    name: str

    def step(self, sample: Sample) -> Decision: ...


class ObservePolicy:
    """Decides nothing: the daemon records samples (``virtkit ksm history``) and changes nothing."""

    name = "observe"

    def step(self, sample: Sample) -> Decision:
        return Decision(None, None, None, "observe: no change")


@dataclass(frozen=True)
class KsmtunedConfig:
    """/etc/ksmtuned.conf's variables and their defaults."""

    monitor_interval: int = 60  # KSM_MONITOR_INTERVAL, seconds
    sleep_msec: int = 10  # KSM_SLEEP_MSEC, for 16 GiB; scaled by memory
    npages_boost: int = 300  # KSM_NPAGES_BOOST
    npages_decay: int = -50  # KSM_NPAGES_DECAY
    npages_min: int = 64  # KSM_NPAGES_MIN
    npages_max: int = 1250  # KSM_NPAGES_MAX
    thres_coef: int = 20  # KSM_THRES_COEF, percent of memory
    thres_const: int = 2048  # KSM_THRES_CONST, kB


@dataclass(frozen=True)
class Reading:
    """One collection: all in kB, as /proc/meminfo and ps report them."""

    total: int  # MemTotal
    free: int  # MemFree + Buffers + Cached
    committed: int  # RSS of the QEMU processes


class KsmtunedPolicy:
    """ksmtuned's ``adjust``: start KSM when committed memory nears the total, boost scanning
    while free memory is under the threshold, decay it above, stop when neither holds."""

    name = "ksmtuned"

    def __init__(self, config: KsmtunedConfig | None = None) -> None:
        self.config = config or KsmtunedConfig()
        self.npages = 0

    def thresholds(self, total: int) -> tuple[int, int]:
        """(threshold kB, sleep ms) for a host with ``total`` kB of memory."""
        c = self.config
        sleep = max(c.sleep_msec * 16 * 1024 * 1024 // total, 10)
        thres = max(total * c.thres_coef // 100, c.thres_const)
        return thres, sleep

    def _npages(self, delta: int) -> int:
        c = self.config
        self.npages = min(max(self.npages + delta, c.npages_min), c.npages_max)
        return self.npages

    def decide(self, reading: Reading) -> Decision:
        thres, sleep = self.thresholds(reading.total)
        if reading.committed + thres < reading.total and reading.free > thres:
            return Decision(
                False, None, None,
                f"committed {reading.committed} + threshold {thres} < total {reading.total} kB "
                f"and free {reading.free} > {thres} kB: stop KSM",
            )  # fmt: skip
        if reading.free < thres:
            npages = self._npages(self.config.npages_boost)
            why = f"free {reading.free} < threshold {thres} kB: boost to {npages} pages"
        else:
            npages = self._npages(self.config.npages_decay)
            why = f"free {reading.free} >= threshold {thres} kB: decay to {npages} pages"
        return Decision(True, npages, sleep, f"memory committed or short: start KSM; {why}")

    def step(self, sample: Sample) -> Decision:
        return self.decide(sample.reading())


# The adaptive policy's scan speeds: (pages_to_scan, sleep_millisecs), slowest first. The lowest
# costs ksmd next to nothing and still finds new duplicates in time; the highest is the
# "aggressive" setting.
LEVELS: tuple[tuple[int, int], ...] = (
    (100, 200),
    (100, 20),
    (400, 20),
    (1600, 20),
    (5000, 10),
)


@dataclass(frozen=True)
class AdaptiveConfig:
    cpu_budget: float = 0.05  # share of one core ksmd may use, on average over budget_window
    budget_window: float = 300.0  # seconds; unused budget is banked up to this window's worth
    engage_bytes: int = 32 * MIB  # what must be there to merge before KSM is worth running
    grow_bytes: int = 1 * MIB  # profit growth per sample below which merging has stalled
    volatile_ratio: float = 0.5  # volatile pages above this share of pages sharing: back off
    estimate_every: float = 300.0  # seconds between estimates (and >= 100x what one takes)
    fast_sample: float = 1.0  # seconds between samples while ksmd scans fast
    pressure_coef: int = 20  # free memory under this percent of the total counts as pressure


class AdaptivePolicy:
    """Engage when merging pays, scan fast while profit grows, slow down when it stalls.

    - Off: an estimate (``estimator``: bytes that would merge, or None when it cannot tell) of at
      least ``engage_bytes`` more than is already saved starts KSM at full speed; memory
      pressure (free under ``pressure_coef`` percent, as ksmtuned) starts it at a middle speed.
    - On: profit that grows by ``grow_bytes`` or more in a sample raises the speed one level;
      a sample without growth holds the speed during the first pass (pages merge on the
      second), then lowers it one level, and straight to the slowest once two full
      scans have passed without growth (a page must look the same twice to merge). Volatile
      pages (more than ``volatile_ratio`` of the pages sharing) without growth lower it. A
      fresh estimate that finds ``engage_bytes`` more to merge (new VMs, changed memory) goes
      back to full speed.
    - Budget: ksmd's CPU time is metered against ``cpu_budget`` of one core; unused budget is
      banked up to ``budget_window`` seconds' worth, so a first merge can run at full speed,
      and once the bank is empty the speed drops to the fastest level the budget pays for
      (from ksmd's measured CPU cost per scanned page).
    - Off again when nothing merges: slowest level, no profit, and the estimate finds nothing.
    """

    name = "adaptive"

    def __init__(
        self,
        config: AdaptiveConfig | None = None,
        estimator: Callable[[], int | None] | None = None,
    ) -> None:
        self.config = config or AdaptiveConfig()
        self.estimator = estimator or (lambda: None)
        self.level: int | None = None  # None: KSM off
        self.credit = self.config.cpu_budget * self.config.budget_window
        self.previous: Sample | None = None
        self.scans_at_growth = 0
        self.cost_per_page: float | None = None  # ksmd CPU seconds per scanned page
        self.last_estimate: tuple[float, int | None] | None = None
        self.estimate_seconds = 0.0  # what the last estimate took
        self.guests = -1

    # -- inputs -------------------------------------------------------------------------------
    def _estimate(self, sample: Sample, force: bool = False) -> tuple[int | None, bool]:
        """(bytes the estimate says would merge, whether it was taken just now)."""
        # at most every estimate_every seconds, and never more than 1% of a core on average
        every = max(self.config.estimate_every, 100 * self.estimate_seconds)
        due = force or self.last_estimate is None or sample.time - self.last_estimate[0] >= every
        if due:
            started = time.monotonic()
            self.last_estimate = (sample.time, self.estimator())
            self.estimate_seconds = time.monotonic() - started
        assert self.last_estimate is not None
        return self.last_estimate[1], due

    def _meter(self, sample: Sample) -> tuple[float, int]:
        """Bank the budget and measure; returns (CPU share used, profit growth)."""
        prev = self.previous
        if prev is None or sample.time <= prev.time:
            return 0.0, 0
        dt = sample.time - prev.time
        used = max(sample.ksmd_cpu - prev.ksmd_cpu, 0.0)
        cap = self.config.cpu_budget * self.config.budget_window
        self.credit = min(cap, self.credit + self.config.cpu_budget * dt - used)
        scanned = sample.pages_scanned - prev.pages_scanned
        if scanned > 1000 and used > 0:
            cost = used / scanned
            self.cost_per_page = cost if self.cost_per_page is None else (
                0.5 * self.cost_per_page + 0.5 * cost
            )  # fmt: skip
        return used / dt, sample.profit - prev.profit

    def _affordable(self) -> int:
        """The fastest level the CPU budget pays for, from the measured cost per page."""
        if self.cost_per_page is None:
            return 1
        for index in range(len(LEVELS) - 1, -1, -1):
            pages, sleep = LEVELS[index]
            if pages * 1000 / sleep * self.cost_per_page <= self.config.cpu_budget * (1 + 1e-9):
                return index
        return 0

    # -- the decision -------------------------------------------------------------------------
    def _set(self, level: int | None, reason: str) -> Decision:
        self.level = level
        if level is None:
            return Decision(False, None, None, reason)
        pages, sleep = LEVELS[level]
        fast = level >= len(LEVELS) - 2
        return Decision(True, pages, sleep, reason, self.config.fast_sample if fast else None)

    def step(self, sample: Sample) -> Decision:
        try:
            return self._step(sample)
        finally:
            self.previous = sample

    def _step(self, sample: Sample) -> Decision:
        c = self.config
        share, growth = self._meter(sample)
        top = len(LEVELS) - 1
        guests_changed = sample.guests != self.guests
        self.guests = sample.guests
        if self.level is None:
            estimate, _fresh = self._estimate(sample, force=guests_changed)
            left = None if estimate is None else estimate - sample.profit
            if left is not None and left >= c.engage_bytes:
                self.scans_at_growth = sample.full_scans
                return self._set(
                    top, f"the estimate finds {left / MIB:.0f} MiB to merge: KSM on, full speed"
                )
            thres = sample.mem_total * c.pressure_coef // 100
            if sample.mem_total and sample.mem_free < thres:
                self.scans_at_growth = sample.full_scans
                return self._set(
                    2, f"free memory {sample.mem_free // 1024} MiB is under {c.pressure_coef}% "
                       "of the total: KSM on",
                )  # fmt: skip
            what = "cannot estimate" if left is None else f"estimate {max(left, 0) / MIB:.0f} MiB"
            return self._set(None, f"nothing worth merging ({what}, memory not short): KSM off")
        level = self.level
        if self.credit <= 0:
            affordable = self._affordable()
            if level > affordable:
                return self._set(
                    affordable,
                    f"ksmd used {share:.1%} of a core and its CPU budget ({c.cpu_budget:.0%}) "
                    "is spent: slow down",
                )
        if growth >= c.grow_bytes:
            self.scans_at_growth = sample.full_scans
            up = min(level + 1, top) if self.credit > 0 else level
            return self._set(up, f"profit grew {growth / MIB:.1f} MiB: keep scanning fast")
        if level > 0 and sample.pages_volatile > c.volatile_ratio * max(sample.pages_sharing, 1):
            return self._set(
                level - 1,
                f"{sample.pages_volatile} volatile pages against {sample.pages_sharing} sharing "
                "and no growth: memory changes too fast to merge, slow down",
            )
        estimate, fresh = self._estimate(sample, force=guests_changed)
        left = None if estimate is None else estimate - sample.profit
        fresh_news = fresh and left is not None and left >= c.engage_bytes
        if fresh_news and left is not None and self.credit > 0 and level < top:
            self.scans_at_growth = sample.full_scans
            return self._set(
                top, f"the estimate finds {left / MIB:.0f} MiB more to merge: full speed"
            )
        if level == 0:
            if sample.profit <= 0 and (left is None or left < c.engage_bytes):
                return self._set(None, "nothing merges and nothing is left to merge: KSM off")
            return self._set(0, "profit steady: keep the slowest scan to catch new duplicates")
        # merging takes two passes (a page must look the same twice): during the first, no
        # growth says nothing; two full scans without growth mean everything is merged
        if sample.full_scans == self.scans_at_growth:
            return self._set(level, "first pass over the pages (they merge on the second): hold")
        if sample.full_scans >= self.scans_at_growth + 2:
            return self._set(
                0, "two full scans passed without profit growth: everything is merged, slowest scan"
            )
        return self._set(level - 1, f"profit grew only {growth / MIB:.1f} MiB: slow down")
