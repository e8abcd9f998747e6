"""KSM tuning policies: collect -> decide -> apply only what changed (the shape of oVirt MoM).

``ksmtuned`` is the algorithm of the ksmtuned script (Fedora/Debian), with the same variables and
defaults, so that users can switch to virtkit with no surprise. One difference, on purpose: the
memory QEMU has committed is counted from every QEMU virtkit finds (libvirt 9 no longer passes
``-enable-kvm``, so ksmtuned's ``pgrep`` counts none). The daemon that runs a policy, and virtkit's
own ``adaptive`` policy, come next.
"""

from __future__ import annotations

from dataclasses import dataclass


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


@dataclass(frozen=True)
class Decision:
    run: bool
    pages_to_scan: int | None  # None: leave as is (ksmtuned only writes it when starting)
    sleep_millisecs: int | None
    reason: str


class KsmtunedPolicy:
    """ksmtuned's ``adjust``: start KSM when committed memory nears the total, boost scanning
    while free memory is under the threshold, decay it above, stop when neither holds."""

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
